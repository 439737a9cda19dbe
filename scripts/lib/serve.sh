# Shared by scripts that test a real distlog process: build or find the
# binary, start nodes on ephemeral ports in a temporary directory, stop them
# (by their own pids) and clean up on exit. Source it; it sets `root`,
# `work` and the function `start_node`.
#
#   DISTLOG_BIN=/path/to/distlog   use this binary instead of building one
#   CARGO_TARGET_DIR               where cargo builds (default: ./target)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d "${TMPDIR:-/tmp}/distlog-script.XXXXXX")"
started_pids=()

stop_nodes() {
  local pid
  for pid in "${started_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_nodes EXIT

distlog_bin() {
  if [ -n "${DISTLOG_BIN:-}" ]; then
    echo "$DISTLOG_BIN"
    return
  fi
  (cd "$root" && cargo build --quiet --bin distlog) >&2
  echo "$target_dir/debug/distlog"
}

# start_node NAME [FLAG...]: starts `distlog serve` with its data in
# $work/NAME, waits for its "serving" line, and sets NODE_URL.
start_node() {
  local name="$1"
  shift
  local out="$work/$name.log"
  "$bin" serve --listen 127.0.0.1:0 --log-format json --data-dir "$work/$name" "$@" >"$out" 2>&1 &
  started_pids+=("$!")
  local addr="" i
  for i in $(seq 1 200); do
    addr="$(sed -n 's/.*"message":"distlog is serving".*"addr":"\([^"]*\)".*/\1/p; s/.*"addr":"\([^"]*\)".*"message":"distlog is serving".*/\1/p' "$out" | head -1)"
    [ -n "$addr" ] && break
    kill -0 "${started_pids[-1]}" 2>/dev/null || { cat "$out" >&2; echo "$name did not start" >&2; return 1; }
    sleep 0.05
  done
  [ -n "$addr" ] || { cat "$out" >&2; echo "$name printed no serving line" >&2; return 1; }
  NODE_URL="http://$addr"
}

# wait_for NAME SECONDS COMMAND...: reruns COMMAND until it succeeds.
wait_for() {
  local what="$1" seconds="$2" i
  shift 2
  for i in $(seq 1 $((seconds * 20))); do
    "$@" && return 0
    sleep 0.05
  done
  echo "timed out waiting for $what" >&2
  return 1
}
