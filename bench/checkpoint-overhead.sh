#!/usr/bin/env bash
# Prints what checkpoints every second cost the word count: interleaved pairs of runs of the same
# job without and with checkpoints (local directory; the order alternates from pair to pair),
# each pair's ratios of throughput (records/s) and of records per CPU-second, and the medians.
# Pairs, because this machine's speed drifts between runs; the median, because single pairs
# swing by ±20 %. Throughput is given over the whole job and up to the moment the source generated
# its last record: with checkpoints a bounded job ends with a final checkpoint of its whole state,
# a cost per job (printed in ms) rather than per record, which a short run would count as a loss
# of throughput.
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
  pe=$(field records_per_s_to_input_end "$plain"); we=$(field records_per_s_to_input_end "$with")
  pc=$(field records_per_cpu_s "$plain"); wc=$(field records_per_cpu_s "$with")
  wt=$(field input_end_to_done_ms "$with")
  for v in "$ps" "$ws" "$pe" "$we" "$pc" "$wc" "$wt"; do
    if [ -z "$v" ]; then
      echo "pair $i: a run printed no result: '$plain' / '$with'" >&2
      exit 1
    fi
  done
  line=$(awk -v ps="$ps" -v ws="$ws" -v pe="$pe" -v we="$we" -v pc="$pc" -v wc="$wc" \
    'BEGIN { printf "%.4f %.4f %.4f", ws / ps, we / pe, wc / pc }')
  ratios+=("$line $wt")
  read -r t e c <<<"$line"
  printf 'pair %d: records/s %s without, %s with (%s); to the end of input %s without, %s with (%s); records/CPU-s %s without, %s with (%s); %s ms from the end of input to the end of the job with checkpoints\n' \
    "$i" "$ps" "$ws" "$t" "$pe" "$we" "$e" "$pc" "$wc" "$c" "$wt"
done
printf '%s\n' "${ratios[@]}" | awk '
  { t[NR] = $1; e[NR] = $2; c[NR] = $3; w[NR] = $4 }
  function sort(a, n,   i, j, x) {
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
  }
  function median(a, n) {
    sort(a, n)
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  # The ranks, in the sorted pairs, of a 95 % confidence interval of the median: the pairs
  # bracket the true median as the signs of a fair coin would (normal approximation of the
  # binomial), whatever the shape of the machine'"'"'s noise. With fewer than 9 pairs the interval
  # is the whole range.
  function ci(a, n,   lo, hi) {
    sort(a, n)
    lo = int((n + 1) / 2 - 0.98 * sqrt(n)); if (lo < 1) lo = 1
    hi = n + 1 - lo
    return sprintf("%.1f-%.1f %% (pairs %d and %d of %d, sorted)", 100 * a[lo], 100 * a[hi], lo, hi, n)
  }
  END {
    mt = median(t, NR); me = median(e, NR); mc = median(c, NR); mw = median(w, NR)
    printf "median throughput with checkpoints, whole job: %.1f %% of without (a loss of %.1f %%); 95 %% interval of the median %s\n", 100 * mt, 100 * (1 - mt), ci(t, NR)
    printf "median throughput with checkpoints, up to the end of input: %.1f %% of without (a loss of %.1f %%); 95 %% interval of the median %s\n", 100 * me, 100 * (1 - me), ci(e, NR)
    printf "median records per CPU-second with checkpoints: %.1f %% of without\n", 100 * mc
    printf "median time from the end of input to the end of the job with checkpoints (its final checkpoint): %.0f ms\n", mw
  }'
