#!/usr/bin/env bash
# `promtool check metrics` against the /metrics of a real leader and a real
# follower after some traffic (appends, reads, a few errors, replication).
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
caught_up() { curl -fsS "$1/status" | grep -q '"next_offset":24[,}]'; }
wait_for "the follower to catch up" 30 caught_up "$follower"
curl -fsS -o /dev/null "$follower/0"

failed=0
for node in leader follower; do
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
log "done in $(($(date +%s) - started)) s"
exit "$failed"
