#!/usr/bin/env bash
# Issue 10's two write-path measurements, each against its baseline in the same run:
#
#   scripts/perf.sh batch    # NDJSON batches of 100 x ~1 KiB records, --fsync always,
#                            # against fio's sequential write bandwidth (scripts/disk.sh)
#   scripts/perf.sh tail     # 1 KiB JSON POSTs: p50/p90/p99/p99.9 of --fsync never,
#                            # interval and always, and of the do-nothing baseline server
#   scripts/perf.sh profile  # instructions per batched record (valgrind callgrind):
#                            # repeatable whatever else the machine runs
#
# Every distlog runs with its default configuration (RUST_LOG unset) unless
# LOGS=warn, which reruns each distlog row with RUST_LOG=warn as well (logging
# cost apart from the storage engine's). With BASE=/path/to/other/distlog the
# rows alternate between that binary ("base") and this tree's ("head"),
# ROUNDS times, so that a change is judged on ratios measured side by side.
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), THREADS (2), ROUNDS
# (1), BATCH records a request (100), BATCHES for profile (300), BASE_PORT
# (19080), LOAD_DIR (data dirs, default under $TMPDIR or /tmp), DISTLOG and
# BASELINE (binaries; default built here with cargo), CARGO_TARGET_DIR.
set -euo pipefail

MODE="${1:-}"
case "$MODE" in
  batch | tail | profile) ;;
  -h | --help | "")
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "unknown mode: $MODE (batch, tail or profile)" >&2
    exit 2
    ;;
esac
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-1}"
BATCH="${BATCH:-100}"
BATCHES="${BATCHES:-300}"
BASE_PORT="${BASE_PORT:-19080}"
LOGS="${LOGS:-default}"

cd "$(dirname "$0")/.."
log() { printf '[perf %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
[ "$MODE" != profile ] || command -v valgrind >/dev/null || need+=(valgrind)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -z "${DISTLOG:-}" ] || [ -z "${BASELINE:-}" ]; then
  log "building: cargo build --release --bin distlog --example baseline_server"
  cargo build --release --bin distlog --example baseline_server
fi
target="${CARGO_TARGET_DIR:-target}"
DISTLOG="${DISTLOG:-$target/release/distlog}"
BASELINE="${BASELINE:-$target/release/examples/baseline_server}"
declare -A BIN=([head]="$DISTLOG")
VERSIONS=(head)
if [ -n "${BASE:-}" ]; then
  BIN[base]="$BASE"
  VERSIONS=(base head)
fi
# The order of base and head flips every round: whatever the run before
# leaves behind (dirty pages, a disk cache to drain) falls on both alike.
versions_in_round() { # versions_in_round ROUND
  if [ $(($1 % 2)) -eq 0 ] && [ "${#VERSIONS[@]}" -eq 2 ]; then echo "${VERSIONS[1]} ${VERSIONS[0]}"; else echo "${VERSIONS[@]}"; fi
}

parent="${LOAD_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$parent"
work="$(mktemp -d "$parent/distlog-perf.XXXXXX")"
SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 300); do
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

PORT="$BASE_PORT"
wait_ready() { # until the server answers anything, at most 60 s (valgrind is slow)
  for _ in $(seq 600); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server exited early; its output:"
      tail -20 "$work/server.out" >&2 || true
      exit 1
    fi
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/0"; then return 0; fi
    sleep 0.1
  done
  log "server did not answer within 60 s"
  exit 1
}
start_baseline() {
  PORT=$((PORT + 1))
  "$BASELINE" "127.0.0.1:$PORT" >"$work/server.out" 2>&1 &
  SERVER_PID=$!
  wait_ready
}
# start_distlog VERSION FSYNC LOGS [wrapper...]: a fresh data directory each time;
# LOGS "default" leaves RUST_LOG unset (the default level), anything else is RUST_LOG.
start_distlog() {
  local version="$1" fsync="$2" logs="$3"
  shift 3
  PORT=$((PORT + 1))
  local data="$work/data-$PORT"
  local env_log=(env -u RUST_LOG)
  [ "$logs" = default ] || env_log=(env RUST_LOG="$logs")
  "${env_log[@]}" "$@" "${BIN[$version]}" serve --listen "127.0.0.1:$PORT" --data-dir "$data" \
    --fsync "$fsync" >"$work/server.out" 2>&1 &
  SERVER_PID=$!
  wait_ready
}

# ~1 KiB JSON value, the same as scripts/load.sh posts.
line='{"event":"load","pad":"'"$(head -c 1000 /dev/zero | tr '\0' 'x')"'"}'
report='
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, summary.requests, errors))
end
'
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$line'
wrk.headers["Content-Type"] = "application/json"
$report
EOF
cat >"$work/batch.lua" <<EOF
wrk.method = "POST"
wrk.body = string.rep('$line' .. "\n", $BATCH)
wrk.headers["Content-Type"] = "application/x-ndjson"
$report
EOF
for _ in $(seq "$BATCH"); do printf '%s\n' "$line"; done >"$work/batch.ndjson"
BATCH_BYTES="$(stat -c %s "$work/batch.ndjson")"

seconds() {
  local n="${1//[^0-9]/}"
  case "$1" in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}

declare -A RPS P50 P90 P99 P999 MAX ERR
ROWS=()
run() { # run NAME LUA: one wrk run against the current server
  local name="$1" script="$2" out="$work/wrk.out"
  timeout "$(($(seconds "$DURATION") + 60))" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s \
    -s "$script" "http://127.0.0.1:$PORT" >"$out" 2>&1 || {
    log "wrk failed for $name:"
    cat "$out" >&2
    exit 1
  }
  local r
  r="$(grep '^RESULT' "$out")"
  field() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$r"; }
  RPS[$name]="$(field rps)"
  P50[$name]="$(field p50_us)"
  P90[$name]="$(field p90_us)"
  P99[$name]="$(field p99_us)"
  P999[$name]="$(field p999_us)"
  MAX[$name]="$(field max_us)"
  ERR[$name]="$(field errors)"
  ROWS+=("$name")
  log "  $name: ${RPS[$name]} req/s, p50 ${P50[$name]} us, p99 ${P99[$name]} us, p99.9 ${P999[$name]} us, errors ${ERR[$name]}"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
log_variants() { if [ "$LOGS" = warn ]; then echo default warn; else echo default; fi; }

log "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

if [ "$MODE" = tail ]; then
  for round in $(seq "$ROUNDS"); do
    log "== round $round: baseline_server"
    start_baseline
    run "r$round baseline" "$work/post.lua"
    stop_server
    for fsync in never interval always; do
      for logs in $(log_variants); do
        for version in $(versions_in_round "$round"); do
          log "== round $round: $version distlog --fsync $fsync (log: $logs)"
          start_distlog "$version" "$fsync" "$logs"
          run "r$round $version $fsync log=$logs" "$work/post.lua"
          stop_server
        done
      done
    done
  done
  echo
  echo "POST / (~1 KiB JSON), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 127.0.0.1, $(nproc) cores, latencies in ms"
  printf '%-36s %10s %7s %7s %7s %8s %8s %6s\n' run req/s p50 p90 p99 p99.9 max errors
  for n in "${ROWS[@]}"; do
    printf '%-36s %10s %7s %7s %7s %8s %8s %6s\n' "$n" "${RPS[$n]}" "$(ms "${P50[$n]}")" "$(ms "${P90[$n]}")" \
      "$(ms "${P99[$n]}")" "$(ms "${P999[$n]}")" "$(ms "${MAX[$n]}")" "${ERR[$n]}"
  done
  if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "median over $ROUNDS rounds (each column on its own)"
    for n in "${ROWS[@]}"; do
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${n#r* }" "${RPS[$n]}" "${P50[$n]}" "${P90[$n]}" "${P99[$n]}" \
        "${P999[$n]}" "${MAX[$n]}"
    done | awk -F'\t' '
      { if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
        c = ++count[$1]; for (i = 2; i <= 7; i++) v[$1, i, c] = $i }
      function median(name, col,   n, i, j, t, a) {
        n = count[name]; for (i = 1; i <= n; i++) a[i] = v[name, col, i] + 0
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      END {
        printf "%-36s %10s %7s %7s %7s %8s %8s\n", "run", "req/s", "p50", "p90", "p99", "p99.9", "max"
        for (o = 1; o <= k; o++) { m = order[o]
          printf "%-36s %10.0f %7.2f %7.2f %7.2f %8.2f %8.2f\n", m, median(m, 2), median(m, 3) / 1000,
            median(m, 4) / 1000, median(m, 5) / 1000, median(m, 6) / 1000, median(m, 7) / 1000 }
      }'
  fi
  exit 0
fi

if [ "$MODE" = batch ]; then
  command -v fio >/dev/null || {
    log "installing fio"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fio >/dev/null
  }
  # fio's sequential write as scripts/disk.sh runs it, in MB/s, on the data directories' filesystem.
  declare -A FIO
  fio_seq() { # fio_seq NAME
    local dir="$work/fio" out="$work/fio.out"
    mkdir -p "$dir"
    timeout 300 fio --name=seq --rw=write --bs=1M --size=2G --end_fsync=1 --runtime=120 \
      --directory="$dir" --output="$out" >/dev/null
    rm -rf "$dir"
    # "WRITE: bw=1775MiB/s (1861MB/s), ..."
    FIO[$1]="$(grep -m1 'WRITE: bw=' "$out" | sed -E 's/.*\(([0-9.]+)([kMG])B\/s\).*/\1 \2/' |
      awk '{ m = ($2 == "G") ? 1000 : (($2 == "k") ? 0.001 : 1); printf "%.0f", $1 * m }')"
    ROWS+=("$1")
    log "  $1: ${FIO[$1]} MB/s"
  }
  for round in $(seq "$ROUNDS"); do
    log "== round $round: fio sequential write"
    fio_seq "r$round fio before"
    for version in $(versions_in_round "$round"); do
      for logs in $(log_variants); do
        log "== round $round: $version distlog --fsync always, NDJSON batches of $BATCH (log: $logs)"
        start_distlog "$version" always "$logs"
        run "r$round $version always log=$logs" "$work/batch.lua"
        stop_server
      done
    done
    fio_seq "r$round fio after"
  done
  echo
  echo "NDJSON POST / of $BATCH records ($BATCH_BYTES bytes), --fsync always, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores"
  echo "data and fio on $(df --output=source,fstype "$work" | tail -1); 'of fio': of the mean of the fio runs around it"
  printf '%-32s %8s %11s %7s %8s %7s %6s\n' run req/s records/s MB/s p99_ms "of fio" errors
  for n in "${ROWS[@]}"; do
    if [ -n "${FIO[$n]:-}" ]; then
      printf '%-32s %8s %11s %7s\n' "$n" - - "${FIO[$n]}"
      continue
    fi
    round="${n%% *}"
    fio="$(awk -v a="${FIO[$round fio before]}" -v b="${FIO[$round fio after]}" 'BEGIN { print (a + b) / 2 }')"
    awk -v rps="${RPS[$n]}" -v batch="$BATCH" -v bytes="$BATCH_BYTES" -v fio="$fio" -v name="$n" \
      -v p99="$(ms "${P99[$n]}")" -v err="${ERR[$n]}" 'BEGIN {
        mbs = rps * bytes / 1e6
        printf "%-32s %8.0f %11.0f %7.0f %8s %7.2f %6s\n", name, rps, rps * batch, mbs, p99, mbs / fio, err
      }'
  done
  exit 0
fi

# profile: the server under callgrind takes $BATCHES batches over one keep-alive
# connection; instructions in the whole process divided by the records.
urls=()
for _ in $(seq "$BATCHES"); do urls+=("http://127.0.0.1:PORT/"); done
echo "instructions per record, $BATCHES NDJSON batches of $BATCH records, --fsync always, callgrind"
for version in "${VERSIONS[@]}"; do
  for round in $(seq "$ROUNDS"); do
    out="$work/callgrind.$version.$round"
    start_distlog "$version" always warn valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no
    # Warm up (first touch of the store, lazily built tables) outside the count...
    curl -sf -o /dev/null -H 'Content-Type: application/x-ndjson' --data-binary "@$work/batch.ndjson" \
      "http://127.0.0.1:$PORT/"
    callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
    # ...then the counted batches, on one connection; the dump holds every thread's count.
    curl -sf -o /dev/null -H 'Content-Type: application/x-ndjson' --data-binary "@$work/batch.ndjson" \
      "${urls[@]//PORT/$PORT}" >/dev/null
    callgrind_control --dump=counted "$SERVER_PID" >/dev/null 2>&1
    stop_server
    total="$(cat "$out".* | grep -E '^summary:' | awk '{ s += $2 } END { print s }')"
    awk -v t="$total" -v n="$((BATCHES * BATCH))" -v v="$version" \
      'BEGIN { printf "%-6s %14d instructions in the server, %8.0f per record\n", v, t, t / n }'
    if [ -n "${KEEP_PROFILE:-}" ]; then cat "$out".* >"$KEEP_PROFILE.$version.$round"; fi
  done
done
