#!/usr/bin/env bash
# Issue 21's reads-by-time measurement: the from_timestamp lookup
# (Log::offset_at_time) on a log of 1 KiB records at 100 MiB and at 1 GiB,
# with the plain from= read on the same log as the baseline, in one run:
#
#   scripts/time-lookup.sh
#
# Knobs (environment, passed to benches/by_time.rs): LOOKUPS (20000 calls a
# row), SEGMENT_MIB (256), SIZES_MIB (100,1024), DISTLOG_BENCH_DIR (where the
# log is written; it needs the largest size free). Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
exec cargo bench --bench by_time
