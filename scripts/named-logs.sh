#!/usr/bin/env bash
# Named logs on a standalone node (issue 22), measured side by side in one run:
#
#   1. POST to a named log against POST / on the same node (wrk, ~1 KiB JSON records; CONNECTIONS
#      connections, then one): the dispatcher's cost as a throughput ratio and latencies.
#   2. LOGS named logs (1000): the time to create them, what the node holds then (threads, open
#      files, resident memory), its CPU over IDLE_SECONDS with nothing to do, and the time from
#      a restart to serving again.
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), LOGS (1000), IDLE_SECONDS (10), FSYNC
# (never), DISTLOG_BIN (default: a release build). Installs wrk if missing.
set -euo pipefail
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
LOGS="${LOGS:-1000}"
IDLE_SECONDS="${IDLE_SECONDS:-10}"
FSYNC="${FSYNC:-never}"
if [ -z "${DISTLOG_BIN:-}" ]; then
  (cd "$(dirname "$0")/.." && cargo build --release --quiet --bin distlog)
  DISTLOG_BIN="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/release/distlog"
fi
export DISTLOG_BIN
source "$(dirname "$0")/lib/serve.sh"
bin="$DISTLOG_BIN"
log() { printf '[named-logs %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y --no-install-recommends wrk >/dev/null; }

body="{\"pad\":\"$(head -c 1000 /dev/zero | tr '\0' x)\"}"
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

# wrk_run URL CONNECTIONS: prints "<requests/s> <p50> <p99>" (latencies as wrk prints them).
wrk_run() {
  local out
  out="$(wrk -t "$(( $2 < 2 ? 1 : 2 ))" -c "$2" -d "$DURATION" --latency -s "$work/post.lua" "$1")"
  local rps p50 p99
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
  p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  echo "$rps $p50 $p99"
}

start_node node --fsync "$FSYNC"
url="$NODE_URL"
pid="${started_pids[-1]}"
curl -sf -X PUT "$url/logs/bench" >/dev/null
log "POST / against POST /logs/bench/ ($CONNECTIONS connections, then 1; --fsync $FSYNC; $DURATION each)"
printf '%-22s %12s %10s %10s\n' "run" "requests/s" "p50" "p99"
for conns in "$CONNECTIONS" 1; do
  read -r d_rps d50 d99 <<<"$(wrk_run "$url/" "$conns")"
  read -r n_rps n50 n99 <<<"$(wrk_run "$url/logs/bench/" "$conns")"
  printf '%-22s %12s %10s %10s\n' "default, c$conns" "$d_rps" "$d50" "$d99"
  printf '%-22s %12s %10s %10s\n' "named, c$conns" "$n_rps" "$n50" "$n99"
  printf '%-22s %12s\n' "ratio named/default" "$(awk -v n="$n_rps" -v d="$d_rps" 'BEGIN {printf "%.3f", n / d}')"
done

log "creating $LOGS named logs"
t0=$(date +%s.%N)
for i in $(seq 1 "$LOGS"); do
  curl -sf -o /dev/null -X PUT "$url/logs/log-$i" || { log "creating log-$i failed"; exit 1; }
  if (( i % 200 == 0 )); then log "  $i created"; fi
done
t1=$(date +%s.%N)
echo "created $LOGS logs in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
echo "held: $(ls /proc/$pid/task | wc -l) threads, $(ls /proc/$pid/fd | wc -l) open files, $(awk '/VmRSS/ {print $2 / 1024 " MiB"}' /proc/$pid/status) resident"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
c0=$(ticks "$pid")
sleep "$IDLE_SECONDS"
c1=$(ticks "$pid")
echo "idle CPU over ${IDLE_SECONDS} s: $(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v s="$IDLE_SECONDS" 'BEGIN {printf "%.2f%% of one core", (b - a) / hz / s * 100}')"

log "restarting with $LOGS logs"
kill "$pid"
wait "$pid" 2>/dev/null || true
t0=$(date +%s.%N)
start_node node --fsync "$FSYNC"
curl -sf "$NODE_URL/logs/log-$LOGS" >/dev/null
t1=$(date +%s.%N)
echo "restart to serving with $LOGS logs: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s"
