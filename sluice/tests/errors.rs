//! Bad jobs are rejected before anything runs, and failures name the operator.

use sluice::prelude::*;
use sluice::{Collector, SluiceError};

#[test]
fn duplicate_uid_is_rejected_naming_the_operator() {
    let env = StreamEnv::new();
    let s = env.from_collection(vec![1u64, 2]).uid("numbers");
    s.map(|x: u64| x + 1).uid("numbers").discard();
    let e = env.execute("dup").unwrap_err().to_string();
    assert!(e.contains("duplicate uid 'numbers'"), "{e}");
}

#[test]
fn parallelism_above_max_parallelism_is_rejected() {
    let env = StreamEnv::new();
    env.set_max_parallelism(8);
    env.generate_sequence(0, 10)
        .map(|x: u64| x)
        .uid("wide-map")
        .set_parallelism(9)
        .discard();
    let e = env.execute("wide").unwrap_err().to_string();
    assert!(
        e.contains("'wide-map'") && e.contains("max parallelism 8"),
        "{e}"
    );
}

#[test]
fn non_parallel_source_rejects_parallelism() {
    let env = StreamEnv::new();
    env.from_collection(vec![1u64])
        .uid("coll")
        .set_parallelism(2)
        .discard();
    let e = env.execute("coll").unwrap_err().to_string();
    assert!(e.contains("'coll'") && e.contains("at most 1"), "{e}");
}

#[test]
fn a_failing_operator_fails_the_job_with_its_name() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.generate_sequence(0, 100_000)
        .try_flat_map(|x: u64, out: &mut Collector<u64>| {
            if x == 77_777 {
                return Err(SluiceError::job("cannot handle 77777"));
            }
            out.collect(x);
            Ok(())
        })
        .uid("picky")
        .rebalance()
        .discard();
    let e = env.execute("fails").unwrap_err().to_string();
    assert!(e.contains("cannot handle 77777"), "{e}");
}

#[test]
fn a_panicking_operator_fails_the_job() {
    let env = StreamEnv::new();
    env.generate_sequence(0, 1000)
        .map(|x: u64| if x == 500 { panic!("boom at {x}") } else { x })
        .uid("panicky")
        .discard();
    let e = env.execute("panics").unwrap_err().to_string();
    assert!(e.contains("boom at 500") && e.contains("panicked"), "{e}");
}

#[test]
fn plan_json_lists_uids_parallelism_and_edges() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.generate_sequence(0, 10)
        .uid("src")
        .key_by(|x: &u64| x % 3)
        .count()
        .uid("counts")
        .discard();
    let plan: serde_json::Value = serde_json::from_str(&env.plan_json("p").unwrap()).unwrap();
    let nodes = plan["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["uid"], "src");
    assert_eq!(nodes[1]["uid"], "counts");
    assert_eq!(nodes[1]["inputs"][0]["partitioning"], "HASH");
    assert_eq!(nodes[1]["parallelism"], 2);
}
