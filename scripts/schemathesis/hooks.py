"""Schemathesis hooks for distlog, loaded by scripts/schemathesis.sh
(SCHEMATHESIS_HOOKS). Nothing here relaxes a check: it only teaches
schemathesis our NDJSON body and keeps long polls short."""

import json

import schemathesis

# A long poll on a log with nothing at `from` waits `wait_ms` (up to the
# server's 30 s cap): fine for a client, ruinous for thousands of generated
# requests. Larger waits are shortened to this; invalid ones pass untouched.
LONGEST_WAIT_MS = 50


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """openapi.yaml describes an NDJSON body as the array of its records:
    each item becomes one line. Anything but a list (negative testing) has
    no NDJSON form and goes as an empty body, which the server must refuse."""
    if not isinstance(value, list):
        return b""
    lines = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in value)
    return lines.encode("utf-8")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    query = case.query
    if not query or "wait_ms" not in query:
        return
    wait = query["wait_ms"]
    if isinstance(wait, bool):
        return
    if isinstance(wait, int) and wait > LONGEST_WAIT_MS:
        query["wait_ms"] = LONGEST_WAIT_MS
    elif isinstance(wait, str) and wait.isdigit() and int(wait) > LONGEST_WAIT_MS:
        query["wait_ms"] = str(LONGEST_WAIT_MS)
