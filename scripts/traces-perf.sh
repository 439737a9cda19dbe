#!/usr/bin/env bash
# What traces cost (issue 12): wrk on GET /0 and POST / (~1 KiB JSON,
# --fsync never) against, in alternating order each round,
#   base  BASE=/path/to/distlog (a build without traces, e.g. main's)
#   head  this tree's release build, traces off (no --otlp-endpoint)
#   on    the same with --otlp-endpoint to a local OTLP/HTTP sink (python3)
#
#   BASE=/other/target/release/distlog scripts/traces-perf.sh [ROUNDS=3]
#
# Knobs: DURATION (10s), CONNECTIONS (64), THREADS (2), BASE_PORT (19500),
# HEAD (default target/release/distlog, built here). Needs wrk, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
port="${BASE_PORT:-19500}"
: "${BASE:?set BASE to a distlog binary built without traces}"
if [ -z "${HEAD:-}" ]; then
  cargo build --release --bin distlog >&2
  HEAD="${CARGO_TARGET_DIR:-target}/release/distlog"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/distlog-traces-perf.XXXXXX")"
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"event":"load","pad":"' .. string.rep("x", 1000) .. '"}'
LUA
# A sink that accepts every export and drops it.
python3 - "$port" >/dev/null 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SINK=$!
SINK_URL="http://127.0.0.1:$port"
trap 'kill $SINK 2>/dev/null; rm -rf "$work"' EXIT
run() { # NAME BINARY [flags...]
  local name=$1 bin=$2
  shift 2
  port=$((port + 1))
  env -u RUST_LOG -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/data-$port" --fsync never "$@" >"$work/$name.out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null -d '{"a":1}' "127.0.0.1:$port/" && break; sleep 0.1; done
  local get post
  get=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$port/0" | awk '/Requests\/sec/ {print $2}')
  post=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$port/" |
    awk '/Requests\/sec/ {print $2}')
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$work/data-$port"
  printf '%-5s GET %10s req/s  POST %10s req/s\n' "$name" "$get" "$post"
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="base head on"; else order="on head base"; fi
  for v in $order; do
    case $v in
      base) run base "$BASE" ;;
      head) run head "$HEAD" ;;
      on) run on "$HEAD" --otlp-endpoint "$SINK_URL" ;;
    esac
  done
done
