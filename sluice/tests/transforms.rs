//! Stateless and keyed transformations on the embedded cluster, checked against exact outputs.

use std::collections::{BTreeMap, HashMap};

use sluice::prelude::*;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn map_filter_flat_map_union_rebalance_in_parallel() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let a = env.generate_sequence(0, 1000);
    let b = env.from_collection((1000u64..1100).collect());
    let out = a
        .union(&[b])
        .rebalance()
        .filter(|x: &u64| x.is_multiple_of(2))
        .flat_map(|x: u64| vec![x, x + 1_000_000])
        .map(|x: u64| x * 10);
    let (got, _) = out.collect();
    env.execute("pipeline").unwrap();
    let mut expected = Vec::new();
    for x in (0u64..1100).filter(|x| x.is_multiple_of(2)) {
        expected.push(x * 10);
        expected.push((x + 1_000_000) * 10);
    }
    assert_eq!(sorted(got.take()), sorted(expected));
}

#[test]
fn keyed_rolling_aggregations_match_a_sequential_run() {
    for backend in ["hashmap", "rocksdb"] {
        let env = StreamEnv::new();
        env.set_parallelism(4);
        env.set("state.backend.type", backend).unwrap();
        let input: Vec<(String, i64)> = (0..5000i64)
            .map(|i| (format!("k{}", i % 37), (i * 7919) % 1000 - 500))
            .collect();
        let src = env.from_collection(input.clone());
        let keyed = src.key_by_field(|r: &(String, i64)| &r.0);
        let (sums, _) = keyed.sum().collect();
        let (mins, _) = keyed.min().collect();
        let (maxs, _) = keyed.max().collect();
        let (counts, _) = src
            .key_by(|r: &(String, i64)| r.0.clone())
            .count()
            .collect();
        let (reduced, _) = keyed.reduce(|a, b| (a.0, a.1 + b.1)).collect();
        env.execute("keyed").unwrap();

        // Every update is emitted; the last per key is the total. Per key, updates arrive in order.
        let mut sum: BTreeMap<String, i64> = BTreeMap::new();
        let mut min: BTreeMap<String, i64> = BTreeMap::new();
        let mut max: BTreeMap<String, i64> = BTreeMap::new();
        let mut cnt: BTreeMap<String, u64> = BTreeMap::new();
        let mut expected_sums = Vec::new();
        for (k, v) in &input {
            let s = sum.entry(k.clone()).or_insert(0);
            *s += v;
            expected_sums.push((k.clone(), *s));
            let m = min.entry(k.clone()).or_insert(*v);
            *m = (*m).min(*v);
            let m = max.entry(k.clone()).or_insert(*v);
            *m = (*m).max(*v);
            *cnt.entry(k.clone()).or_insert(0) += 1;
        }
        assert_eq!(
            sorted(sums.get()),
            sorted(expected_sums.clone()),
            "{backend}"
        );
        assert_eq!(sorted(reduced.get()), sorted(expected_sums), "{backend}");
        let last = |v: Vec<(String, i64)>| -> BTreeMap<String, i64> {
            let mut m = BTreeMap::new();
            for (k, x) in v {
                m.insert(k, x);
            }
            m
        };
        // Per-key order is preserved through the keyed exchange, so the last update is final.
        assert_eq!(last(mins.get()), min, "{backend}");
        assert_eq!(last(maxs.get()), max, "{backend}");
        let final_counts: BTreeMap<String, u64> =
            counts
                .get()
                .into_iter()
                .fold(BTreeMap::new(), |mut m, (k, c)| {
                    let e = m.entry(k).or_insert(0);
                    *e = (*e).max(c);
                    m
                });
        assert_eq!(final_counts, cnt, "{backend}");
        assert_eq!(counts.len(), 5000);
    }
}

#[test]
fn parallel_generator_emits_every_index_once() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let (got, _) = env.generate(Some(10_000), None, |i| i).collect();
    let r = env.execute("gen").unwrap();
    let got = sorted(got.take());
    assert_eq!(got, (0..10_000).collect::<Vec<u64>>());
    assert_eq!(r.metrics.values().map(|m| m.records_in).max(), Some(10_000));
}

#[test]
fn wordcount_prints_flink_style_updates() {
    use sluice_examples_shim::*;
    let env = StreamEnv::new();
    let lines = env.from_collection(vec!["a b".to_string(), "b".into(), "c b".into()]);
    let (got, _) = counts(&lines).collect();
    env.execute("wc").unwrap();
    let mut by_word: HashMap<String, Vec<u64>> = HashMap::new();
    for (w, c) in got.take() {
        by_word.entry(w).or_default().push(c);
    }
    assert_eq!(by_word["b"], vec![1, 2, 3]);
    assert_eq!(by_word["a"], vec![1]);
    assert_eq!(by_word["c"], vec![1]);
}

mod sluice_examples_shim {
    use sluice::prelude::*;
    pub fn counts(lines: &DataStream<String>) -> DataStream<(String, u64)> {
        lines
            .flat_map(|l: String| {
                l.split(' ')
                    .map(|w| (w.to_string(), 1u64))
                    .collect::<Vec<_>>()
            })
            .key_by_field(|r: &(String, u64)| &r.0)
            .sum()
    }
}
