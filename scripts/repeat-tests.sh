#!/usr/bin/env bash
# Runs test binaries N times in a row and counts, per test, how often each
# failed: a flaky test is a failing test. Prints a table and keeps the output
# of failed runs under $OUT (default /tmp/repeat-tests).
#
#   scripts/repeat-tests.sh N BINARY [ARGS...]
#   e.g. scripts/repeat-tests.sh 20 target/debug/deps/cluster-<hash>
#
# Run it while the machine is loaded (a build, a CPU hog, or a second copy of
# itself) to see the races a quiet machine hides.
set -uo pipefail
runs=${1:?how many runs}
bin=${2:?which test binary}
shift 2
out=${OUT:-/tmp/repeat-tests}
mkdir -p "$out"
name=$(basename "$bin")
declare -A failed
failed_runs=0
started=$(date +%s)
for i in $(seq 1 "$runs"); do
  log="$out/$name.run$i.log"
  t0=$(date +%s)
  if "$bin" "$@" >"$log" 2>&1; then
    status=ok
    rm -f "$log"
  else
    status=FAILED
    failed_runs=$((failed_runs + 1))
    while read -r test; do
      failed[$test]=$(( ${failed[$test]:-0} + 1 ))
    done < <(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/')
  fi
  echo "[$(date +%H:%M:%S)] $name run $i/$runs: $status in $(( $(date +%s) - t0 )) s" >&2
done
echo "$name: $failed_runs of $runs runs failed ($(( $(date +%s) - started )) s)"
for test in "${!failed[@]}"; do
  echo "  ${failed[$test]} x $test"
done
