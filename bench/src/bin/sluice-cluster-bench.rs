//! `sluice-cluster-bench`: a standalone cluster on loopback — a master (`sluice-am`) and worker
//! daemons (`sluice-worker`, 1 slot each) — measured three ways, in one run:
//!
//! 1. Keyed exchange across processes: WordCount (`wordcount --generate N --discard`, three
//!    words a line, keyed running count, discarding sink) at parallelism 2, run directly on the
//!    embedded cluster in one process and submitted to a master with 2 workers, so that the
//!    keyed exchange crosses the two worker processes. Words per second of both and their
//!    ratio; a run's time is the job's duration (its driver's clock: `duration` of
//!    `GET /v1/jobs/<id>` on the cluster, the duration the embedded run prints) minus that of a
//!    1-line job on the same setup, the best of `--rounds`. Words per CPU-second likewise, from
//!    the CPU time of every process the job ran in (on the cluster: the master, the worker
//!    daemons and their job processes), which other load on the machine disturbs far less.
//! 2. Recovery: a job keeping a ~100-byte value per key (`--state-mib` MiB of heap state) at
//!    parallelism 2 on 2 workers plus 1 spare, checkpointing every second. After a checkpoint
//!    taken once every key has its value completes, the daemon of a worker running the job's
//!    subtasks gets SIGKILL; measured is the time from the kill to the first record reaching
//!    the sink of the restarted attempt, whose keyed state came from that checkpoint.
//! 3. RSS (`VmRSS` of `/proc/<pid>/status`): the master and a worker daemon idle after the
//!    workers registered, and the master while jobs run.
//!
//!   sluice-cluster-bench [--lines 10000000] [--rounds 5] [--state-mib 100] [--rate 250000]
//!
//! The recovery job is this binary again (`--recovery-job`), bundled like any job binary.
//! It needs `sluice-am`, `sluice-worker`, `sluice` and `wordcount` next to it, and `objcopy`.

/// Records are allocated on one task thread and freed on another; mimalloc handles that
/// far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use serde_json::Value;
use sluice::prelude::*;
use sluice::{Batch, Operator, OperatorContext};
use sluice_worker::daemon::{LOG_DIR_ENV, env as job_env};

#[derive(Parser)]
struct Args {
    /// Generated lines of the WordCount runs (three words, so three keyed records, a line).
    #[arg(long, default_value_t = 10_000_000)]
    lines: u64,
    /// WordCount runs of each kind; the best of each is compared.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Keyed state of the recovery job, in MiB (about 100 bytes per key).
    #[arg(long, default_value_t = 100)]
    state_mib: u64,
    /// Records per second of the recovery job (over both subtasks).
    #[arg(long, default_value_t = 250_000.0)]
    rate: f64,
}

/// The first argument of the recovery job, which this binary runs when it is given.
const RECOVERY_JOB: &str = "--recovery-job";

fn main() -> Result<()> {
    let job_args = sluice::job_args();
    if job_args.iter().any(|a| a == RECOVERY_JOB) {
        return recovery_job(job_args);
    }
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let work = tempfile::Builder::new()
        .prefix("sluice-cluster-bench-")
        .tempdir()
        .context("a temporary directory")?;
    let wordcount = bundle(&bin("wordcount")?, work.path())?;
    let bench = bundle(&std::env::current_exe()?, work.path())?;

    let mut cluster = Cluster::start(work.path(), 2)?;
    // Idle: registered, no job yet; give both sides a moment to settle first.
    std::thread::sleep(Duration::from_secs(1));
    let master_idle = rss_bytes(cluster.master.id());
    let worker_idle = cluster
        .workers
        .iter()
        .map(|w| rss_bytes(w.id()))
        .max()
        .unwrap_or(0);
    let sampler = RssSampler::start(cluster.master.id());

    let exchange = exchange(&cluster, &wordcount, &args, &sampler)?;
    let master_after_jobs = rss_bytes(cluster.master.id());
    let recovery = recovery(&mut cluster, &bench, &args, &sampler)?;
    sampler.stop();
    cluster.stop();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let words = 3 * args.lines;
    let per_s = |d: Duration, overhead: Duration| {
        words as f64 / d.saturating_sub(overhead).as_secs_f64().max(1e-3)
    };
    let (e, ee, c, ce) = (
        exchange.embedded,
        exchange.embedded_empty,
        exchange.cluster,
        exchange.cluster_empty,
    );
    let (emb_wall, clu_wall) = (per_s(e.wall, ee.wall), per_s(c.wall, ce.wall));
    let (emb_cpu, clu_cpu) = (per_s(e.cpu, ee.cpu), per_s(c.cpu, ce.cpu));
    println!(
        "# keyed exchange: WordCount --generate {} --discard, p=2, {words} words through keyBy; \
         1 process vs. 2 worker processes of 1 slot; words/s = words / (job duration - a 1-line \
         job's), per CPU-s likewise with the CPU time of all its processes; best of {}",
        args.lines, args.rounds
    );
    println!(
        "sluice cluster exchange words={words} embedded_s={:.2} embedded_empty_s={:.2} \
         embedded_cpu_s={:.2} embedded_empty_cpu_s={:.2} embedded_words_per_s={emb_wall:.0} \
         embedded_words_per_cpu_s={emb_cpu:.0} cluster_s={:.2} cluster_empty_s={:.2} \
         cluster_cpu_s={:.2} cluster_empty_cpu_s={:.2} cluster_words_per_s={clu_wall:.0} \
         cluster_words_per_cpu_s={clu_cpu:.0} cluster_vs_embedded={:.2} \
         cluster_vs_embedded_per_cpu_s={:.2}",
        e.wall.as_secs_f64(),
        ee.wall.as_secs_f64(),
        e.cpu.as_secs_f64(),
        ee.cpu.as_secs_f64(),
        c.wall.as_secs_f64(),
        ce.wall.as_secs_f64(),
        c.cpu.as_secs_f64(),
        ce.cpu.as_secs_f64(),
        clu_wall / emb_wall,
        clu_cpu / emb_cpu,
    );
    println!(
        "# recovery: p=2 on 2 workers + 1 spare, heartbeat timeout 2 s, restart delay 0; SIGKILL \
         to the daemon of {} ({}); ms from the kill to the failure's /exceptions entry, to the \
         first record at a sink of the restored attempt, at both sinks, to the next checkpoint",
        recovery.victim, recovery.lost_reason
    );
    println!(
        "sluice cluster recovery keys={} checkpoint_id={} checkpoint_mib={:.1} restored_id={} \
         kill_to_exception_ms={} kill_to_first_output_ms={} kill_to_all_sinks_output_ms={} \
         kill_to_next_checkpoint_ms={} restarts={}",
        recovery.keys,
        recovery.checkpoint_id,
        mib(recovery.checkpoint_bytes),
        recovery.restored_id,
        recovery.failure_ms,
        recovery.first_output_ms,
        recovery.all_outputs_ms,
        recovery.next_checkpoint_ms,
        recovery.restarts,
    );
    println!(
        "# RSS (VmRSS): idle = workers registered, no job yet; running = master's peak, sampled \
         every 50 ms, over the WordCount jobs and over the recovery job; after = idle again \
         after {} WordCount submissions (bundles of {:.1} and {:.1} MiB are uploaded to it)",
        1 + 2 * args.rounds,
        mib(file_size(&wordcount)),
        mib(file_size(&bench)),
    );
    println!(
        "sluice cluster rss master_idle_mib={:.1} worker_idle_mib={:.1} \
         master_running_wordcount_mib={:.1} master_running_recovery_mib={:.1} \
         master_idle_after_wordcount_mib={:.1}",
        mib(master_idle),
        mib(worker_idle),
        mib(exchange.master_peak),
        mib(recovery.master_peak),
        mib(master_after_jobs),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. The keyed exchange

/// Wall time (the job's duration) and CPU time (of every process the job ran in) of a run.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
}

impl Run {
    /// The least of each over several runs: the runs least disturbed by anything else.
    fn best(a: Option<Run>, b: Run) -> Option<Run> {
        Some(a.map_or(b, |a| Run {
            wall: a.wall.min(b.wall),
            cpu: a.cpu.min(b.cpu),
        }))
    }
}

struct Exchange {
    embedded: Run,
    embedded_empty: Run,
    cluster: Run,
    cluster_empty: Run,
    master_peak: u64,
}

fn exchange(
    cluster: &Cluster,
    wordcount: &Path,
    args: &Args,
    sampler: &RssSampler,
) -> Result<Exchange> {
    let (mut emb, mut emb_empty, mut clu, mut clu_empty) = (None, None, None, None);
    // One unmeasured job of each kind first: the page cache holds the binaries after it.
    embedded_run(1)?;
    sampler.measure(true);
    cluster_run(cluster, wordcount, 1)?;
    for _ in 0..args.rounds {
        emb_empty = Run::best(emb_empty, embedded_run(1)?);
        emb = Run::best(emb, embedded_run(args.lines)?);
        clu_empty = Run::best(clu_empty, cluster_run(cluster, wordcount, 1)?);
        clu = Run::best(clu, cluster_run(cluster, wordcount, args.lines)?);
    }
    let master_peak = sampler.measure(false);
    let get = |r: Option<Run>| r.ok_or_else(|| anyhow!("no rounds"));
    Ok(Exchange {
        embedded: get(emb)?,
        embedded_empty: get(emb_empty)?,
        cluster: get(clu)?,
        cluster_empty: get(clu_empty)?,
        master_peak,
    })
}

/// `wordcount --generate lines -p 2 --discard` on the embedded cluster in its own process:
/// the job's duration as it prints it (`job <id> Finished in 1.23s`), and the process's CPU
/// time (it is this process's only child while it runs).
fn embedded_run(lines: u64) -> Result<Run> {
    let cpu0 = cpu_time("self", true);
    let out = Command::new(bin("wordcount")?)
        .args(["--generate", &lines.to_string(), "-p", "2", "--discard"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running wordcount")?;
    let cpu = cpu_time("self", true).saturating_sub(cpu0);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "wordcount failed: {err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("job ") && l.contains(" Finished in "))
        .ok_or_else(|| anyhow!("wordcount did not print its duration: {err}"))?;
    let text = line.rsplit(" in ").next().unwrap_or_default();
    let wall = parse_duration(text).ok_or_else(|| anyhow!("cannot read the duration '{text}'"))?;
    Ok(Run { wall, cpu })
}

/// CPU time (user + system) of process `pid` (or `self`), with that of its children it
/// waited for when `children`, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str, children: bool) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14 to 17, i.e. 11 to 14 after the state.
    let n = if children { 4 } else { 2 };
    let ticks: u64 = fields.iter().skip(11).take(n).sum();
    // In USER_HZ, which is 100 on every platform Linux supports.
    Duration::from_millis(ticks * 10)
}

/// A `Debug`-printed duration: `1.23s`, `456.78ms`, `12.00µs`, `800.00ns`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))?;
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * unit))
}

/// The same job submitted to the cluster at parallelism 2: `duration` of `GET /v1/jobs/<id>`
/// (from the master accepting it to FINISHED), and the CPU time of the master and of the
/// worker daemons with their job processes (counted once the daemons reaped them).
fn cluster_run(cluster: &Cluster, wordcount: &Path, lines: u64) -> Result<Run> {
    cluster.wait_for_no_job_processes()?;
    let cpu0 = cluster.cpu_time();
    let job = cluster.submit(
        wordcount,
        &["-p", "2"],
        &["--generate", &lines.to_string(), "--discard"],
    )?;
    cluster.wait_for_state(&job, "FINISHED", Duration::from_secs(600))?;
    let ms = cluster
        .get(&format!("/jobs/{job}"))
        .and_then(|j| j["duration"].as_u64())
        .ok_or_else(|| anyhow!("job {job} has no duration"))?;
    cluster.wait_for_no_job_processes()?;
    Ok(Run {
        wall: Duration::from_millis(ms),
        cpu: cluster.cpu_time().saturating_sub(cpu0),
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Recovery

struct Recovery {
    keys: u64,
    victim: String,
    lost_reason: String,
    checkpoint_id: u64,
    checkpoint_bytes: u64,
    restored_id: String,
    failure_ms: i64,
    first_output_ms: i64,
    all_outputs_ms: i64,
    next_checkpoint_ms: String,
    restarts: usize,
    master_peak: u64,
}

/// What the recovery job's processes note in the marks file, one line each.
#[derive(Debug)]
enum Mark {
    /// A source subtask emitted its first index at or past `keys`: every key has a value.
    Filled { at_ms: i64 },
    /// A sink subtask opened at `opened_ms` got its first record at `at_ms`.
    Output {
        worker: String,
        subtask: usize,
        opened_ms: i64,
        at_ms: i64,
    },
}

fn read_marks(path: &Path) -> Vec<Mark> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["filled", _worker, t] => Some(Mark::Filled {
                    at_ms: t.parse().ok()?,
                }),
                ["output", w, s, o, t] => Some(Mark::Output {
                    worker: w.to_string(),
                    subtask: s.parse().ok()?,
                    opened_ms: o.parse().ok()?,
                    at_ms: t.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

fn recovery(
    cluster: &mut Cluster,
    bundle: &Path,
    args: &Args,
    sampler: &RssSampler,
) -> Result<Recovery> {
    let keys = args.state_mib * (1 << 20) / 100;
    cluster.add_worker()?;
    cluster.wait_for_workers(3)?;
    let marks = cluster.dir.join("marks");
    let checkpoints = format!("file://{}", cluster.dir.join("checkpoints").display());
    let marks_arg = marks.to_str().ok_or_else(|| anyhow!("a non-UTF-8 path"))?;
    sampler.measure(true);
    let job = cluster.submit(
        bundle,
        &[
            "-p",
            "2",
            "-D",
            "state.backend.type=hashmap",
            "-D",
            "execution.checkpointing.interval=1s",
            "-D",
            &format!("state.checkpoints.dir={checkpoints}"),
            "-D",
            "restart-strategy.type=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.delay=0ms",
        ],
        &[
            RECOVERY_JOB,
            "--keys",
            &keys.to_string(),
            "--rate",
            &args.rate.to_string(),
            "--marks",
            marks_arg,
        ],
    )?;
    let outcome = measure_recovery(cluster, &job, &marks, keys, args);
    let master_peak = sampler.measure(false);
    // Cancelled whatever happened, so no state is left behind.
    cluster.cancel(&job)?;
    let mut r = outcome?;
    r.master_peak = master_peak;
    Ok(r)
}

fn measure_recovery(
    cluster: &mut Cluster,
    job: &str,
    marks: &Path,
    keys: u64,
    args: &Args,
) -> Result<Recovery> {
    cluster.wait_for_state(job, "RUNNING", Duration::from_secs(60))?;
    // Every key has a value once both source subtasks are past index `keys`.
    let fill_timeout = Duration::from_secs_f64(keys as f64 / args.rate * 3.0 + 60.0);
    let mut filled_at = 0;
    cluster.wait_until("the state to fill", job, fill_timeout, |_| {
        let filled: Vec<i64> = read_marks(marks)
            .iter()
            .filter_map(|m| match m {
                Mark::Filled { at_ms, .. } => Some(*at_ms),
                _ => None,
            })
            .collect();
        filled_at = filled.iter().copied().max().unwrap_or(0);
        filled.len() >= 2
    })?;
    // A checkpoint triggered after that holds every key.
    let mut checkpoint = Value::Null;
    cluster.wait_until(
        "a checkpoint of the full state",
        job,
        Duration::from_secs(120),
        |c| {
            checkpoint = c
                .get(&format!("/jobs/{job}/checkpoints"))
                .and_then(|v| {
                    v["history"].as_array().and_then(|h| {
                        h.iter()
                            .find(|e| {
                                e["className"] == "completed"
                                    && e["trigger_timestamp"].as_i64().unwrap_or(0) > filled_at
                            })
                            .cloned()
                    })
                })
                .unwrap_or(Value::Null);
            !checkpoint.is_null()
        },
    )?;
    let checkpoint_id = checkpoint["id"].as_u64().unwrap_or(0);
    let checkpoint_bytes = checkpoint["state_size"].as_u64().unwrap_or(0);

    // The victim: the worker of the highest sink subtask (the spare runs none).
    let before = read_marks(marks);
    let victim = before
        .iter()
        .filter_map(|m| match m {
            Mark::Output {
                worker, subtask, ..
            } => Some((*subtask, worker.clone())),
            _ => None,
        })
        .max()
        .map(|(_, w)| w)
        .ok_or_else(|| anyhow!("no sink has written anything yet"))?;
    let index = cluster
        .worker_ids
        .iter()
        .position(|w| *w == victim)
        .ok_or_else(|| anyhow!("the sink ran on an unknown worker {victim}"))?;

    let kill_ms = now_ms();
    cluster.workers[index]
        .kill()
        .context("SIGKILL to the worker daemon")?;
    let _ = cluster.workers[index].wait();

    // Every sink subtask of the restarted attempt (opened after the kill) has output.
    let mut outputs: Vec<(usize, i64)> = Vec::new();
    cluster.wait_until(
        "output after the restore",
        job,
        Duration::from_secs(120),
        |_| {
            outputs = read_marks(marks)
                .iter()
                .filter_map(|m| match m {
                    Mark::Output {
                        subtask,
                        opened_ms,
                        at_ms,
                        ..
                    } if *opened_ms >= kill_ms => Some((*subtask, *at_ms)),
                    _ => None,
                })
                .collect();
            let mut subtasks: Vec<usize> = outputs.iter().map(|o| o.0).collect();
            subtasks.sort_unstable();
            subtasks.dedup();
            subtasks.len() >= 2
        },
    )?;
    let first_output_ms = outputs.iter().map(|o| o.1).min().unwrap_or(0) - kill_ms;
    let all_outputs_ms = outputs.iter().map(|o| o.1).max().unwrap_or(0) - kill_ms;

    // The next completed checkpoint, if one completes within 30 s.
    let mut next = None;
    let _ = cluster.wait_until("", job, Duration::from_secs(30), |c| {
        next = c
            .get(&format!("/jobs/{job}/checkpoints"))
            .and_then(|v| {
                v["history"].as_array().and_then(|h| {
                    h.iter()
                        .filter(|e| {
                            e["className"] == "completed"
                                && e["trigger_timestamp"].as_i64().unwrap_or(0) >= kill_ms
                        })
                        .filter_map(|e| e["latest_ack_timestamp"].as_i64())
                        .min()
                })
            })
            .map(|t| t - kill_ms);
        next.is_some()
    });
    let checkpoints = cluster
        .get(&format!("/jobs/{job}/checkpoints"))
        .unwrap_or(Value::Null);
    let restored_id = match &checkpoints["latest"]["restored"]["id"] {
        Value::Null => "none".to_string(),
        v => v.to_string(),
    };
    let exceptions = cluster
        .get(&format!("/jobs/{job}/exceptions"))
        .unwrap_or(Value::Null);
    let entries = exceptions["exceptionHistory"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let failure_ms = entries
        .iter()
        .filter_map(|e| e["timestamp"].as_i64())
        .filter(|t| *t >= kill_ms)
        .min()
        .map_or(-1, |t| t - kill_ms);
    let lost_reason = std::fs::read_to_string(cluster.dir.join("master.err"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&format!("worker {victim} lost: ")))
        .map(|l| format!("its master log line: \"{l}\""))
        .unwrap_or_else(|| "the master's log does not say how".to_string());
    Ok(Recovery {
        keys,
        victim,
        lost_reason,
        checkpoint_id,
        checkpoint_bytes,
        restored_id,
        failure_ms,
        first_output_ms,
        all_outputs_ms,
        next_checkpoint_ms: next.map_or("none".to_string(), |t| t.to_string()),
        restarts: entries.len(),
        master_peak: 0,
    })
}

/// The job measured for recovery, run by the cluster from this binary's bundle:
/// `--recovery-job --keys K --rate R --marks FILE`. Index `i` updates key `i % K` with a
/// 96-character value; the sink notes when its first record arrives.
fn recovery_job(args: Vec<String>) -> Result<()> {
    #[derive(Parser)]
    struct JobArgs {
        #[arg(long)]
        recovery_job: bool,
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        marks: PathBuf,
    }
    let a = JobArgs::try_parse_from(args)?;
    let keys = a.keys;
    let (fill_marks, sink_marks) = (a.marks.clone(), a.marks);
    let env = StreamEnv::new();
    env.generate(None, Some(a.rate), |i| i)
        .uid("indices")
        .map(move |i: u64| {
            // One subtask of the source runs in each job process.
            static FILLED: AtomicBool = AtomicBool::new(false);
            if i >= keys && !FILLED.swap(true, Ordering::Relaxed) {
                mark(&fill_marks, &format!("filled {} {}", worker_id(), now_ms()));
            }
            let k = i % keys;
            (k, format!("{k:0>96}"))
        })
        .uid("values")
        .key_by_field(|r: &(u64, String)| &r.0)
        .reduce(|_old, new| new)
        .uid("latest")
        .add_sink("Sink: first output", move || FirstOutput {
            marks: sink_marks.clone(),
            subtask: 0,
            opened_ms: 0,
            noted: false,
        });
    env.execute("cluster-recovery-bench")?;
    Ok(())
}

/// Notes the time of its first record (`output <worker> <subtask> <opened> <first>`).
struct FirstOutput {
    marks: PathBuf,
    subtask: usize,
    opened_ms: i64,
    noted: bool,
}

impl Operator for FirstOutput {
    type In = (u64, String);
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> sluice::Result<()> {
        self.subtask = ctx.subtask;
        self.opened_ms = now_ms();
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<(u64, String)>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        if !self.noted && !batch.is_empty() {
            self.noted = true;
            let line = format!(
                "output {} {} {} {}",
                worker_id(),
                self.subtask,
                self.opened_ms,
                now_ms()
            );
            mark(&self.marks, &line);
        }
        Ok(())
    }
}

fn worker_id() -> String {
    std::env::var(job_env::WORKER_ID).unwrap_or_else(|_| "embedded".to_string())
}

/// Appends one line in one write, so the lines of several processes never interleave.
fn mark(path: &Path, line: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 3. RSS

/// `VmRSS` of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Samples a process's RSS every 50 ms and keeps the peak of the current measurement.
struct RssSampler {
    peak: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (peak, on, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, o, s) = (peak.clone(), on.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if o.load(Ordering::Relaxed) {
                    p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            peak,
            on,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts (`true`) or ends (`false`) a measurement; returns the peak of the one ended.
    fn measure(&self, on: bool) -> u64 {
        self.on.store(on, Ordering::Relaxed);
        if on {
            self.peak.store(0, Ordering::Relaxed);
            0
        } else {
            self.peak.load(Ordering::Relaxed)
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// A binary of this workspace, next to this one.
fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .ok_or_else(|| anyhow!("this binary has no directory"))?
        .join(name);
    ensure!(
        path.is_file(),
        "{} is missing: build it first (cargo build --release -p sluice-am -p sluice-worker \
         -p sluice-cli -p sluice-examples)",
        path.display()
    );
    Ok(path)
}

/// `binary` without its debug info (smaller to ship), bundled into `dir`.
fn bundle(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let name = binary
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", binary.display()))?;
    let stripped = dir.join(name);
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&stripped)
        .status()
        .context("running objcopy")?;
    ensure!(status.success(), "objcopy --strip-debug failed");
    let out = stripped.with_extension("bundle");
    let status = Command::new(bin("sluice")?)
        .arg("bundle")
        .arg(&stripped)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .context("running sluice bundle")?;
    ensure!(status.success(), "sluice bundle failed");
    let _ = std::fs::remove_file(&stripped);
    Ok(out)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Heartbeats as the figures assume them.
const TIMING: [&str; 6] = [
    "-D",
    "heartbeat.interval=200ms",
    "-D",
    "heartbeat.timeout=2s",
    "-D",
    "slot.request.timeout=60s",
];

struct Cluster {
    dir: PathBuf,
    rpc: u16,
    rest: u16,
    master: Child,
    workers: Vec<Child>,
    /// `taskmanager.resource-id` of each worker, in start order.
    worker_ids: Vec<String>,
    http: reqwest::blocking::Client,
}

impl Cluster {
    /// A master and `workers` workers with 1 slot each; logs and work directories in `dir`.
    fn start(dir: &Path, workers: usize) -> Result<Cluster> {
        let (rpc, rest) = (free_port()?, free_port()?);
        let master = Command::new(bin("sluice-am")?)
            .args(["-D", &format!("jobmanager.rpc.port={rpc}")])
            .args(["-D", &format!("rest.port={rest}")])
            .args(TIMING)
            .stdout(std::fs::File::create(dir.join("master.out"))?)
            .stderr(std::fs::File::create(dir.join("master.err"))?)
            .spawn()
            .context("starting sluice-am")?;
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            rpc,
            rest,
            master,
            workers: Vec::new(),
            worker_ids: Vec::new(),
            http: reqwest::blocking::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.get("/overview").is_none() {
            ensure!(Instant::now() < deadline, "the master's REST API is not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..workers {
            c.add_worker()?;
        }
        c.wait_for_workers(workers)?;
        Ok(c)
    }

    fn add_worker(&mut self) -> Result<()> {
        let id = format!("bench-{}-{}", std::process::id(), self.workers.len());
        let log = |ext: &str| std::fs::File::create(self.dir.join(format!("{id}.{ext}")));
        let w = Command::new(bin("sluice-worker")?)
            .args(["-D", &format!("jobmanager.rpc.port={}", self.rpc)])
            .args(["-D", "taskmanager.numberOfTaskSlots=1"])
            .args(["-D", &format!("taskmanager.resource-id={id}")])
            .args([
                "-D",
                &format!("taskmanager.tmp.dirs={}", self.dir.display()),
            ])
            .args(TIMING)
            .env(LOG_DIR_ENV, self.dir.join("logs"))
            .stdout(log("out")?)
            .stderr(log("err")?)
            .spawn()
            .context("starting sluice-worker")?;
        self.workers.push(w);
        self.worker_ids.push(id);
        Ok(())
    }

    fn wait_for_workers(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .get("/overview")
            .is_some_and(|o| o["taskmanagers"] == n as u64)
        {
            ensure!(Instant::now() < deadline, "{n} workers did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// CPU time of the master and of the live worker daemons with their reaped job processes.
    fn cpu_time(&self) -> Duration {
        let workers: Duration = self
            .workers
            .iter()
            .map(|w| cpu_time(&w.id().to_string(), true))
            .sum();
        cpu_time(&self.master.id().to_string(), false) + workers
    }

    /// Waits until no worker daemon has a child process (a job process) left.
    fn wait_for_no_job_processes(&self) -> Result<()> {
        let has_children = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| {
                    std::fs::read_to_string(t.path().join("children"))
                        .is_ok_and(|c| !c.trim().is_empty())
                })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.workers.iter().any(|w| has_children(w.id())) {
            ensure!(
                Instant::now() < deadline,
                "job processes are still running 30 s after their job ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}/v1{path}", self.rest))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json().ok())
    }

    /// `sluice run -m ... -d`; returns the job id.
    fn submit(&self, bundle: &Path, flags: &[&str], job_args: &[&str]) -> Result<String> {
        let out = Command::new(bin("sluice")?)
            .args(["run", "-m", &format!("127.0.0.1:{}", self.rest), "-d"])
            .args(flags)
            .arg(bundle)
            .arg("--")
            .args(job_args)
            .stdin(Stdio::null())
            .output()
            .context("running sluice run")?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "sluice run -m failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
            .map(|id| id.trim().to_string())
            .ok_or_else(|| anyhow!("no job id in: {text}"))
    }

    fn state(&self, job: &str) -> String {
        self.get(&format!("/jobs/{job}"))
            .and_then(|j| j["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Polls `done` every 20 ms until it holds; fails when the job fails or time runs out.
    fn wait_until(
        &self,
        what: &str,
        job: &str,
        timeout: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if self.state(job) == "FAILED" {
                bail!(
                    "job {job} failed: {}",
                    self.get(&format!("/jobs/{job}/exceptions"))
                        .unwrap_or(Value::Null)
                );
            }
            ensure!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (job {job}; logs in {})",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn wait_for_state(&self, job: &str, state: &str, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("state {state}"), job, timeout, |c| {
            c.state(job) == state
        })
    }

    fn cancel(&self, job: &str) -> Result<()> {
        let _ = self
            .http
            .patch(format!(
                "http://127.0.0.1:{}/v1/jobs/{job}?mode=cancel",
                self.rest
            ))
            .send();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.state(job).as_str(), "CANCELED" | "FAILED" | "FINISHED") {
            ensure!(Instant::now() < deadline, "job {job} was not cancelled");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Workers first (SIGTERM: they kill their job processes and remove their directories),
    /// then the master.
    fn stop(mut self) {
        for w in &mut self.workers {
            if matches!(w.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-TERM", &w.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for w in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(w.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}
