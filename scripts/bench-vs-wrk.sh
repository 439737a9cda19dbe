#!/usr/bin/env bash
# `distlog bench` against wrk on the same server, same load, back to back (issue 23:
# the bench must drive at least 0.9x the POST throughput wrk reaches; it is not the
# bottleneck).
#
#   scripts/bench-vs-wrk.sh [PART...]    PART: standalone cluster (default: both)
#
# Each pair is like for like: CONNECTIONS connections (wrk) or writers (the bench, each
# with one request in flight), one ~1 KiB JSON record a POST (the record scripts/load.sh
# posts; the bench's records are padded to the same size), no consumer:
#   plain      wrk -t$THREADS POST / without producer headers
#              against distlog bench --plain (appends without producer ids)
#   producer   wrk -t$CONNECTIONS, a producer a connection (Producer-Id/Producer-Seq)
#              against distlog bench (a producer handle per writer)
#   consumer   (bench only, for reference) the producer run with one verifying consumer
#              tailing the log while it is written: that is load wrk does not put on the
#              server, so it is not part of a ratio
# standalone: one node; cluster: three nodes, wrk against the leader, the bench given
# every node's URL (it finds the leader itself). Every pair runs ROUNDS times in the
# order wrk, bench, wrk, bench..., so that drift (a log growing, a busy neighbour) hits
# both sides alike; the ratio is of the sums.
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), THREADS (2), ROUNDS (2), FSYNC
# (never: the server at its fastest, the hardest case for a client; "always" to see the
# default), BASE_PORT (19080), LOAD_DIR (data directories; default a temporary directory
# under $TMPDIR or /tmp), SERVER_CPUS and CLIENT_CPUS (taskset -c lists: the servers and
# the client, wrk or the bench, on cores of their own), DISTLOG (binary; default built
# here with cargo), CARGO_TARGET_DIR. Kills what it started on exit.
set -euo pipefail

PARTS=()
for arg in "$@"; do
  case "$arg" in
    standalone | cluster) PARTS+=("$arg") ;;
    -h | --help)
      sed -n "2,$(($(grep -n -m1 -v '^#' "$0" | cut -d: -f1) - 1))p" "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown part: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
[ "${#PARTS[@]}" -gt 0 ] || PARTS=(standalone cluster)

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
FSYNC="${FSYNC:-never}"
BASE_PORT="${BASE_PORT:-19080}"
SERVER_PIN=()
[ -n "${SERVER_CPUS:-}" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
CLIENT_PIN=()
[ -n "${CLIENT_CPUS:-}" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

cd "$(dirname "$0")/.."
log() { printf '[bench-vs-wrk %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
for tool in wrk curl jq; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${DISTLOG:-}" ]; then
  log "building: cargo build --release --bin distlog"
  cargo build --release --bin distlog
  DISTLOG="${CARGO_TARGET_DIR:-target}/release/distlog"
fi

parent="${LOAD_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$parent"
work="$(mktemp -d "$parent/distlog-bench-vs-wrk.XXXXXX")"
declare -A PIDS # name -> pid of every server this script started
stop_one() {
  local pid="${PIDS[$1]:-}"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
}
stop_all() {
  local name
  for name in "${!PIDS[@]}"; do stop_one "$name"; done
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

seconds() {
  local n="${1//[^0-9]/}"
  case "$1" in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}

# ----- wrk scripts (as scripts/load.sh: each request formatted once) -------
line='{"event":"load","pad":"'"$(head -c 1000 /dev/zero | tr '\0' 'x')"'"}'
RECORD_BYTES=${#line}
report='
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.requests, errors))
end
'
setup='
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end'
cat >"$work/plain.lua" <<EOF
$setup
init = function(args)
  local r = wrk.format("POST", "/", {["Content-Type"] = "application/json"}, '$line')
  local at = string.find(r, "\\r\\n\\r\\n", 1, true)
  head, tail = r:sub(1, at - 1), r:sub(at)
end
request = function()
  return head .. tail
end
$report
EOF
cat >"$work/producer.lua" <<EOF
$setup
init = function(args)
  seq = 0
  local r = wrk.format("POST", "/", {["Content-Type"] = "application/json", ["Producer-Id"] = "wrk-" .. os.time() .. "-" .. id,
    ["Producer-Seq"] = "SEQ"}, '$line')
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

# ----- servers -------------------------------------------------------------
PORT="$BASE_PORT"
start_node() { # start_node NAME PORT [FLAG...]
  local name="$1" port="$2"
  shift 2
  "${SERVER_PIN[@]}" env -u RUST_LOG "$DISTLOG" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" \
    --fsync "$FSYNC" "$@" >>"$work/$name.out" 2>&1 &
  PIDS[$name]=$!
}
wait_http() { # wait_http NAME URL: until URL answers 2xx, at most 60 s
  for _ in $(seq 600); do
    if ! kill -0 "${PIDS[$1]}" 2>/dev/null; then
      log "$1 exited early:"
      tail -20 "$work/$1.out" >&2 || true
      exit 1
    fi
    if curl -sf -o /dev/null --max-time 1 "$2"; then return 0; fi
    sleep 0.1
  done
  log "$1: $2 did not answer within 60 s"
  exit 1
}
# Sets TARGET (where wrk sends), URLS (the bench's seeds) and SERVERS (names, for CPU).
start_standalone() {
  PORT=$((PORT + 1))
  start_node solo "$PORT"
  TARGET="http://127.0.0.1:$PORT" URLS="$TARGET" SERVERS=(solo)
  wait_http solo "$TARGET/healthz"
}
start_cluster() {
  local ports=() peers i url
  for i in 1 2 3; do ports+=($((PORT + i))); done
  PORT=$((PORT + 3))
  peers="$(printf 'http://127.0.0.1:%s,' "${ports[@]}")"
  peers="${peers%,}"
  for i in 1 2 3; do start_node "node$i" "${ports[$((i - 1))]}" --peers "$peers"; done
  for i in 1 2 3; do wait_http "node$i" "http://127.0.0.1:${ports[$((i - 1))]}/readyz"; done
  TARGET=""
  for _ in $(seq 300); do
    url="$(curl -sf --max-time 1 "http://127.0.0.1:${ports[0]}/cluster" | jq -r '.leader_url // empty' || true)"
    if [ -n "$url" ] && curl -sf -o /dev/null --max-time 1 "$url/readyz"; then
      TARGET="$url"
      break
    fi
    sleep 0.1
  done
  [ -n "$TARGET" ] || {
    log "no leader within 30 s"
    exit 1
  }
  URLS="$peers" SERVERS=(node1 node2 node3)
}

# ----- runs ----------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# measure NAME COMMAND...: runs it (output in $work/NAME.out) and sets CPU[NAME]: the
# client's and the servers' CPU over its first DURATION, the load (100% = one core).
declare -A CPU RATE
measure() {
  local name="$1" hz client s out="" t0 ms
  shift
  hz="$(getconf CLK_TCK)"
  declare -A before
  for s in "${SERVERS[@]}"; do before[$s]="$(cpu_ticks "${PIDS[$s]}")"; done
  t0="$(date +%s%N)"
  "${CLIENT_PIN[@]}" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  client=$!
  sleep "$(seconds "$DURATION")"
  ms=$((($(date +%s%N) - t0) / 1000000))
  out="client $(awk -v t="$(cpu_ticks "$client")" -v hz="$hz" -v ms="$ms" 'BEGIN { printf "%.0f%%", t / hz * 100000 / ms }')"
  for s in "${SERVERS[@]}"; do
    out+=", $s $(awk -v a="${before[$s]}" -v b="$(cpu_ticks "${PIDS[$s]}")" -v hz="$hz" -v ms="$ms" \
      'BEGIN { printf "%.0f%%", (b - a) / hz * 100000 / ms }')"
  done
  CPU[$name]="$out"
  wait "$client" || {
    log "$name failed:"
    cat "$work/$name.err" "$work/$name.out" >&2
    exit 1
  }
}
wrk_run() { # wrk_run NAME LUA THREADS
  local cmd=(wrk -t"$3" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$work/$2" "$TARGET")
  log "${cmd[*]//$work\//}  ($1)"
  measure "$1" "${cmd[@]}"
  local r
  r="$(grep '^RESULT' "$work/$1.out")"
  RATE[$1]="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$r")"
  log "  $1: ${RATE[$1]} records/s, errors $(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$r"); cpu ${CPU[$1]}"
}
bench_run() { # bench_run NAME FLAG...
  local name="$1"
  shift
  local cmd=("$DISTLOG" bench --url "$URLS" --producers "$CONNECTIONS" --batch-size 1 --record-size "$RECORD_BYTES"
    --duration "$DURATION" --json "$@")
  log "distlog bench ${cmd[*]:2}  ($name)"
  measure "$name" "${cmd[@]}"
  RATE[$name]="$(jq -r '.produced.records_per_s' "$work/$name.out")"
  log "  $name: ${RATE[$name]} records/s, errors $(jq -c '.errors' "$work/$name.out"), failed $(jq -r .failed "$work/$name.out"); cpu ${CPU[$name]}"
  if [ "$(jq -r .failed "$work/$name.out")" != false ]; then
    log "the bench's verifier failed:"
    cat "$work/$name.out" >&2
    exit 1
  fi
}
sum() { # sum NAME: the rates of NAME-1..NAME-ROUNDS added
  local r total=0
  for r in $(seq "$ROUNDS"); do total="$(awk -v a="$total" -v b="${RATE[$1-$r]:-0}" 'BEGIN { print a + b }')"; done
  echo "$total"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

RESULTS=()
part() { # part NAME: the pairs against the servers started for NAME
  local r
  for r in $(seq "$ROUNDS"); do
    wrk_run "$1 wrk plain-$r" plain.lua "$THREADS"
    bench_run "$1 bench plain-$r" --plain --consumers 0
    wrk_run "$1 wrk producer-$r" producer.lua "$CONNECTIONS"
    bench_run "$1 bench producer-$r" --consumers 0
  done
  bench_run "$1 bench consumer-1" --consumers 1
  local plain_wrk plain_bench prod_wrk prod_bench
  plain_wrk="$(sum "$1 wrk plain")" plain_bench="$(sum "$1 bench plain")"
  prod_wrk="$(sum "$1 wrk producer")" prod_bench="$(sum "$1 bench producer")"
  RESULTS+=("$(printf '%-10s %-9s wrk %9.0f  bench %9.0f records/s  ratio %s' "$1" plain \
    "$(awk -v s="$plain_wrk" -v n="$ROUNDS" 'BEGIN { print s / n }')" \
    "$(awk -v s="$plain_bench" -v n="$ROUNDS" 'BEGIN { print s / n }')" "$(ratio "$plain_bench" "$plain_wrk")")")
  RESULTS+=("$(printf '%-10s %-9s wrk %9.0f  bench %9.0f records/s  ratio %s' "$1" producer \
    "$(awk -v s="$prod_wrk" -v n="$ROUNDS" 'BEGIN { print s / n }')" \
    "$(awk -v s="$prod_bench" -v n="$ROUNDS" 'BEGIN { print s / n }')" "$(ratio "$prod_bench" "$prod_wrk")")")
  RESULTS+=("$(printf '%-10s %-9s           bench %9.0f records/s  (1 verifying consumer; vs wrk producer %s)' "$1" consumer \
    "${RATE[$1 bench consumer-1]}" "$(ratio "${RATE[$1 bench consumer-1]}" "$(awk -v s="$prod_wrk" -v n="$ROUNDS" 'BEGIN { print s / n }')")")")
}

log "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
for p in "${PARTS[@]}"; do
  case "$p" in
    standalone) start_standalone ;;
    cluster) start_cluster ;;
  esac
  log "== $p: wrk against $TARGET, the bench against $URLS (--fsync $FSYNC)"
  part "$p"
  stop_all
done

echo
echo "bench-vs-wrk: $(nproc) cores, loopback, --fsync $FSYNC, $CONNECTIONS connections/writers, one ${RECORD_BYTES}-byte JSON record a POST,"
echo "$DURATION a run, $ROUNDS rounds alternating (means below, ratio of sums); target: bench >= 0.9x wrk"
echo "pinning: servers ${SERVER_CPUS:-any core}, client ${CLIENT_CPUS:-any core}; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${RESULTS[@]}"
echo
echo "each run (records/s; CPU over the run, 100% = one core):"
printf '%s\n' "${!RATE[@]}" | sort | while read -r name; do
  printf '  %-28s %10.0f  %s\n' "$name" "${RATE[$name]}" "${CPU[$name]}"
done
