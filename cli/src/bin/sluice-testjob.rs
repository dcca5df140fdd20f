//! A job for the CLI's tests and for trying the CLI by hand: a rate-limited generator of
//! `0, 1, 2, ...`, a keyed running count of `i % keys` (uid `counts`), printed as `(key,count)`.
//! It reads its configuration the way every job does (`StreamEnv::new()`), so `sluice run -p`,
//! `-D`, `-s` apply; it prints the effective parallelism to stderr so tests can check that.
//!
//! `sluice-testjob [--rate R] [--keys K] [--count N] [--fail-at I] [--chain M]` (no `--count`:
//! runs until stopped; `--fail-at I`: the job fails at record I, to see the exit code of a
//! failed job; `--chain M`: M more pass-through operators, uids `step-1`..`step-M`, for a job
//! with a large graph)

use sluice::prelude::*;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> sluice::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: f64| -> f64 {
        arg(&args, name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: '{v}' is not a number"))
            })
            .unwrap_or(default)
    };
    let rate = num("--rate", 200.0);
    let keys = num("--keys", 5.0) as u64;
    let count = arg(&args, "--count").map(|_| num("--count", 0.0) as u64);
    let fail_at = arg(&args, "--fail-at").map(|_| num("--fail-at", 0.0) as u64);
    let chain = num("--chain", 0.0) as usize;
    let env = StreamEnv::new();
    eprintln!("parallelism.default={}", env.config().parallelism);
    let mut out = env
        .generate(count, Some(rate), |i| i)
        .uid("numbers")
        .set_parallelism(1)
        .try_flat_map(move |i: u64, out: &mut sluice::Collector<(u64, u64)>| {
            if Some(i) == fail_at {
                return Err(sluice::SluiceError::job(format!(
                    "failing at record {i} as asked"
                )));
            }
            out.collect((i % keys, 1u64));
            Ok(())
        })
        .uid("keys")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("counts")
        .map(|(k, c): (u64, u64)| format!("({k},{c})"))
        .uid("format");
    for i in 1..=chain {
        out = out.map(|s: String| s).uid(&format!("step-{i}"));
    }
    out.print();
    let result = env.execute("sluice-testjob")?;
    eprintln!("job {} {:?}", result.job_id, result.status);
    Ok(())
}
