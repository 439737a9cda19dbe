#!/usr/bin/env bash
# HTTP load test: distlog against a do-nothing axum server, under the same wrk load.
#
#   scripts/load.sh            # baseline, distlog --fsync never, distlog --fsync always
#   scripts/load.sh --disk     # the same, then raw disk numbers from fio (scripts/disk.sh)
#   scripts/load.sh --producers  # only the idempotent-producer comparison (below)
#
# Then distlog --fsync never over HTTPS (self-signed, keep-alive) against the plain run.
# Then idempotent producers (issue 21), wrk with one thread a connection so that each
# connection is one producer sending its sequence in order: POST / with Producer-Id /
# Producer-Seq against the same POST without them, --fsync never and always; then with
# FILL_PRODUCERS (100000) producers already in the table, the same pair again.
# For every server, on 127.0.0.1 only, with a fresh data directory each time:
#   GET  /{offset}  random offsets that exist (the log is pre-filled first)
#   POST /          ~1 KiB JSON records, Content-Type: application/json
# distlog runs in its default configuration (RUST_LOG unset: info level, logs
# written by a background thread, no access log), as a user would start it;
# one extra GET run with --access-log (a line per request, to a file) shows
# what the access log costs.
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), THREADS (2),
# PREFILL records (100000), BASE_PORT (18080), LOAD_DIR (data dirs; default a
# temporary directory under $TMPDIR or /tmp), CARGO_TARGET_DIR; PAIRS (with
# --producers: that many more alternating plain/producer pairs, a fresh server
# each, and their medians) for each mode of PAIR_FSYNC ("never"); SERVER_CPUS and CLIENT_CPUS (taskset -c lists,
# e.g. 0 and 1: the servers and wrk on cores of their own, so that the
# client's per-request work is not taken from the server).
# Installs wrk (and curl) with apt-get if missing; kills what it started on exit.
set -euo pipefail

DURATION="${DURATION:-10s}"
SERVER_PIN=()
[ -n "${SERVER_CPUS:-}" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
CLIENT_PIN=()
[ -n "${CLIENT_CPUS:-}" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
PREFILL="${PREFILL:-100000}"
BASE_PORT="${BASE_PORT:-18080}"
FILL_PRODUCERS="${FILL_PRODUCERS:-100000}"
RUN_DISK=0
ONLY_PRODUCERS=0
for arg in "$@"; do
  case "$arg" in
    --disk) RUN_DISK=1 ;;
    --producers) ONLY_PRODUCERS=1 ;;
    -h | --help)
      sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

cd "$(dirname "$0")/.."
log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ----- tools -------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "building: cargo build --release --bin distlog --example baseline_server"
cargo build --release --bin distlog --example baseline_server
target="${CARGO_TARGET_DIR:-target}"
DISTLOG="$target/release/distlog"
BASELINE="$target/release/examples/baseline_server"

# ----- scratch space and cleanup ----------------------------------------
parent="${LOAD_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$parent"
work="$(mktemp -d "$parent/distlog-load.XXXXXX")"
SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----- wrk scripts -------------------------------------------------------
# ~1 KiB JSON value, the same shape the storage benchmark writes.
pad="$(head -c 1000 /dev/zero | tr '\0' 'x')"
body="{\"event\":\"load\",\"pad\":\"$pad\"}"
report='
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.requests, errors))
end
'
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
$report
EOF
# One producer a wrk thread (run with as many threads as connections): its id is
# load-<thread>, its sequence counts its requests from 0. Both scripts format
# their request once (wrk.format) and make each one with one concatenation:
# wrk runs on the same cores as the server, and formatting two more headers
# per request in Lua cost wrk ~2 us a request (measured), which the
# producer run paid and the plain one did not.
producer_headers='
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end'
cat >"$work/post-plain.lua" <<EOF
$producer_headers
init = function(args)
  local r = wrk.format("POST", "/", {["Content-Type"] = "application/json"}, '$body')
  local at = string.find(r, "\\r\\n\\r\\n", 1, true)
  head, tail = r:sub(1, at - 1), r:sub(at)
end
request = function()
  return head .. tail
end
$report
EOF
cat >"$work/post-producer.lua" <<EOF
$producer_headers
init = function(args)
  seq = 0
  local r = wrk.format("POST", "/", {["Content-Type"] = "application/json", ["Producer-Id"] = "load-" .. id,
    ["Producer-Seq"] = "SEQ"}, '$body')
  local from, to = string.find(r, "SEQ", 1, true)
  head, tail = r:sub(1, from - 1), r:sub(to + 1)
end
request = function()
  local r = head .. seq .. tail
  seq = seq + 1
  return r
end
$report
EOF
# A new producer every request (fill-<thread>-<n>, sequence 0): fills the table.
cat >"$work/post-fill.lua" <<EOF
$producer_headers
init = function(args)
  seq = 0
end
request = function()
  seq = seq + 1
  return wrk.format("POST", "/", {["Content-Type"] = "application/json", ["Producer-Id"] = "fill-" .. id .. "-" .. seq,
    ["Producer-Seq"] = "0"}, '{}')
end
$report
EOF

get_script() { # $1: offsets in [0, $1) exist
  cat >"$work/get.lua" <<EOF
local n = $1
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
init = function(args)
  math.randomseed(seed * 7919 + os.time())
end
request = function()
  return wrk.format("GET", "/" .. math.random(0, n - 1))
end
$report
EOF
}

# ----- servers -----------------------------------------------------------
PORT="$BASE_PORT"
SCHEME=http # https for the TLS runs (curl -k: the certificate is self-signed)
wait_ready() { # until the server answers anything, at most 30 s
  for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server exited early; its output:"
      cat "$work/server.out" >&2 || true
      exit 1
    fi
    if curl -sk -o /dev/null --max-time 1 "$SCHEME://127.0.0.1:$PORT/0"; then return 0; fi
    sleep 0.1
  done
  log "server did not answer within 30 s"
  exit 1
}
start_baseline() {
  PORT=$((PORT + 1))
  "${SERVER_PIN[@]}" "$BASELINE" "127.0.0.1:$PORT" >"$work/server.out" 2>&1 &
  SERVER_PID=$!
  wait_ready
}
start_distlog() { # $1: fsync mode, then extra flags; the default configuration otherwise
  PORT=$((PORT + 1))
  local data="$work/data-$PORT" fsync="$1"
  shift
  "${SERVER_PIN[@]}" env -u RUST_LOG "$DISTLOG" serve --listen "127.0.0.1:$PORT" --data-dir "$data" --fsync "$fsync" "$@" \
    >"$work/server.out" 2>&1 &
  SERVER_PID=$!
  wait_ready
}

# Appends $PREFILL ~1 KiB records as NDJSON batches of 1000.
prefill() {
  local batch="$work/batch.ndjson"
  : >"$batch"
  for _ in $(seq 1000); do printf '%s\n' "$body" >>"$batch"; done
  local filled=0
  while [ "$filled" -lt "$PREFILL" ]; do
    curl -skf --max-time 60 -H 'Content-Type: application/x-ndjson' --data-binary "@$batch" \
      "$SCHEME://127.0.0.1:$PORT/" >/dev/null
    filled=$((filled + 1000))
  done
  log "pre-filled $filled records"
}

# wrk's duration ("10s", "2m", "1h", "30") in seconds.
seconds() {
  local n="${1//[^0-9]/}"
  case "$1" in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}

declare -A RPS P99 P50 ERR REQ CPU
# The server's CPU time (user + system, clock ticks) so far.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
# run NAME LUA [THREADS [DURATION]]: one wrk run against the current server.
run() {
  local name="$1" script="$2" out="$work/wrk-$1.out" threads="${3:-$THREADS}" duration="${4:-$DURATION}"
  log "wrk -t$threads -c$CONNECTIONS -d$duration --latency ($name)"
  local ticks_before
  ticks_before="$(server_ticks)"
  timeout "$(($(seconds "$duration") + 60))" "${CLIENT_PIN[@]}" wrk -t"$threads" -c"$CONNECTIONS" -d"$duration" --timeout 10s --latency \
    -s "$script" "$SCHEME://127.0.0.1:$PORT" >"$out" 2>&1 || {
    log "wrk failed for $name:"
    cat "$out" >&2
    exit 1
  }
  local result ticks_after
  ticks_after="$(server_ticks)"
  result="$(grep '^RESULT' "$out")"
  RPS[$name]="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$result")"
  P50[$name]="$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$result")"
  P99[$name]="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$result")"
  ERR[$name]="$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$result")"
  REQ[$name]="$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")"
  # Server CPU (user + system) a request, in microseconds.
  CPU[$name]="$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="${REQ[$name]}" \
    'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "-" }')"
  log "  $name: ${RPS[$name]} req/s, p50 ${P50[$name]} us, p99 ${P99[$name]} us, errors ${ERR[$name]}, server CPU ${CPU[$name]} us a request"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
row() { # name label baseline target
  printf '%-34s %12s %9s %9s %8s %7s %s\n' "$2" "${RPS[$1]}" "$(ms "${P50[$1]}")" "$(ms "${P99[$1]}")" \
    "${ERR[$1]}" "$(ratio "${RPS[$1]}" "${RPS[$3]}")" "$4"
}

# Idempotent producers against plain appends, one producer a connection (see the top).
producer_runs() {
  local fsync
  for fsync in never always; do
    log "== distlog --fsync $fsync: POST / with and without producer headers (-t$CONNECTIONS, a producer a connection)"
    start_distlog "$fsync"
    run "plain_$fsync" "$work/post-plain.lua" "$CONNECTIONS"
    run "producer_$fsync" "$work/post-producer.lua" "$CONNECTIONS"
    if [ "$fsync" = never ]; then
      log "   filling the table with $FILL_PRODUCERS producers"
      local filled=0
      while [ "$filled" -lt "$FILL_PRODUCERS" ]; do
        run fill "$work/post-fill.lua" "$CONNECTIONS" 5s
        filled=$((filled + REQ[fill]))
      done
      log "   $filled producers sent one append each"
      run "full_plain_$fsync" "$work/post-plain.lua" "$CONNECTIONS"
      run "full_producer_$fsync" "$work/post-producer.lua" "$CONNECTIONS"
      curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^process_resident_memory_bytes|^distlog_producers_evicted_total' >&2 || true
    fi
    stop_server
  done
}

producer_report() {
  echo
  echo "Idempotent producers (wrk -t$CONNECTIONS -c$CONNECTIONS -d$DURATION, a producer a connection; target >= 0.95):"
  printf '%-34s %12s %9s %9s %8s %7s %s\n' "run" "req/s" "p50 ms" "p99 ms" "errors" "ratio" "(vs; target)"
  row plain_never "POST never, plain" plain_never ""
  row producer_never "POST never, producer headers" plain_never ">= 0.95 of plain never"
  row plain_always "POST always, plain" plain_always ""
  row producer_always "POST always, producer headers" plain_always ">= 0.95 of plain always"
  row full_plain_never "POST never, plain, table full" plain_never ">= 0.95 ($FILL_PRODUCERS producers in the table)"
  row full_producer_never "POST never, producers, table full" producer_never ">= 0.95 ($FILL_PRODUCERS producers in the table)"
  # The same two runs side by side in the same state of the log (the rows above
  # compare runs minutes apart, after the fill and ~2x the data written).
  row full_producer_never "  the same, vs plain with table full" full_plain_never ">= 0.95 (producer headers, same log state)"
}

# PAIRS more pairs for each --fsync mode of PAIR_FSYNC ("never"; "never
# always" for both), each on a fresh server, the order swapped every pair:
# single runs drift too much on a shared machine for a 5% figure. Per pair,
# the throughput ratio (producer / plain) and the ratio of server CPU a
# request (plain / producer: what a CPU-bound server would give); then medians.
producer_pairs() {
  local fsync i kind
  median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  for fsync in ${PAIR_FSYNC:-never}; do
    local thr=() cpu=()
    for i in $(seq 1 "$PAIRS"); do
      log "== pair $i of $PAIRS (--fsync $fsync, fresh server)"
      start_distlog "$fsync"
      local order=(plain producer)
      [ $((i % 2)) -eq 0 ] && order=(producer plain)
      for kind in "${order[@]}"; do run "pair_${kind}_${fsync}_$i" "$work/post-$kind.lua" "$CONNECTIONS"; done
      stop_server
      thr+=("$(ratio "${RPS[pair_producer_${fsync}_$i]}" "${RPS[pair_plain_${fsync}_$i]}")")
      cpu+=("$(ratio "${CPU[pair_plain_${fsync}_$i]}" "${CPU[pair_producer_${fsync}_$i]}")")
    done
    echo
    echo "Pairs, --fsync $fsync (fresh server each, order swapped every pair; target >= 0.95):"
    printf '%-5s %12s %12s %11s %11s %9s %9s\n' pair "plain req/s" "prod req/s" "plain us/r" "prod us/r" "thr ratio" "cpu ratio"
    for i in $(seq 1 "$PAIRS"); do
      printf '%-5s %12s %12s %11s %11s %9s %9s\n' "$i" "${RPS[pair_plain_${fsync}_$i]}" "${RPS[pair_producer_${fsync}_$i]}" \
        "${CPU[pair_plain_${fsync}_$i]}" "${CPU[pair_producer_${fsync}_$i]}" "${thr[$((i - 1))]}" "${cpu[$((i - 1))]}"
    done
    echo "--fsync $fsync: median throughput ratio $(median "${thr[@]}"), median CPU ratio $(median "${cpu[@]}")"
  done
}

if [ "$ONLY_PRODUCERS" -eq 1 ]; then
  producer_runs
  producer_report
  [ "${PAIRS:-0}" -gt 0 ] && producer_pairs
  exit 0
fi

get_script "$PREFILL"
# Anything else busy on the machine skews every number below.
log "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"

log "== baseline_server"
start_baseline
run baseline_get "$work/get.lua"
run baseline_post "$work/post.lua"
stop_server

log "== distlog --fsync never (default configuration: RUST_LOG unset, no access log)"
start_distlog never
prefill
run never_get "$work/get.lua"
run never_post "$work/post.lua"
stop_server

log "== distlog --fsync always (default configuration)"
start_distlog always
prefill
run always_get "$work/get.lua"
run always_post "$work/post.lua"
stop_server

log "== distlog --fsync never --access-log (one line a request, to a file)"
start_distlog never --access-log
prefill
run info_get "$work/get.lua"
stop_server

log "== distlog --fsync never over HTTPS (keep-alive, self-signed P-256 certificate, default configuration)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
PORT=$((PORT + 1))
SCHEME=https
env -u RUST_LOG "$DISTLOG" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data-$PORT" --fsync never \
  --tls-cert "$work/tls.pem" --tls-key "$work/tls.key" >"$work/server.out" 2>&1 &
SERVER_PID=$!
wait_ready
prefill
run tls_get "$work/get.lua"
run tls_post "$work/post.lua"
stop_server
SCHEME=http

producer_runs

# ----- report ------------------------------------------------------------
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, ~1 KiB JSON, 127.0.0.1, $(nproc) cores; GET over $PREFILL records"
echo "distlog in its default configuration (RUST_LOG unset: info, no access log) unless the row says otherwise"
printf '%-34s %12s %9s %9s %8s %7s %s\n' "run" "req/s" "p50 ms" "p99 ms" "errors" "ratio" "(vs baseline; target)"
row baseline_get "GET  baseline" baseline_get ""
row never_get "GET  distlog never" baseline_get ">= 0.80"
row always_get "GET  distlog always" baseline_get ">= 0.80"
row info_get "GET  distlog never --access-log" never_get "(access log cost, vs plain never)"
row baseline_post "POST baseline" baseline_post ""
row never_post "POST distlog never" baseline_post ">= 0.80"
row always_post "POST distlog always" baseline_post ">= 0.50"
echo
echo "HTTPS against plain HTTP, both distlog --fsync never (target >= 0.70):"
row tls_get "GET  distlog never over HTTPS" never_get ">= 0.70 of plain GET"
row tls_post "POST distlog never over HTTPS" never_post ">= 0.70 of plain POST"
producer_report

if [ "$RUN_DISK" -eq 1 ]; then
  echo
  log "== raw disk (fio)"
  DISK_DIR="$parent" bash scripts/disk.sh
fi
