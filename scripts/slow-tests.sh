#!/usr/bin/env bash
# The cluster tests too slow for every CI run (each 10-20 s of elections, restarts, partitions
# and checkers; together about 5 minutes of a 2-core machine's CI): `#[ignore = "slow ..."]` in
# tests/cluster/, run here. The fault campaigns (`randomized_fault_schedules`, the 5-node
# named-log test) have their own knobs and are left to their own commands (tests/cluster/faults.rs,
# tests/cluster/named_logs.rs).
#
#   scripts/slow-tests.sh [LIBTEST ARGS...]    e.g. --test-threads=1, or a name filter
#
# Data directories go to a tmpfs where there is one, as in CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=""
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
  tmp=$(mktemp -d /dev/shm/distlog-slow-tests.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
fi
start=$(date +%s)
TMPDIR="${tmp:-${TMPDIR:-/tmp}}" cargo test --test cluster -- --ignored \
  --skip randomized_fault_schedules --skip five_nodes_ten_named_logs "$@"
echo "slow tests: done in $(($(date +%s) - start)) s"
