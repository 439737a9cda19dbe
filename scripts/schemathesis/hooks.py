"""Schemathesis hooks for distlog, loaded by scripts/schemathesis.sh
(SCHEMATHESIS_HOOKS). Nothing here relaxes a check: it only teaches
schemathesis our NDJSON body, keeps long polls short, keeps valid reads to
one start (`from`, `from_timestamp` or `tail`), and keeps valid producer
headers whole (`Producer-Id` with `Producer-Seq`)."""

import json

import hypothesis.internal.lambda_sources as lambda_sources
import schemathesis

# Hypothesis describes a strategy's lambdas by parsing their source with
# `ast.parse`. Deep in schemathesis' generation, Python 3.11 (Debian's) can
# fail that parse with "SystemError: AST constructor recursion depth
# mismatch" (a CPython bug), which aborted whole runs in CI at random
# ("Runtime Error", no check failed against the server). A description is
# only for messages: one that cannot be made is "<unknown>", as Hypothesis
# says of lambdas it cannot find.
_describe_lambda = lambda_sources._lambda_description


def _lambda_description_or_unknown(f, *args, **kwargs):
    try:
        return _describe_lambda(f, *args, **kwargs)
    except (SystemError, RecursionError):
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description_or_unknown

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


# At most one of these says where a read of `GET /` starts: openapi.yaml
# says so in words, which a schema of independent parameters cannot. A
# request generated as valid keeps the first it has; two together are a
# 400 `conflicting_query`, which invalid requests and tests/http check.
STARTS = ("from", "from_timestamp", "tail")


def one_start(case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not case.query:
        return
    present = [param for param in STARTS if param in case.query]
    for extra in present[1:]:
        del case.query[extra]


# `Producer-Id` and `Producer-Seq` go together (`Producer-Epoch` needs
# them), and a batch's sequence range must fit a u64: openapi.yaml says so in
# words, which a schema of independent headers cannot. A request generated
# as valid gets the half it lacks; half given is a 400 `bad_header`, which
# invalid requests and tests/http check.
PRODUCER = ("Producer-Id", "Producer-Seq", "Producer-Epoch")


def whole_producer(case):
    meta = case.meta
    headers = case.headers
    if meta is None or not meta.generation.mode.is_positive or not headers:
        return
    if not any(name in headers for name in PRODUCER):
        return
    headers.setdefault("Producer-Id", "schemathesis")
    headers.setdefault("Producer-Seq", "0")
    seq = headers["Producer-Seq"]
    # Room for a whole batch (10000 records at most) after it.
    if str(seq).isdigit() and int(seq) > 2**63:
        headers["Producer-Seq"] = str(2**63)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    one_start(case)
    whole_producer(case)
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
