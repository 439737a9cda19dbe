#!/usr/bin/env bash
# Issue 19 item 4's measurement: how long a cluster node takes to answer
# /healthz after a restart, with the page cache dropped (cold reads), on a
# log of SIZE_MIB. The first restart after the log was written checks every
# sealed segment's frames (what every start did before raft/verified); the
# second checks only the active segment. Both in one run:
#
#   scripts/start-time.sh            # SIZE_MIB=2048, SEGMENT_MIB=64
#
# Knobs (environment): DISTLOG (the binary, default target/release/distlog,
# built if missing), SIZE_MIB, SEGMENT_MIB, DIR (where the log goes; it
# needs SIZE_MIB free; default a temporary directory under /var/tmp), PORT.
# Dropping the page cache needs root; without it the reads are warm.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h | --help)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
DISTLOG=${DISTLOG:-target/release/distlog}
SIZE_MIB=${SIZE_MIB:-2048}
SEGMENT_MIB=${SEGMENT_MIB:-64}
PORT=${PORT:-18561}
DIR=${DIR:-$(mktemp -d /var/tmp/distlog-start-time.XXXXXX)}
URL=http://127.0.0.1:$PORT
[ -x "$DISTLOG" ] || cargo build --release --bin distlog
pid=
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$DIR"' EXIT

serve() {
  "$DISTLOG" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR/data" --peers "$URL" --advertise-url "$URL" \
    --max-segment-bytes "${SEGMENT_MIB}MiB" >>"$DIR/node.log" 2>&1 &
  pid=$!
}
# Starts the node and sets `took` to the seconds from its start to its
# first 200 on /healthz (not in a subshell: `pid` must reach `stop`).
healthy_after() {
  local t0
  t0=$(date +%s.%N)
  serve
  until curl -sf -o /dev/null "$URL/healthz"; do
    kill -0 "$pid" 2>/dev/null || { echo "the node exited:" >&2; tail -5 "$DIR/node.log" >&2; exit 1; }
    sleep 0.02
  done
  took=$(echo "$(date +%s.%N) - $t0" | bc)
}
cold() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }

if curl -s -o /dev/null "$URL/healthz"; then
  echo "something already answers at $URL: pick another PORT" >&2
  exit 1
fi
serve
until curl -sf -o /dev/null "$URL/readyz"; do sleep 0.05; done
batch=$DIR/batch.ndjson
pad=$(head -c 900 /dev/zero | tr '\0' x)
for i in $(seq 1 1000); do echo "{\"i\":$i,\"pad\":\"$pad\"}"; done >"$batch"
echo "writing ${SIZE_MIB} MiB in 1 MiB batches..."
t0=$SECONDS
for i in $(seq 1 "$SIZE_MIB"); do
  curl -sf -o /dev/null -H 'content-type: application/x-ndjson' --data-binary "@$batch" "$URL/"
  if [ $((i % 256)) = 0 ]; then echo "  $i MiB ($((SECONDS - t0)) s)"; fi
done
stop
cold
healthy_after
first=$took
stop
cold
healthy_after
second=$took
stop
echo "log: $(du -sh "$DIR/data" | cut -f1), segments of ${SEGMENT_MIB} MiB"
printf 'restart 1 (every sealed segment checked, as every start did before): %.2f s to /healthz\n' "$first"
printf 'restart 2 (only the active segment checked):                        %.2f s to /healthz\n' "$second"
grep -h 'checked every frame' "$DIR/node.log" | sed 's/^/  /' || true
