#!/usr/bin/env bash
# `promtool check metrics` against the /metrics of a real leader, a real
# follower and a one-node cluster after some traffic (appends, reads, a few
# errors, replication, Raft); then `promtool check rules` and `promtool test
# rules` on deploy/monitoring/, whose rules and dashboard may name only
# metrics that a page above shows or the source defines.
# Fails on any problem promtool reports (missing HELP, bad names, ...).
#
#   scripts/promtool.sh                        # builds the debug binary first
#   DISTLOG_BIN=target/release/distlog scripts/promtool.sh
#
# promtool comes from the PATH, or from Debian's `prometheus` package: the
# .deb is downloaded with apt-get and extracted (not installed) into
# $CARGO_TARGET_DIR/tools (default target/tools), once.
set -euo pipefail
source "$(dirname "$0")/lib/serve.sh"

log() { printf '[promtool %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

find_promtool() {
  if command -v promtool >/dev/null; then
    command -v promtool
    return
  fi
  local tools="$target_dir/tools/prometheus-deb"
  if [ ! -x "$tools/usr/bin/promtool" ]; then
    log "downloading Debian's prometheus package for promtool"
    local dl="$work/deb"
    mkdir -p "$dl"
    (cd "$dl" && apt-get download prometheus >/dev/null 2>&1) ||
      { apt-get update -qq >/dev/null && (cd "$dl" && apt-get download prometheus >/dev/null); }
    rm -rf "$tools"
    mkdir -p "$tools"
    dpkg-deb -x "$dl"/prometheus_*.deb "$tools"
  fi
  echo "$tools/usr/bin/promtool"
}

started=$(date +%s)
promtool="$(find_promtool)"
log "$("$promtool" --version 2>&1 | head -1)"
bin="$(distlog_bin)"

start_node leader --fsync always
leader="$NODE_URL"
start_node follower --follow "$leader"
follower="$NODE_URL"
log "leader $leader, follower $follower"

# Traffic that touches every family: appends (JSON, NDJSON, bytes), reads,
# errors, replication.
for i in $(seq 1 20); do
  curl -fsS -o /dev/null -d "{\"i\":$i}" "$leader/"
done
curl -fsS -o /dev/null -H 'Content-Type: application/x-ndjson' --data-binary $'1\n2\n3\n' "$leader/"
curl -fsS -o /dev/null -H 'Content-Type: application/octet-stream' --data-binary 'raw' "$leader/"
curl -fsS -o /dev/null "$leader/?from=0&limit=5"
curl -sS -o /dev/null "$leader/999"
curl -sS -o /dev/null "$leader/no/such/route"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cluster="http://127.0.0.1:$port"
"$bin" serve --listen "127.0.0.1:$port" --log-format json --data-dir "$work/cluster" --peers "$cluster" \
  >"$work/cluster.log" 2>&1 &
started_pids+=("$!")
ready() { curl -fsS -o /dev/null "$1/readyz" 2>/dev/null; }
wait_for "the one-node cluster to elect itself" 30 ready "$cluster"
for i in $(seq 1 5); do
  curl -fsS -o /dev/null -d "{\"i\":$i}" "$cluster/"
done
caught_up() { curl -fsS "$1/status" | grep -q '"next_offset":24[,}]'; }
wait_for "the follower to catch up" 30 caught_up "$follower"
curl -fsS -o /dev/null "$follower/0"

failed=0
for node in leader follower cluster; do
  url="${!node}"
  curl -fsS "$url/metrics" >"$work/$node.metrics"
  if "$promtool" check metrics <"$work/$node.metrics" >"$work/$node.check" 2>&1; then
    log "$node: promtool check metrics: ok ($(grep -c '^# TYPE' "$work/$node.metrics") families)"
  else
    status=$?
    log "$node: promtool check metrics exited $status:"
    cat "$work/$node.check" >&2
    failed=1
  fi
done

# The alert rules and the dashboard (deploy/monitoring/).
monitoring="$(dirname "$0")/../deploy/monitoring"
if "$promtool" check rules "$monitoring/alerts.yaml" >"$work/rules.check" 2>&1 &&
  (cd "$monitoring" && "$promtool" test rules alerts.test.yaml) >>"$work/rules.check" 2>&1; then
  log "deploy/monitoring: promtool check rules, test rules: ok"
else
  log "deploy/monitoring: promtool check rules or test rules failed:"
  cat "$work/rules.check" >&2
  failed=1
fi
# Names a page shows (histograms by family name) or the source defines (per-peer series need
# peers, which the one-node cluster above has none of).
{
  cat "$work"/*.metrics | grep -v '^#' | grep -oE '^[a-z_]+' | sed -E 's/_(bucket|sum|count)$//'
  grep -rhoE '"(distlog|process)_[a-z_]+"' "$(dirname "$0")/../src" | tr -d '"'
} | sort -u >"$work/known.names"
grep -hoE '\b(distlog|process)_[a-z_]+' "$monitoring/alerts.yaml" "$monitoring/grafana-dashboard.json" |
  sed -E 's/_(bucket|sum|count)$//' | sort -u >"$work/used.names"
unknown="$(comm -23 "$work/used.names" "$work/known.names")"
if [ -n "$unknown" ]; then
  log "deploy/monitoring names metrics no node has: $unknown"
  failed=1
else
  log "deploy/monitoring: all $(wc -l <"$work/used.names") metric names exist"
fi
log "done in $(($(date +%s) - started)) s"
exit "$failed"
