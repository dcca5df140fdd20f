#!/usr/bin/env bash
# Prints what checkpoints every second cost the word count: interleaved pairs of runs of the same
# job without and with checkpoints (local directory; the order alternates from pair to pair),
# each pair's ratios of throughput (records/s) and of records per CPU-second, and the medians.
# Pairs, because this machine's speed drifts between runs; the median, because single pairs
# swing by ±20 %.
#
#   bench/checkpoint-overhead.sh [--backend rocksdb|hashmap] [--keys 10007] [--records N]
#                                [--pairs N] [--interval 1s]
#
# `--keys` is the word count's distinct numbers per word: 10007 gives 100,070 keys, 100003
# about 1 M.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=rocksdb
keys=10007
records=200000000
pairs=5
interval=1s
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --pairs) pairs="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p sluice-bench
bin="${CARGO_TARGET_DIR:-target}/release/sluice-bench"
checkpoints="$(mktemp -d "${TMPDIR:-/tmp}/sluice-checkpoint-overhead.XXXXXX")"
trap 'rm -rf "$checkpoints"' EXIT

# The value of `field=` in the benchmark's result line.
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }

run_plain() { "$bin" wordcount --backend "$backend" --keys "$keys" --records "$records" | tail -1; }
run_with() {
  "$bin" wordcount --backend "$backend" --keys "$keys" --records "$records" \
    -D "execution.checkpointing.interval=$interval" \
    -D "state.checkpoints.dir=file://$checkpoints" 2>/dev/null | tail -1
  rm -rf "${checkpoints:?}"/*
}

echo "word count, $backend, $keys numbers per word, $records records, checkpoints every $interval to $checkpoints"
ratios=()
for i in $(seq 1 "$pairs"); do
  # Odd pairs run without checkpoints first, even pairs with: a drift of the machine's speed
  # within a pair then favours neither side.
  if [ $((i % 2)) -eq 1 ]; then
    plain="$(run_plain)"; with="$(run_with)"
  else
    with="$(run_with)"; plain="$(run_plain)"
  fi
  ps=$(field records_per_s "$plain"); ws=$(field records_per_s "$with")
  pc=$(field records_per_cpu_s "$plain"); wc=$(field records_per_cpu_s "$with")
  if [ -z "$ps" ] || [ -z "$ws" ] || [ -z "$pc" ] || [ -z "$wc" ]; then
    echo "pair $i: a run printed no result: '$plain' / '$with'" >&2
    exit 1
  fi
  line=$(awk -v ps="$ps" -v ws="$ws" -v pc="$pc" -v wc="$wc" \
    'BEGIN { printf "%.4f %.4f", ws / ps, wc / pc }')
  ratios+=("$line")
  read -r t c <<<"$line"
  printf 'pair %d: records/s %s without, %s with (%s); records/CPU-s %s without, %s with (%s)\n' \
    "$i" "$ps" "$ws" "$t" "$pc" "$wc" "$c"
done
printf '%s\n' "${ratios[@]}" | awk '
  { t[NR] = $1; c[NR] = $2 }
  function median(a, n,   i, j, x) {
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    mt = median(t, NR); mc = median(c, NR)
    printf "median throughput with checkpoints: %.1f %% of without (a loss of %.1f %%)\n", 100 * mt, 100 * (1 - mt)
    printf "median records per CPU-second with checkpoints: %.1f %% of without\n", 100 * mc
  }'
