#!/usr/bin/env bash
# Explores every interleaving of the loom model of the log's reader/writer/cut
# protocol (tests/storage/loom_protocol.rs). The test suite runs the same models
# with a preemption bound; this runs them unbounded, which takes several
# minutes per model in a debug build. Prints each model's execution count.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
echo "[loom $(date +%H:%M:%S)] exploring every interleaving (LOOM_EXHAUSTIVE=1)" >&2
LOOM_EXHAUSTIVE=1 cargo test --release --test storage loom_protocol:: -- --nocapture --test-threads 2 2>&1 |
  grep -E "executions|^test |test result"
echo "[loom $(date +%H:%M:%S)] done in $(($(date +%s) - started)) s" >&2
