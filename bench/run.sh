#!/usr/bin/env bash
# Prints the throughput benchmarks of issue-style figures: records per CPU-second and peak RSS
# of each case, each in a fresh process. Optionally runs Apache Flink's reference job right
# after on the same machine (`--flink DIR`, the directory holding Flink's run.sh) for ratios.
#
#   bench/run.sh [--records N] [--flink ../shared/bench/flink]
set -euo pipefail
cd "$(dirname "$0")/.."

records=30000000
flink=""
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --flink) flink="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p sluice-bench
bin="${CARGO_TARGET_DIR:-target}/release/sluice-bench"
"$bin" stateless --records "$records"
"$bin" wordcount --backend hashmap --records "$records"
"$bin" wordcount --backend rocksdb --records "$records"
"$bin" wordcount --backend hashmap --keys 100003 --records "$records"
"$bin" wordcount --backend rocksdb --keys 100003 --records "$records"
if [ -n "$flink" ]; then
  "$flink/run.sh" wordcount "$records" heap
  "$flink/run.sh" wordcount "$records" rocksdb 10000
fi
# Checkpoint and restore of ~1 GiB of RocksDB state, full and incremental, against cp -r.
cargo build --release -q -p sluice-bench --bin sluice-state-bench
"${CARGO_TARGET_DIR:-target}/release/sluice-state-bench" --keys 8388608
# A standalone cluster on loopback (master + worker daemons): the keyed exchange across two
# worker processes against one process, recovery of ~100 MiB of keyed state after a worker
# daemon is killed, and the RSS of the master and of an idle worker.
cargo build --release -q -p sluice-am -p sluice-worker -p sluice-cli -p sluice-examples \
  -p sluice-bench --bin sluice-am --bin sluice-worker --bin sluice --bin wordcount \
  --bin sluice-cluster-bench
"${CARGO_TARGET_DIR:-target}/release/sluice-cluster-bench"
# The data plane between two processes on loopback, 100-byte records, against raw TCP moving
# the same bytes in the same run.
cargo build --release -q -p sluice-bench --bin sluice-net-bench
"${CARGO_TARGET_DIR:-target}/release/sluice-net-bench" --records 3000000 --rounds 3
# What checkpoints every second cost the RocksDB word count: interleaved pairs of runs without
# and with them, and the median ratios.
bench/checkpoint-overhead.sh --backend rocksdb
