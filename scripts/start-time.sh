#!/usr/bin/env bash
# Issue 19 item 4's measurement: how long a cluster node takes to answer
# /healthz and to be ready (/readyz 200) after a restart, with the page
# cache dropped (cold reads), on a log of SIZE_MIB. The first restart after
# the log was written checks every sealed segment's frames (what every
# start did before raft/verified); the second checks only the active one.
# /healthz answers while the check runs (503 on /readyz meanwhile). Both in
# one run:
#
#   scripts/start-time.sh            # SIZE_MIB=2048, SEGMENT_MIB=64
#   READ_MIB_S=50 scripts/start-time.sh   # the restarts' reads capped
#
# Knobs (environment): DISTLOG (the binary, default target/release/distlog,
# built if missing), SIZE_MIB, SEGMENT_MIB, DIR (where the log goes; it
# needs SIZE_MIB free; default a temporary directory under /var/tmp), PORT,
# READ_MIB_S (cap the restarted node's reads from DIR's disk in a cgroup:
# v2 io.max, else v1 blkio.throttle.read_bps_device; needs root, and refuses
# when neither is there). Dropping the page cache needs root; without it
# the reads are warm.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
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
cgroup=
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$DIR"; [ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true' EXIT

# With READ_MIB_S: a cgroup whose reads from DIR's disk are capped (`cgroup`
# names it), or exits saying why none can be made here.
cap_reads() {
  [ -n "${READ_MIB_S:-}" ] || return 0
  local dev bps
  dev=$(lsblk -no MAJ:MIN "$(df --output=source "$DIR" | tail -1)" 2>/dev/null | head -1 | tr -d ' ')
  bps=$((READ_MIB_S * 1024 * 1024))
  [ -n "$dev" ] || { echo "READ_MIB_S: $DIR is on no block device" >&2; exit 1; }
  if grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    cgroup=/sys/fs/cgroup/distlog-start-time.$$
    mkdir "$cgroup" && echo "$dev rbps=$bps" >"$cgroup/io.max"
  elif [ -w /sys/fs/cgroup/blkio ]; then
    cgroup=/sys/fs/cgroup/blkio/distlog-start-time.$$
    mkdir "$cgroup" && echo "$dev $bps" >"$cgroup/blkio.throttle.read_bps_device"
  else
    echo "READ_MIB_S: no cgroup v2 io controller and no writable v1 blkio here" >&2
    exit 1
  fi
  echo "restarts read at most ${READ_MIB_S} MiB/s from device $dev ($cgroup)"
}

# Starts the node; `capped`: inside the read-capped cgroup, if there is one.
serve() {
  local enter=/dev/null
  [ "${1:-}" = capped ] && [ -n "$cgroup" ] && enter=$cgroup/cgroup.procs
  sh -c 'echo $$ >"$0" && exec "$@"' "$enter" \
    "$DISTLOG" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR/data" --peers "$URL" --advertise-url "$URL" \
    --max-segment-bytes "${SEGMENT_MIB}MiB" >>"$DIR/node.log" 2>&1 &
  pid=$!
}
# Seconds since `t0` (date +%s.%N) once `path` answers 200.
answers_after() {
  until curl -sf -o /dev/null "$URL/$2"; do
    kill -0 "$pid" 2>/dev/null || { echo "the node exited:" >&2; tail -5 "$DIR/node.log" >&2; exit 1; }
    sleep 0.02
  done
  echo "$(date +%s.%N) - $1" | bc
}
# Starts the node (capped) and sets `healthy` and `ready` to the seconds from
# its start to its first 200 on /healthz and on /readyz (not in a subshell:
# `pid` must reach `stop`).
restart_times() {
  local t0
  t0=$(date +%s.%N)
  serve capped
  healthy=$(answers_after "$t0" healthz)
  ready=$(answers_after "$t0" readyz)
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
cap_reads
cold
restart_times
first=($healthy $ready)
stop
cold
restart_times
second=($healthy $ready)
stop
echo "log: $(du -sh "$DIR/data" | cut -f1), segments of ${SEGMENT_MIB} MiB"
printf 'restart 1 (every sealed segment checked, as every start did before): %.2f s to /healthz, %.2f s to ready\n' "${first[@]}"
printf 'restart 2 (only the active segment checked):                        %.2f s to /healthz, %.2f s to ready\n' "${second[@]}"
grep -h 'checked every frame' "$DIR/node.log" | sed 's/^/  /' || true
