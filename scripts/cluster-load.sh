#!/usr/bin/env bash
# Cluster load test (issue 11): a three-node distlog Raft cluster on loopback against a
# standalone node, against etcd and NATS JetStream (three nodes each, Debian's packages),
# then failover and catch-up times. Every ratio is measured in the same run.
#
#   scripts/cluster-load.sh [PART...]     PART: distlog batch producer etcd nats failover catchup
#                                         latency forward all (default: all but latency and
#                                         forward)
#   latency   one connection, then 8 (LATENCY_CONNECTIONS), wrk -t1: POST / to a standalone
#             node, to a 3-node cluster's leader and etcd put, p50/p99 each; then where the
#             cluster's write time went: the mean of each stage of distlog_raft_stage_seconds
#             on the leader and a follower over the one-connection run (src/cluster/stages.rs)
#   forward   what --forward-writes costs (issue 17): one 3-node cluster started with it; for one
#             connection, then 8 (LATENCY_CONNECTIONS), wrk -t1: POST / ~1 KiB JSON to the leader,
#             then the same through a follower (which forwards each write to the leader),
#             throughput and p50/p99 side by side
#   distlog   POST / of ~1 KiB JSON (wrk, CONNECTIONS connections) to a standalone node,
#             then to the leader of a 3-node cluster; both --fsync always (the default)
#   batch     the same with NDJSON batches of BATCH records a request
#   producer  POST / of ~1 KiB JSON with and without idempotent-producer headers, standalone
#             and to a 3-node cluster's leader, wrk with a thread a connection so that each
#             connection is a producer sending its Producer-Seq in order (issue 21)
#   etcd      3 etcd-server 3.4 nodes: PUT of 1 KiB values through the v3 JSON gateway
#             (POST /v3/kv/put, base64; wrk + lua) to the leader; etcd fsyncs before it acks
#   nats      3 nats-server 2.9 nodes, an R3 file-storage stream; nats-py (venv under
#             target/tools): "sync" = CONNECTIONS tasks each publish-and-wait-for-ack,
#             "async" = publish_async with at most NATS_ASYNC_PENDING acks pending.
#             2.9 acks from memory (no sync_interval): not the same durability
#   failover  KILLS times: kill -9 the leader, time until a POST is acknowledged (201) through
#             the new leader (curl -L against the survivors every 10 ms); restart, repeat
#   named     named logs (issue 22), one 3-node cluster: POST / ~1 KiB JSON to the default log's
#             leader; then LOGS named logs with 3 replicas are created (--logs K, default 3), the
#             first written alone at its group's leader, then all K at once, each at its own
#             group's leader with CONNECTIONS/K connections (one wrk each), their sum against the
#             single named log; the node each log's leader is on, and CPU per node
#   idle      named logs at rest (issue 22), one 3-node cluster (KEEP_LOGS=DIR keeps the nodes' output): each node's CPU over IDLE_SECONDS
#             (20) with no named log, then after creating IDLE_LOGS (--idle-logs K, default 100)
#             logs with 3 replicas (and the time that took), then the time from restarting every
#             node to every log having a leader again; prints the CPU a log costs a node at rest
#             and that times 1,000 (the issue's target: under 5% of a core per node)
#   catchup   fill the cluster with CATCHUP_BYTES of ~1 KiB records, then start a 4th node
#             (it joins as a learner) and time until the leader sees it hold every record;
#             then GET of the last record on the new node checks it
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), THREADS (wrk threads, 2), BATCH
# (100), NATS_ASYNC_PENDING (CONNECTIONS), KILLS (20), CATCHUP_BYTES (1073741824),
# BASE_PORT (21080), LOAD_DIR (data dirs; default a temporary directory under $TMPDIR or
# /tmp, never /dev/shm), DISTLOG (binary; default built here with cargo), CARGO_TARGET_DIR.
# Installs wrk, curl, jq, etcd-server, etcd-client, nats-server, python3-venv with apt-get
# if missing (and nats-py from PyPI into target/tools/venv); kills what it started on exit.
# distlog runs in its default configuration (RUST_LOG unset; default heartbeat and election
# timeouts). CPU of every server process is read from /proc during each load run.
set -euo pipefail

PARTS=()
LOGS="${LOGS:-3}"
IDLE_LOGS="${IDLE_LOGS:-100}"
IDLE_SECONDS="${IDLE_SECONDS:-20}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg="${args[$i]}"
  case "$arg" in
    distlog | batch | producer | etcd | nats | failover | catchup | latency | forward | named | idle) PARTS+=("$arg") ;;
    --idle-logs)
      i=$((i + 1))
      IDLE_LOGS="${args[$i]:-}"
      [[ "$IDLE_LOGS" =~ ^[1-9][0-9]*$ ]] || { echo "--idle-logs takes a count of logs" >&2; exit 2; }
      [[ " ${PARTS[*]} " == *" idle "* ]] || PARTS+=(idle)
      ;;
    --logs)
      i=$((i + 1))
      LOGS="${args[$i]:-}"
      [[ "$LOGS" =~ ^[1-9][0-9]*$ ]] || { echo "--logs takes a count of logs" >&2; exit 2; }
      [[ " ${PARTS[*]} " == *" named "* ]] || PARTS+=(named)
      ;;
    all) PARTS+=(distlog batch producer etcd nats failover catchup) ;;
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
[ "${#PARTS[@]}" -gt 0 ] || PARTS=(distlog batch producer etcd nats failover catchup)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
BATCH="${BATCH:-100}"
LATENCY_CONNECTIONS="${LATENCY_CONNECTIONS:-1 8}"
NATS_ASYNC_PENDING="${NATS_ASYNC_PENDING:-$CONNECTIONS}"
KILLS="${KILLS:-20}"
CATCHUP_BYTES="${CATCHUP_BYTES:-1073741824}"
BASE_PORT="${BASE_PORT:-21080}"

cd "$(dirname "$0")/.."
log() { printf '[cluster-load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ----- tools -------------------------------------------------------------
need=()
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
if want distlog || want batch || want producer || want etcd || want latency || want forward || want named; then command -v wrk >/dev/null || need+=(wrk); fi
if want etcd || want latency; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v etcdctl >/dev/null || need+=(etcd-client)
fi
if want nats; then
  command -v nats-server >/dev/null || need+=(nats-server)
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
fi
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
target="${CARGO_TARGET_DIR:-target}"
if want nats; then
  VENV="$target/tools/venv"
  if ! "$VENV/bin/python" -c 'import nats' 2>/dev/null; then
    log "installing nats-py into $VENV"
    mkdir -p "$target/tools"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q nats-py
  fi
fi
if [ -z "${DISTLOG:-}" ]; then
  log "building: cargo build --release --bin distlog"
  cargo build --release --bin distlog
  DISTLOG="$target/release/distlog"
fi

# ----- scratch space and cleanup ----------------------------------------
parent="${LOAD_DIR:-${TMPDIR:-/tmp}}"
case "$parent" in /dev/shm*)
  echo "LOAD_DIR under /dev/shm fills RAM; use a directory on disk" >&2
  exit 2
  ;;
esac
mkdir -p "$parent"
work="$(mktemp -d "$parent/distlog-cluster-load.XXXXXX")"
declare -A PIDS # name -> pid of every server this script started
stop_one() {    # stop_one NAME [SIGNAL]: TERM (or SIGNAL), then KILL after 10 s
  local name="$1" sig="${2:-TERM}" pid="${PIDS[$1]:-}"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
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

seconds() { # wrk's duration ("10s", "2m", "30") in seconds
  local n="${1//[^0-9]/}"
  case "$1" in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ----- bodies and wrk scripts -------------------------------------------
# ~1 KiB JSON, the same record scripts/load.sh and scripts/perf.sh post.
line='{"event":"load","pad":"'"$(head -c 1000 /dev/zero | tr '\0' 'x')"'"}'
RECORD_BYTES=$((${#line} + 1))
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
# One producer a wrk thread (run with a thread a connection): id load-<thread>, its
# sequence counting its requests from 0; the plain script has the same shape without them.
producer_setup='
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end
init = function(args)
  seq = 0
  producer = "load-" .. id
end'
cat >"$work/post-plain.lua" <<EOF
$producer_setup
request = function()
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, '$line')
end
$report
EOF
cat >"$work/post-producer.lua" <<EOF
$producer_setup
request = function()
  local r = wrk.format("POST", "/", {["Content-Type"] = "application/json", ["Producer-Id"] = producer,
    ["Producer-Seq"] = tostring(seq)}, '$line')
  seq = seq + 1
  return r
end
$report
EOF
# etcd: one key, a 1 KiB value (1024 x "x"), both base64 as the v3 JSON gateway wants.
etcd_key="$(printf 'bench-key' | base64 -w0)"
etcd_value="$(head -c 1024 /dev/zero | tr '\0' 'x' | base64 -w0)"
cat >"$work/etcd.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v3/kv/put"
wrk.body = '{"key":"$etcd_key","value":"$etcd_value"}'
wrk.headers["Content-Type"] = "application/json"
$report
EOF

# ----- results -------------------------------------------------------------
declare -A VAL=() UNIT=() NOTE=() CMD=() CPU=() P50=() P99=() STAGES=()
ROWS=()
HAVE_CPU=0
result() { # result NAME VALUE UNIT NOTE COMMAND
  VAL[$1]="$2"
  UNIT[$1]="$3"
  NOTE[$1]="$4"
  CMD[$1]="$5"
  ROWS+=("$1")
}

# CPU seconds (user + system, all threads) of a pid so far, and the machine's busy/iowait ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# cpu_during NAME OUT PID... -- COMMAND...: runs COMMAND (its output to the file OUT), then sets
# CPU[NAME] to each named server's CPU% (100% = one core) over the run, and the machine's busy and iowait.
cpu_during() {
  local name="$1" outfile="$2" hz
  shift 2
  hz="$(getconf CLK_TCK)"
  local names=()
  while [ "$1" != "--" ]; do
    names+=("$1")
    shift
  done
  shift
  declare -A before
  local n
  for n in "${names[@]}"; do before[$n]="$(cpu_ticks "${PIDS[$n]}")"; done
  local m0 t0 rc=0
  m0="$(machine_ticks)"
  t0="$(now_ms)"
  "$@" >"$outfile" 2>&1 || rc=$?
  local t1 m1 out=""
  t1="$(now_ms)"
  m1="$(machine_ticks)"
  for n in "${names[@]}"; do
    out+="$(awk -v a="${before[$n]}" -v b="$(cpu_ticks "${PIDS[$n]}")" -v hz="$hz" -v ms="$((t1 - t0))" -v n="$n" \
      'BEGIN { printf "%s %.0f%% ", n, (b - a) / hz * 100000 / ms }')"
  done
  out+="$(awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[3] - x[3]
    if (t > 0) printf "| machine busy %.0f%% iowait %.0f%% (of %d cores)", (y[1] - x[1]) * 100 / t, (y[2] - x[2]) * 100 / t, '"$(nproc)"' }')"
  CPU[$name]="$out"
  HAVE_CPU=1
  log "  cpu: $out"
  return "$rc"
}

# wrk_run NAME URL LUA PER_REQUEST UNIT NOTE SERVER_NAMES...: one wrk run; VAL is req/s x PER_REQUEST.
wrk_run() {
  local name="$1" url="$2" lua="$3" per="$4" unit="$5" note="$6" out="$work/wrk-$1.out"
  shift 6
  local cmd=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$lua" "$url")
  log "${cmd[*]}  ($name)"
  cpu_during "$name" "$out" "$@" -- timeout "$(($(seconds "$DURATION") + 60))" "${cmd[@]}" || {
    log "wrk failed for $name:"
    cat "$out" >&2
    exit 1
  }
  local r rps p50 p99 err
  r="$(grep '^RESULT' "$out")"
  rps="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$r")"
  p50="$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$r")"
  p99="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$r")"
  err="$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$r")"
  local val
  val="$(awk -v r="$rps" -v p="$per" 'BEGIN { printf "%.0f", r * p }')"
  P50[$name]="$p50"
  P99[$name]="$p99"
  result "$name" "$val" "$unit" "$(awk -v a="$p50" -v b="$p99" -v e="$err" -v n="$note" \
    'BEGIN { printf "p50 %.1f ms, p99 %.1f ms, errors %d%s", a / 1000, b / 1000, e, (n == "" ? "" : "; " n) }')" \
    "${cmd[*]//$work/\$work}"
  log "  $name: $val $unit (${NOTE[$name]})"
  if [ "$err" -gt 0 ]; then
    log "  $name: $err errors; wrk said:"
    sed -n '1,20p' "$out" >&2
  fi
}

# ----- distlog -----------------------------------------------------------
PORT="$BASE_PORT"
next_port() { PORT=$((PORT + 1)); }
# start_distlog NAME PORT [FLAG...]: data in $work/NAME, output in $work/NAME.out.
start_distlog() {
  local name="$1" port="$2"
  shift 2
  env -u RUST_LOG "$DISTLOG" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" "$@" \
    >>"$work/$name.out" 2>&1 &
  PIDS[$name]=$!
}
wait_http() { # wait_http NAME URL [SECONDS]: until URL answers 2xx
  local name="$1" url="$2" secs="${3:-60}"
  for _ in $(seq $((secs * 10))); do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      log "$name exited early; its output:"
      tail -20 "$work/$name.out" >&2 || true
      exit 1
    fi
    if curl -sf -o /dev/null --max-time 1 "$url"; then return 0; fi
    sleep 0.1
  done
  log "$name: $url did not answer within $secs s"
  tail -20 "$work/$name.out" >&2 || true
  exit 1
}
start_standalone() { # sets SOLO_URL
  next_port
  start_distlog solo "$PORT"
  SOLO_URL="http://127.0.0.1:$PORT"
  wait_http solo "$SOLO_URL/healthz"
}
CLUSTER_PORTS=()
CLUSTER_FLAGS=() # more flags for every node of the next start_cluster
PEERS=""
start_cluster() { # start_cluster TAG: nodes TAG1..TAG3, leader in LEADER_URL
  local tag="$1" i
  CLUSTER_PORTS=()
  for i in 1 2 3; do
    next_port
    CLUSTER_PORTS+=("$PORT")
  done
  PEERS="$(printf 'http://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")"
  PEERS="${PEERS%,}"
  for i in 1 2 3; do start_distlog "$tag$i" "${CLUSTER_PORTS[$((i - 1))]}" --peers "$PEERS" "${CLUSTER_FLAGS[@]}"; done
  for i in 1 2 3; do wait_http "$tag$i" "http://127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}/readyz" 60; done
  wait_leader "$tag"
}
# wait_leader TAG [EXCEPT_PORT]: a leader every live node agrees on, in LEADER_URL and LEADER_NAME.
wait_leader() {
  local tag="$1" except="${2:-}" i url leaders
  for _ in $(seq 300); do
    leaders=""
    for i in 1 2 3; do
      [ "${CLUSTER_PORTS[$((i - 1))]}" != "$except" ] || continue
      url="$(curl -sf --max-time 1 "http://127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}/cluster" | jq -r '.leader_url // empty' 2>/dev/null || true)"
      leaders+="${url:-none} "
    done
    url="${leaders%% *}"
    if [ "$url" != none ] && [ -z "$(tr ' ' '\n' <<<"$leaders" | grep -v -x -e "$url" -e '')" ]; then
      LEADER_URL="$url"
      for i in 1 2 3; do
        [ "http://127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}" != "$url" ] || LEADER_NAME="$tag$i"
      done
      return 0
    fi
    sleep 0.1
  done
  log "no leader that every node agrees on within 30 s: $leaders"
  exit 1
}
stop_cluster() { # stop_cluster TAG
  local i
  for i in 1 2 3 4; do stop_one "$1$i"; done
}

log "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; data under $work ($(df --output=source,fstype "$work" | tail -1 | tr -s ' '))"

if want distlog || want batch; then
  for part in distlog batch; do
    want "$part" || continue
    if [ "$part" = distlog ]; then lua="$work/post.lua" per=1 unit="records/s" what="POST / ~1 KiB JSON"; else
      lua="$work/batch.lua" per="$BATCH" unit="records/s" what="NDJSON batches of $BATCH"
    fi
    log "== $part: standalone distlog --fsync always, $what"
    start_standalone
    wrk_run "$part standalone" "$SOLO_URL" "$lua" "$per" "$unit" "" solo
    stop_one solo
    rm -rf "$work/solo"
    log "== $part: 3-node distlog cluster --fsync always, $what, to the leader"
    start_cluster "c$part"
    log "  leader $LEADER_URL ($LEADER_NAME)"
    wrk_run "$part cluster" "$LEADER_URL" "$lua" "$per" "$unit" "leader $LEADER_NAME" "c${part}1" "c${part}2" "c${part}3"
    curl -sf "$LEADER_URL/cluster" | jq -c '[.members[] | {id, voter, match_offset}]' >&2 || true
    stop_cluster "c$part"
    rm -rf "$work/c$part"[123]
  done
fi

# ----- idempotent producers -------------------------------------------------
if want producer; then
  threads_before="$THREADS"
  THREADS="$CONNECTIONS"
  log "== producer: standalone distlog --fsync always, POST / with and without producer headers"
  start_standalone
  wrk_run "plain standalone" "$SOLO_URL" "$work/post-plain.lua" 1 "records/s" "-t$CONNECTIONS" solo
  wrk_run "producer standalone" "$SOLO_URL" "$work/post-producer.lua" 1 "records/s" "-t$CONNECTIONS" solo
  stop_one solo
  rm -rf "$work/solo"
  log "== producer: 3-node distlog cluster --fsync always, the same to the leader"
  start_cluster cprod
  wrk_run "plain cluster" "$LEADER_URL" "$work/post-plain.lua" 1 "records/s" "-t$CONNECTIONS; leader $LEADER_NAME" cprod1 cprod2 cprod3
  wrk_run "producer cluster" "$LEADER_URL" "$work/post-producer.lua" 1 "records/s" "-t$CONNECTIONS; leader $LEADER_NAME" cprod1 cprod2 cprod3
  stop_cluster cprod
  rm -rf "$work/cprod"[123]
  THREADS="$threads_before"
fi

# ----- etcd ----------------------------------------------------------------
# start_etcd: three etcd nodes; the leader's client URL in etcd_leader, its name in etcd_leader_name.
start_etcd() {
  cports=() pports=() initial=""
  for i in 1 2 3; do
    next_port
    cports+=("$PORT")
    next_port
    pports+=("$PORT")
    initial+="e$i=http://127.0.0.1:$PORT,"
  done
  initial="${initial%,}"
  for i in 1 2 3; do
    c="${cports[$((i - 1))]}" p="${pports[$((i - 1))]}"
    etcd --name "e$i" --data-dir "$work/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$initial" --initial-cluster-token distlog-bench --initial-cluster-state new \
      --logger zap --log-outputs stderr --log-level warn >"$work/etcd$i.out" 2>&1 &
    PIDS[etcd$i]=$!
  done
  endpoints="$(printf 'http://127.0.0.1:%s,' "${cports[@]}")"
  endpoints="${endpoints%,}"
  for _ in $(seq 300); do
    if etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  etcd_leader="$(etcdctl --endpoints "$endpoints" endpoint status -w json |
    jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' | head -1)"
  [ -n "$etcd_leader" ] || {
    log "etcd has no leader; its output:"
    tail -5 "$work"/etcd*.out >&2
    exit 1
  }
  for i in 1 2 3; do [ "$etcd_leader" != "http://127.0.0.1:${cports[$((i - 1))]}" ] || etcd_leader_name="etcd$i"; done
  log "  leader $etcd_leader ($etcd_leader_name)"
  # One put through the gateway first: it must answer 200 with a header.
  curl -sf -H 'Content-Type: application/json' -d "{\"key\":\"$etcd_key\",\"value\":\"$etcd_value\"}" \
    "$etcd_leader/v3/kv/put" | jq -e .header.revision >/dev/null
}
stop_etcd() {
  for i in 1 2 3; do stop_one "etcd$i"; done
  rm -rf "$work"/etcd?
}
if want etcd; then
  log "== etcd $(etcd --version | awk '/etcd Version/ { print $3 }'): 3 nodes, PUT 1 KiB values via POST /v3/kv/put"
  start_etcd
  wrk_run "etcd put" "$etcd_leader" "$work/etcd.lua" 1 "puts/s" "leader $etcd_leader_name; v3 JSON gateway" etcd1 etcd2 etcd3
  stop_etcd
fi

# ----- NATS JetStream --------------------------------------------------------
if want nats; then
  log "== $(nats-server --version): 3 nodes, R3 file-storage stream, nats-py publishers"
  cports=() rports=() routes=""
  for i in 1 2 3; do
    next_port
    cports+=("$PORT")
    next_port
    rports+=("$PORT")
    routes+="nats-route://127.0.0.1:$PORT,"
  done
  routes="${routes%,}"
  for i in 1 2 3; do
    cat >"$work/nats$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${cports[$((i - 1))]}
jetstream { store_dir: "$work/nats$i" }
cluster {
  name: bench
  listen: 127.0.0.1:${rports[$((i - 1))]}
  routes: [${routes}]
}
EOF
    nats-server -c "$work/nats$i.conf" >"$work/nats$i.out" 2>&1 &
    PIDS[nats$i]=$!
  done
  urls="$(printf 'nats://127.0.0.1:%s,' "${cports[@]}")"
  urls="${urls%,}"
  nats_leader="$(timeout 120 "$VENV/bin/python" scripts/lib/nats_bench.py setup "$urls")"
  for i in 1 2 3; do [ "$nats_leader" != "nats://127.0.0.1:${cports[$((i - 1))]}" ] || nats_leader_name="nats$i"; done
  log "  stream BENCH (R3, file) leader $nats_leader ($nats_leader_name); publishing to it"
  secs="$(seconds "$DURATION")"
  for mode in sync async; do
    if [ "$mode" = sync ]; then inflight="$CONNECTIONS"; else inflight="$NATS_ASYNC_PENDING"; fi
    cmd=("$VENV/bin/python" scripts/lib/nats_bench.py "$mode" "$nats_leader" "$secs" "$inflight" 1024)
    log "${cmd[*]}"
    cpu_during "nats $mode" "$work/nats-$mode.out" nats1 nats2 nats3 -- timeout $((secs + 60)) "${cmd[@]}" || {
      log "nats $mode failed:"
      cat "$work/nats-$mode.out" >&2
      exit 1
    }
    r="$(grep '^RESULT' "$work/nats-$mode.out")"
    rate="$(sed -E 's/.*rate=([0-9.]+).*/\1/' <<<"$r")"
    result "nats $mode" "$(printf '%.0f' "$rate")" "acks/s" \
      "$inflight in flight, errors $(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$r"), client cpu $(sed -E 's/.*client_cpu_s=([0-9.]+).*/\1/' <<<"$r") s; ACKED FROM MEMORY (2.9: no fsync before ack)" \
      "${cmd[*]}"
    log "  nats $mode: $rate acks/s ($r)"
  done
  for i in 1 2 3; do stop_one "nats$i"; done
  rm -rf "$work"/nats?
fi

# ----- failover --------------------------------------------------------------
if want failover; then
  log "== failover: $KILLS x kill -9 of the leader of a 3-node cluster (default timeouts), time to a 201 via the new leader"
  start_cluster f
  printf '%s' "$line" >"$work/one.json"
  TIMES=()
  for k in $(seq "$KILLS"); do
    wait_leader f
    victim="$LEADER_NAME" vport="${LEADER_URL##*:}"
    t0="$(now_ms)"
    kill -KILL "${PIDS[$victim]}"
    { wait "${PIDS[$victim]}"; } 2>/dev/null || true # at once, or bash reports the kill
    unset "PIDS[$victim]"
    ok=""
    for attempt in $(seq 3000); do
      for p in "${CLUSTER_PORTS[@]}"; do
        [ "$p" != "$vport" ] || continue
        code="$(curl -s -L --max-time 1 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
          --data-binary "@$work/one.json" "http://127.0.0.1:$p/" || true)"
        if [ "$code" = 201 ]; then
          ok=1
          break 2
        fi
      done
      sleep 0.01
      [ $(($(now_ms) - t0)) -lt 30000 ] || break
    done
    t1="$(now_ms)"
    if [ -z "$ok" ]; then
      log "  kill $k: no write acknowledged within 30 s"
      TIMES+=(30000)
    else
      TIMES+=($((t1 - t0)))
      log "  kill $k: $victim killed, first 201 after $((t1 - t0)) ms"
    fi
    # Bring the victim back on its data and wait until the leader hears from all three.
    start_distlog "$victim" "$vport" --peers "$PEERS"
    wait_http "$victim" "http://127.0.0.1:$vport/readyz" 60
    for _ in $(seq 300); do
      wait_leader f
      if [ "$(curl -sf --max-time 1 "$LEADER_URL/cluster" | jq '[.members[] | select(.reachable == true)] | length')" = 3 ]; then break; fi
      sleep 0.1
    done
  done
  stop_cluster f
  sorted="$(printf '%s\n' "${TIMES[@]}" | sort -n)"
  pct() { awk -v p="$1" '{ a[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i] }' <<<"$sorted"; }
  fo_cmd="KILLS=$KILLS scripts/cluster-load.sh failover"
  result "failover p50" "$(pct 50)" "ms" "over $KILLS kills (nearest rank); all: $(tr '\n' ' ' <<<"$sorted")" "$fo_cmd"
  result "failover p99" "$(pct 99)" "ms" "target < 2000 ms" "$fo_cmd"
fi

# ----- catch-up --------------------------------------------------------------
if want catchup; then
  records=$(((CATCHUP_BYTES + RECORD_BYTES - 1) / RECORD_BYTES))
  log "== catch-up: $records records (~$((CATCHUP_BYTES / 1048576)) MiB), then a 4th node joins"
  start_cluster u
  for _ in $(seq 1000); do printf '%s\n' "$line"; done >"$work/fill.ndjson"
  filled=0 t0="$(now_ms)" shown="$t0"
  while [ "$filled" -lt "$records" ]; do
    n=$((records - filled < 1000 ? records - filled : 1000))
    if [ "$n" -lt 1000 ]; then head -n "$n" "$work/fill.ndjson" >"$work/fill-tail.ndjson"; f="$work/fill-tail.ndjson"; else f="$work/fill.ndjson"; fi
    last_record="$(curl -sf --max-time 120 -H 'Content-Type: application/x-ndjson' --data-binary "@$f" "$LEADER_URL/" | jq -r .last_offset)"
    filled=$((filled + n))
    if [ $(($(now_ms) - shown)) -ge 5000 ] || [ "$filled" -ge "$records" ]; then
      shown="$(now_ms)"
      log "  filled $filled/$records records, $(awk -v n="$filled" -v ms="$((shown - t0))" 'BEGIN { printf "%.0f records/s", n * 1000 / ms }')"
    fi
  done
  fill_ms=$(($(now_ms) - t0))
  last="$(curl -sf "$LEADER_URL/cluster" | jq -r .commit_offset)"
  log "  leader commit offset $last"
  next_port
  new_url="http://127.0.0.1:$PORT"
  t0="$(now_ms)"
  start_distlog u4 "$PORT" --peers "$PEERS"
  shown="$t0" caught=""
  while [ $(($(now_ms) - t0)) -lt 3600000 ]; do
    kill -0 "${PIDS[u4]}" 2>/dev/null || {
      log "the new node exited; its output:"
      tail -20 "$work/u4.out" >&2
      exit 1
    }
    m="$(curl -sf --max-time 2 "$LEADER_URL/cluster" | jq -r --arg u "$new_url" '.members[] | select(.url == $u) | "\(.match_offset // -1) \(.voter)"' 2>/dev/null || true)"
    mo="${m%% *}"
    if [ -n "$mo" ] && [ "$mo" != -1 ] && [ "$mo" -ge "$last" ]; then
      caught="$(now_ms)"
      break
    fi
    if [ $(($(now_ms) - shown)) -ge 2000 ]; then
      shown="$(now_ms)"
      log "  new node at offset ${mo:-none} of $last ($(awk -v n="${mo:-0}" -v ms="$((shown - t0))" 'BEGIN { if (n < 0) n = 0; printf "%.0f records/s", n * 1000 / ms }'))${m:+, voter ${m##* }}"
    fi
    sleep 0.2
  done
  [ -n "$caught" ] || {
    log "the new node did not catch up within an hour"
    exit 1
  }
  ms=$((caught - t0))
  rate="$(awk -v n="$records" -v ms="$ms" 'BEGIN { printf "%.0f", n * 1000 / ms }')"
  mibs="$(awk -v n="$records" -v b="$RECORD_BYTES" -v ms="$ms" 'BEGIN { printf "%.1f", n * b / 1048576 * 1000 / ms }')"
  log "  caught up: $records records in $ms ms: $rate records/s, $mibs MiB/s of records"
  # The new node must serve the last record itself (followers serve committed reads).
  got="$(curl -s -o /dev/null -w '%{http_code}' "$new_url/$last_record")"
  log "  GET $new_url/$last_record (the last record filled) on the new node: $got; its data directory: $(du -sh "$work/u4" | cut -f1), the leader's: $(du -sh "$work/$LEADER_NAME" | cut -f1)"
  result "catch-up" "$rate" "records/s" "$records records of $RECORD_BYTES B ($(awk -v n="$records" -v b="$RECORD_BYTES" 'BEGIN { printf "%.0f", n * b / 1048576 }') MiB) in $ms ms from node start = $mibs MiB/s; fill ran at $(awk -v n="$records" -v ms="$fill_ms" 'BEGIN { printf "%.0f", n * 1000 / ms }') records/s (curl, batches of 1000)" \
    "CATCHUP_BYTES=$CATCHUP_BYTES scripts/cluster-load.sh catchup"
  stop_cluster u
fi


# ----- latency -------------------------------------------------------------
# stage_totals URL: "stage sum_seconds count" for each stage of distlog_raft_stage_seconds.
stage_totals() {
  curl -sf --max-time 5 "$1/metrics" | awk '
    /^distlog_raft_stage_seconds_(sum|count)\{/ {
      match($0, /stage="[^"]+"/); st = substr($0, RSTART + 7, RLENGTH - 8)
      if ($0 ~ /_sum\{/) s[st] = $NF; else c[st] = $NF
    }
    END { for (k in s) print k, s[k], c[k] }'
}
# stage_means BEFORE AFTER WHO: the mean of each stage between two stage_totals, in the order
# of a write's path (the leader's milestones are timed from the write's proposal).
STAGE_ORDER="queued written sent acknowledged applied commit log_write log_sync append_rpc peer_append"
stage_means() {
  awk -v who="$3" -v order="$STAGE_ORDER" 'NR == FNR { s0[$1] = $2; c0[$1] = $3; next }
    { n = $3 - c0[$1]; if (n > 0) { mean[$1] = ($2 - s0[$1]) / n * 1e6; count[$1] = n } }
    END {
      k = split(order, names, " ")
      for (i = 1; i <= k; i++) if (names[i] in mean)
        printf "    %-8s %-12s mean %8.1f us over %d\n", who, names[i], mean[names[i]], count[names[i]]
    }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}
# stage_mean MEANS WHO STAGE: one mean from stage_means' lines (empty if absent).
stage_mean() { awk -v who="$2" -v st="$3" '$1 == who && $2 == st { print $4 }' <<<"$1"; }
if want latency; then
  saved_c="$CONNECTIONS" saved_t="$THREADS"
  THREADS=1
  for CONNECTIONS in $LATENCY_CONNECTIONS; do
    log "== latency, $CONNECTIONS connection(s): standalone, 3-node cluster, etcd"
    start_standalone
    wrk_run "c$CONNECTIONS standalone" "$SOLO_URL" "$work/post.lua" 1 "records/s" "" solo
    stop_one solo
    rm -rf "$work/solo"
    start_cluster "l$CONNECTIONS"
    follower_url=""
    for port in "${CLUSTER_PORTS[@]}"; do
      [ "http://127.0.0.1:$port" = "$LEADER_URL" ] || follower_url="http://127.0.0.1:$port"
    done
    lead0="$(stage_totals "$LEADER_URL")" foll0="$(stage_totals "$follower_url")"
    wrk_run "c$CONNECTIONS cluster" "$LEADER_URL" "$work/post.lua" 1 "records/s" "leader $LEADER_NAME" \
      "l${CONNECTIONS}1" "l${CONNECTIONS}2" "l${CONNECTIONS}3"
    STAGES[$CONNECTIONS]="$(stage_means "$lead0" "$(stage_totals "$LEADER_URL")" leader)
$(stage_means "$foll0" "$(stage_totals "$follower_url")" follower)"
    log "  stages (means; the leader's queued..commit timed from each write's proposal):"
    printf '%s\n' "${STAGES[$CONNECTIONS]}" >&2
    sent="$(stage_mean "${STAGES[$CONNECTIONS]}" leader sent)"
    acked="$(stage_mean "${STAGES[$CONNECTIONS]}" leader acknowledged)"
    peer="$(stage_mean "${STAGES[$CONNECTIONS]}" follower peer_append)"
    if [ -n "$sent" ] && [ -n "$acked" ] && [ -n "$peer" ]; then
      awk -v s="$sent" -v a="$acked" -v p="$peer" 'BEGIN {
        printf "    network, HTTP and connection tasks, both ways (acknowledged - sent - peer_append): %.1f us\n", a - s - p }' >&2
    fi
    stop_cluster "l$CONNECTIONS"
    rm -rf "$work/l$CONNECTIONS"[123]
    start_etcd
    wrk_run "c$CONNECTIONS etcd" "$etcd_leader" "$work/etcd.lua" 1 "puts/s" "leader $etcd_leader_name" etcd1 etcd2 etcd3
    stop_etcd
  done
  CONNECTIONS="$saved_c" THREADS="$saved_t"
fi

# ----- forwarded writes ------------------------------------------------------
if want forward; then
  saved_c="$CONNECTIONS" saved_t="$THREADS"
  THREADS=1
  CLUSTER_FLAGS=(--forward-writes)
  start_cluster fw
  CLUSTER_FLAGS=()
  follower_url="" follower_name=""
  for i in 1 2 3; do
    url="http://127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}"
    [ "$url" = "$LEADER_URL" ] || { follower_url="$url"; follower_name="fw$i"; }
  done
  log "== forward: 3-node cluster --forward-writes, leader $LEADER_URL ($LEADER_NAME), follower $follower_url ($follower_name)"
  for CONNECTIONS in $LATENCY_CONNECTIONS; do
    wrk_run "c$CONNECTIONS to leader" "$LEADER_URL" "$work/post.lua" 1 "records/s" "leader $LEADER_NAME" fw1 fw2 fw3
    wrk_run "c$CONNECTIONS via follower" "$follower_url" "$work/post.lua" 1 "records/s" \
      "follower $follower_name forwards to $LEADER_NAME" fw1 fw2 fw3
  done
  stop_cluster fw
  rm -rf "$work/fw"[123]
  CONNECTIONS="$saved_c" THREADS="$saved_t"
fi

# ----- named logs ------------------------------------------------------------
# wrk_logs NAME UNIT NOTE SERVERS -- URL...: one wrk a URL at once (CONNECTIONS split among them);
# VAL is the sum of their rates, the note each one's.
wrk_logs() {
  local name="$1" unit="$2" note="$3" servers=() urls=() each
  shift 3
  while [ "$1" != "--" ]; do servers+=("$1"); shift; done
  shift
  urls=("$@")
  each=$((CONNECTIONS / ${#urls[@]}))
  [ "$each" -ge 1 ] || each=1
  local script="$work/wrk-logs.sh" k=0
  {
    echo "set -e"
    for u in "${urls[@]}"; do
      echo "wrk -t1 -c$each -d$DURATION --timeout 10s --latency -s '$work/post.lua' '$u' >'$work/wrk-log-$k.out' 2>&1 &"
      k=$((k + 1))
    done
    echo "wait"
  } >"$script"
  log "${#urls[@]} x wrk -t1 -c$each -d$DURATION ($name): ${urls[*]}"
  cpu_during "$name" "$work/wrk-$name.out" "${servers[@]}" -- timeout "$(($(seconds "$DURATION") + 60))" bash "$script"
  local total=0 parts="" rps
  for ((k = 0; k < ${#urls[@]}; k++)); do
    rps="$(grep '^RESULT' "$work/wrk-log-$k.out" | sed -E 's/.*rps=([0-9.]+).*/\1/')"
    total="$(awk -v a="$total" -v b="${rps:-0}" 'BEGIN { printf "%.0f", a + b }')"
    parts+="$(printf '%.0f ' "${rps:-0}")"
  done
  result "$name" "$total" "$unit" "$note; each: $parts" "$(cat "$script" | grep '^wrk' | sed "s|$work|\$work|g" | tr '\n' ';')"
  log "  $name: $total $unit (each: $parts)"
}
# log_leader URL NAME: the URL of named log NAME's group leader, asked of node URL.
log_leader() {
  local url="$1" name="$2" leader=""
  for _ in $(seq 100); do
    leader="$(curl -sf --max-time 2 -L "$url/logs/$name" | jq -r '.leader // empty' 2>/dev/null || true)"
    [ -z "$leader" ] || { echo "$leader"; return 0; }
    sleep 0.1
  done
  log "named log $name has no leader"
  exit 1
}
if want named; then
  log "== named: 3-node distlog cluster --fsync always, POST / ~1 KiB JSON: the default log, then named logs with 3 replicas"
  start_cluster cn
  log "  cluster group's leader $LEADER_URL ($LEADER_NAME)"
  wrk_run "default log" "$LEADER_URL" "$work/post.lua" 1 "records/s" "leader $LEADER_NAME" cn1 cn2 cn3
  # Created first, all of them: placement spreads their first replicas (which lead unless an
  # election decides otherwise) over the nodes; the first one is the single log measured.
  urls=()
  for ((k = 1; k <= LOGS; k++)); do
    curl -sf -X PUT "$LEADER_URL/logs/bench-$k" >/dev/null
    urls+=("$(log_leader "$LEADER_URL" "bench-$k")/logs/bench-$k/")
  done
  wrk_run "named log" "${urls[0]}" "$work/post.lua" 1 "records/s" "its leader ${urls[0]%/logs/*}" cn1 cn2 cn3
  log "  $LOGS logs' leaders: $(printf '%s\n' "${urls[@]}" | sed -E 's|/logs/.*||' | sort | uniq -c | tr -s ' \n' ' ')"
  wrk_logs "$LOGS named logs" "records/s" "leaders on $(printf '%s\n' "${urls[@]}" | sed -E 's|/logs/.*||' | sort -u | wc -l) node(s)" cn1 cn2 cn3 -- "${urls[@]}"
  stop_cluster cn
  rm -rf "$work/cn"[123]
fi

# ----- named logs at rest -------------------------------------------------------
# cpu_mean NAME: the mean of CPU[NAME]'s per-node percentages.
cpu_mean() { grep -oE '[0-9]+%' <<<"${CPU[$1]%%|*}" | tr -d % | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n; else print 0 }'; }
# all_led URL COUNT: until every one of COUNT idle-K logs has a leader (asked of node URL).
all_led() {
  local url="$1" count="$2" led
  for _ in $(seq 1200); do
    led="$(curl -sf --max-time 5 "$url/logs" | jq '[.logs[] | select(.name | startswith("idle-"))
      | select(.leader != null)] | length' 2>/dev/null || echo 0)"
    [ "$led" -lt "$count" ] || return 0
    sleep 0.1
  done
  log "only $led of $count logs have a leader after 120 s"
  return 1
}
# create_idle_log NAME: PUT /logs/NAME, tried up to 5 times; on the last failure the answer and
# the nodes' last lines are printed and the run stops.
create_idle_log() {
  local name="$1" answer
  for try in 1 2 3 4 5; do
    answer="$(curl -s -L --max-time 30 -X PUT -w ' HTTP %{http_code}' "$LEADER_URL/logs/$name" || true)"
    case "$answer" in *"HTTP 200" | *"HTTP 201") return 0 ;; esac
    log "  PUT /logs/$name, try $try: $answer"
    sleep 1
  done
  for i in 1 2 3; do log "ci$i's last lines:"; tail -5 "$work/ci$i.out" >&2 || true; done
  exit 1
}
# all_quiet URL COUNT: until the node at URL has COUNT quiet groups (Raft timers off for want of
# traffic, `distlog_raft_quiet_groups`), at most 120 s.
all_quiet() {
  local url="$1" count="$2" quiet=0
  for _ in $(seq 1200); do
    quiet="$(curl -sf --max-time 5 "$url/metrics" | awk '/^distlog_raft_quiet_groups / { printf "%d", $2 }' || true)"
    [ "${quiet:-0}" -lt "$count" ] || return 0
    sleep 0.1
  done
  log "only ${quiet:-0} of $count groups are quiet at $url after 120 s"
  return 1
}
threads_of() { ls "/proc/${PIDS[$1]}/task" 2>/dev/null | wc -l; }
fds_of() { ls "/proc/${PIDS[$1]}/fd" 2>/dev/null | wc -l; }

if want idle; then
  log "== idle: 3-node distlog cluster, CPU at rest with 0 named logs, then with $IDLE_LOGS (3 replicas)"
  start_cluster ci
  cpu_during "idle, 0 logs" "$work/idle-0.out" ci1 ci2 ci3 -- sleep "$IDLE_SECONDS"
  result "idle, 0 logs" "$(cpu_mean "idle, 0 logs")" "% a node" "over ${IDLE_SECONDS} s" "sleep $IDLE_SECONDS"
  t0="$(now_ms)"
  for ((k = 1; k <= IDLE_LOGS; k++)); do
    create_idle_log "idle-$k"
    [ $((k % 50)) != 0 ] || log "  created $k of $IDLE_LOGS logs ($(threads_of ci1) threads, $(fds_of ci1) open files on ci1)"
  done
  for port in "${CLUSTER_PORTS[@]}"; do all_led "http://127.0.0.1:$port" "$IDLE_LOGS"; done
  result "create $IDLE_LOGS logs" "$((($(now_ms) - t0)))" "ms" "one PUT at a time, until every node sees each led" "curl -X PUT \$url/logs/idle-K"
  t0="$(now_ms)"
  for port in "${CLUSTER_PORTS[@]}"; do all_quiet "http://127.0.0.1:$port" "$IDLE_LOGS" || true; done
  result "quiet, $IDLE_LOGS logs" "$((($(now_ms) - t0)))" "ms" "after the last create, until every node has every group quiet" "GET /metrics"
  cpu_during "idle, $IDLE_LOGS logs" "$work/idle-n.out" ci1 ci2 ci3 -- sleep "$IDLE_SECONDS"
  result "idle, $IDLE_LOGS logs" "$(cpu_mean "idle, $IDLE_LOGS logs")" "% a node" "over ${IDLE_SECONDS} s" "sleep $IDLE_SECONDS"
  for i in 1 2 3; do stop_one "ci$i"; done
  t0="$(now_ms)"
  for i in 1 2 3; do start_distlog "ci$i" "${CLUSTER_PORTS[$((i - 1))]}" --peers "$PEERS"; done
  for port in "${CLUSTER_PORTS[@]}"; do all_led "http://127.0.0.1:$port" "$IDLE_LOGS"; done
  result "restart, $IDLE_LOGS logs" "$((($(now_ms) - t0)))" "ms" "every node stopped, started; until each sees every log led" "kill; distlog serve"
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$work"/ci[123].out "$KEEP_LOGS"/; fi
  stop_cluster ci
  rm -rf "$work/ci"[123]
fi

# ----- report ------------------------------------------------------------
ratio() { # ratio A B: VAL[A] / VAL[B], or - when either did not run
  if [ -n "${VAL[$1]:-}" ] && [ -n "${VAL[$2]:-}" ]; then
    awk -v a="${VAL[$1]}" -v b="${VAL[$2]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
  else echo "-"; fi
}
echo
echo "cluster-load: $(nproc) cores, loopback, data under $parent ($(df --output=source,fstype "$work" | tail -1 | tr -s ' ')), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION; distlog --fsync always (the default), default timeouts; RECORD ~1 KiB JSON ($RECORD_BYTES B a line)"
printf '%-20s %12s %-10s %s\n' run value unit notes
for n in "${ROWS[@]}"; do printf '%-20s %12s %-10s %s\n' "$n" "${VAL[$n]}" "${UNIT[$n]}" "${NOTE[$n]}"; done
echo
echo "ratios (same run):"
printf '  %-48s %8s  %s\n' "cluster POST / standalone POST" "$(ratio 'distlog cluster' 'distlog standalone')" "target >= 0.35x"
printf '  %-48s %8s  %s\n' "cluster batch / standalone batch (records/s)" "$(ratio 'batch cluster' 'batch standalone')" "target >= 0.5x"
printf '  %-48s %8s  %s\n' "standalone POST, producer headers / without" "$(ratio 'producer standalone' 'plain standalone')" "target >= 0.95x"
printf '  %-48s %8s  %s\n' "cluster POST, producer headers / without" "$(ratio 'producer cluster' 'plain cluster')" "target >= 0.95x"
printf '  %-48s %8s  %s\n' "cluster POST / etcd put" "$(ratio 'distlog cluster' 'etcd put')" "target >= 3x (equal durability)"
printf '  %-48s %8s  %s\n' "cluster POST / NATS R3 sync publish" "$(ratio 'distlog cluster' 'nats sync')" "target >= 1.5x (NATS acks from memory)"
printf '  %-48s %8s  %s\n' "cluster POST / NATS R3 async publish" "$(ratio 'distlog cluster' 'nats async')" "target >= 1.5x (NATS acks from memory)"
printf '  %-48s %8s  %s\n' "cluster batch records/s / NATS R3 async" "$(ratio 'batch cluster' 'nats async')" "(for reference)"
printf '  %-48s %8s  %s\n' "named log (3 replicas) / default log" "$(ratio 'named log' 'default log')" "target >= 0.95x"
printf '  %-48s %8s  %s\n' "$LOGS named logs at once / one named log" "$(ratio "$LOGS named logs" 'named log')" "target >= 1x (on 2 cores)"
if [ -n "${VAL[idle, $IDLE_LOGS logs]:-}" ]; then
  printf '  %-48s %8s  %s\n' "idle CPU a named log costs a node" \
    "$(awk -v a="${VAL[idle, $IDLE_LOGS logs]}" -v b="${VAL[idle, 0 logs]}" -v n="$IDLE_LOGS" 'BEGIN { printf "%.3f%%", (a - b) / n }')" \
    "x 1,000 = $(awk -v a="${VAL[idle, $IDLE_LOGS logs]}" -v b="${VAL[idle, 0 logs]}" -v n="$IDLE_LOGS" 'BEGIN { printf "%.0f%%", (a - b) / n * 1000 }') of a core (target < 5%)"
fi
p50_ratio() { # p50_ratio A B: P50[A] / P50[B], or -
  if [ -n "${P50[$1]:-}" ] && [ -n "${P50[$2]:-}" ]; then
    awk -v a="${P50[$1]}" -v b="${P50[$2]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
  else echo "-"; fi
}
for c in $LATENCY_CONNECTIONS; do
  [ -n "${VAL[c$c cluster]:-}" ] || continue
  printf '  %-48s %8s  %s\n' "c$c cluster p50 / standalone p50" "$(p50_ratio "c$c cluster" "c$c standalone")" "$([ "$c" = 1 ] && echo "target <= 2.5x")"
  printf '  %-48s %8s  %s\n' "c$c cluster / standalone (records/s)" "$(ratio "c$c cluster" "c$c standalone")" "$([ "$c" = 8 ] && echo "target >= 0.5x")"
  printf '  %-48s %8s  %s\n' "c$c cluster / etcd put" "$(ratio "c$c cluster" "c$c etcd")" ""
done
p99_ratio() { # p99_ratio A B: P99[A] / P99[B], or -
  if [ -n "${P99[$1]:-}" ] && [ -n "${P99[$2]:-}" ]; then
    awk -v a="${P99[$1]}" -v b="${P99[$2]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
  else echo "-"; fi
}
for c in $LATENCY_CONNECTIONS; do
  [ -n "${VAL[c$c via follower]:-}" ] || continue
  printf '  %-48s %8s  %s\n' "c$c via follower / to leader (records/s)" "$(ratio "c$c via follower" "c$c to leader")" "(--forward-writes)"
  printf '  %-48s %8s\n' "c$c via follower p50 / to leader p50" "$(p50_ratio "c$c via follower" "c$c to leader")"
  printf '  %-48s %8s\n' "c$c via follower p99 / to leader p99" "$(p99_ratio "c$c via follower" "c$c to leader")"
done
if [ "${#STAGES[@]}" -gt 0 ]; then
  echo
  echo "where the cluster's write time went (mean of each stage, src/cluster/stages.rs):"
  for c in "${!STAGES[@]}"; do echo "  $c connection(s):"; printf '%s\n' "${STAGES[$c]}"; done
fi
if [ "$HAVE_CPU" = 1 ]; then
  echo
  echo "CPU during each load run (from /proc; 100% = one core):"
  for n in "${ROWS[@]}"; do [ -z "${CPU[$n]:-}" ] || printf '  %-20s %s\n' "$n" "${CPU[$n]}"; done
fi
echo
echo "commands (\$work = the run's data directory; the lua scripts are written by this script):"
for n in "${ROWS[@]}"; do printf '  %-20s %s\n' "$n" "${CMD[$n]}"; done
