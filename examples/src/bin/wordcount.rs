//! WordCount, the classic first job: counts words from a socket (`--socket host:port`, e.g.
//! `nc -lk 9999`) or from text files in a directory (`--input DIR`, `--continuous` to keep
//! watching it), printing `(word,count)` after every word.
//!
//! `--generate N [--rate R]` counts N generated lines instead (bounded and replayable), and
//! `--panic-on WORD` makes an operator panic on a line holding `WORD`, and `--output DIR` writes the updates as exactly-once part files instead of printing them.
//! `--discard` drops the updates instead (to time the counting alone, as the benchmarks do).
//!
//! `wordcount [--socket HOST:PORT | --input DIR [--continuous] | --generate N [--rate R]]
//! [--output DIR | --discard] [--fail-on WORD] [-p N] [-D key=value]...`
//!
//! Like every job binary, `wordcount --plan` prints its plan and `--worker MASTER` runs it as
//! a process of a cluster job.

/// Records cross task threads; mimalloc frees them cheaply on the receiving side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use sluice::{RollingPolicy, StreamEnv};
use sluice_examples::wordcount::{count_words, generated_line, print};

#[derive(Parser)]
#[command(about = "Counts words from a socket or a directory of text files")]
struct Args {
    /// Read lines from this socket (like `nc -lk PORT`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "input")]
    socket: Option<String>,
    /// Read lines from the text files in this directory.
    #[arg(long, value_name = "DIR")]
    input: Option<std::path::PathBuf>,
    /// With --input: keep watching the directory for new files.
    #[arg(long, requires = "input")]
    continuous: bool,
    /// Count this many generated lines (a bounded, replayable source).
    #[arg(long, value_name = "N", conflicts_with_all = ["input", "socket"])]
    generate: Option<u64>,
    /// With --generate: at most this many lines per second.
    #[arg(long, value_name = "R", requires = "generate")]
    rate: Option<f64>,
    /// Write the updates as part files in this directory (exactly-once with checkpoints).
    #[arg(long, value_name = "DIR")]
    output: Option<std::path::PathBuf>,
    /// Drop the updates instead of printing or writing them (to time the counting alone).
    #[arg(long, conflicts_with = "output")]
    discard: bool,
    /// Fail when this word is seen (to demonstrate recovery).
    #[arg(long, value_name = "WORD")]
    fail_on: Option<String>,
    /// Panic on a line holding this word (a crashing operator).
    #[arg(long, value_name = "WORD")]
    panic_on: Option<String>,
    #[arg(short = 'p', long)]
    parallelism: Option<usize>,
    /// Configuration overrides with Flink's key names, e.g. -D state.backend.type=rocksdb.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    config: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse_from(sluice::job_args());
    let env = StreamEnv::from_config_file(None, &args.config)?;
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
    let lines = match (&args.socket, &args.input) {
        _ if args.generate.is_some() => env
            .generate(args.generate, args.rate, generated_line)
            .uid("lines"),
        (Some(addr), _) => env.socket_text_stream(addr).uid("lines"),
        (None, Some(dir)) => {
            let watch = args.continuous.then_some(Duration::from_secs(1));
            env.read_text_files(dir, watch).uid("lines")
        }
        (None, None) => {
            let text = "To be, or not to be, that is the question".to_string();
            eprintln!("no --socket or --input given: counting a built-in line");
            env.from_collection(vec![text]).uid("lines")
        }
    };
    if args.socket.is_none() && args.input.is_none() && args.continuous {
        bail!("--continuous needs --input");
    }
    let lines = match args.panic_on.clone() {
        Some(word) => lines
            .map(move |line: String| {
                if line.split_whitespace().any(|w| w == word) {
                    panic!("a line holds the word '{word}' (--panic-on)");
                }
                line
            })
            .uid("panicking"),
        None => lines,
    };
    let counts = count_words(&lines, args.fail_on.clone());
    match &args.output {
        Some(dir) => counts
            .write_text_files(dir, RollingPolicy::default())
            .uid("files"),
        None if args.discard => counts.discard().uid("discard"),
        None => print(&counts),
    };
    let result = env.execute("WordCount")?;
    eprintln!(
        "job {} {:?} in {:.2?}",
        result.job_id, result.status, result.duration
    );
    Ok(())
}
