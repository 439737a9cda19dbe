#!/usr/bin/env bash
# Raw disk numbers to judge the log's against, with fio:
#   - sequential write bandwidth: 1 MiB writes, 2 GiB, one fsync at the end;
#   - fdatasync latency: 4 KiB writes, each followed by fdatasync (what one
#     `--fsync always` append costs at best).
#
#   scripts/disk.sh                 # in a temporary directory under $TMPDIR (or /tmp)
#   DISK_DIR=/data scripts/disk.sh  # on the filesystem the log will live on
#
# Installs fio with apt-get if it is missing. Each run is bounded in time.
set -euo pipefail

log() { printf '[disk %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v fio >/dev/null; then
  log "installing fio"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fio >/dev/null
fi

parent="${DISK_DIR:-${TMPDIR:-/tmp}}"
mkdir -p "$parent"
dir="$(mktemp -d "$parent/distlog-disk.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
out="$dir/out"

log "sequential write: fio --name=seq --rw=write --bs=1M --size=2G --end_fsync=1 --directory=$dir"
timeout 300 fio --name=seq --rw=write --bs=1M --size=2G --end_fsync=1 --runtime=120 \
  --directory="$dir" --output="$out" >/dev/null
rm -f "$dir"/seq.*
seq_bw="$(grep -m1 'WRITE: bw=' "$out" | sed -E 's/^ *WRITE: bw=([^ ,]+) \(([^)]+)\).*/\1 (\2)/')"

log "fdatasync latency: fio --name=sync --rw=write --bs=4k --size=64M --fdatasync=1 --directory=$dir (up to 60 s)"
timeout 300 fio --name=sync --rw=write --bs=4k --size=64M --fdatasync=1 --runtime=60 \
  --directory="$dir" --output="$out" >/dev/null
rm -f "$dir"/sync.*
# "sync (usec): min=61, max=111970, avg=1539.14, stdev=2332.16" and the percentile block after it.
sync_line="$(grep -m1 -E '^ *sync \((n|u|m)sec\):' "$out" | sed -E 's/^ *//')"
sync_unit="$(sed -nE 's/^ *sync percentiles \(([a-z]+)\):.*/\1/p' "$out" | head -1)"
sync_pcts="$(awk '/sync percentiles/ {on=1; next} on && /^ *\|/ {print; next} on {exit}' "$out" | tr -d '|' | tr ',' '\n')"
pct() { printf '%s\n' "$sync_pcts" | sed -nE "s/^ *$1th=\[ *([0-9]+)\].*/\1/p" | head -1; }
sync_iops="$(grep -m1 -E '^ *write: IOPS=' "$out" | sed -E 's/^ *write: IOPS=([^,]+),.*/\1/')"

echo "DISK seq_write_bw: $seq_bw"
echo "DISK fdatasync: $sync_line"
echo "DISK fdatasync p50=$(pct 50.00) p99=$(pct 99.00) $sync_unit; 4 KiB write+fdatasync IOPS=$sync_iops"
