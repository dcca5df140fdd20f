//! `sluice-net-bench`: throughput of a remote exchange (batches of 100-byte records, `String`,
//! `Bytes` or a struct, from producer threads through their outlets, loopback TCP and the data
//! plane into consumer threads' inlets in a child process, as tasks use them) against raw
//! loopback TCP moving the same bytes in writes and reads of the same size, measured in the
//! same run. Raw TCP runs twice: writing one frame-sized buffer again and again, which stays in
//! the CPU's cache, and writing the whole workload once from memory, where it was laid out
//! before the clock as the data plane's batches are. Prints MB/s and records/s of both, their ratio, the CPU time each took (both
//! processes together), and how many batches the data plane's consumers received (a producer
//! out of credit sends the batches it built meanwhile as one). Two more figures tell the data
//! plane's own cost apart from the records': the same records encoded, decoded and dropped on
//! one thread without any network (codec only, the records' own CPU time), and the data plane moving
//! the same frames, encoded once before the clock, with no record work at either end (frames
//! only: the ceiling of any record layout on this machine).
//!
//!   sluice-net-bench [--records 10000000] [--record-bytes 100] [--channels 1] [--rounds 3]
//!                    [--record-type string|bytes|struct] [--only raw|raw-memory|plane|codec|frames]...
//!
//! Without `--record-type` all three record types are measured, each against raw TCP in its
//! own rounds. `String` records cost an allocation and a copy each on decode; `Bytes` records
//! are slices of the received frame; `struct` records (twelve `u64` and a `u32`, always 100
//! bytes) stand for a user's own type, which goes through serde (bincode).
//!
//! The receiving side is this binary again, started as a child process (`--receiver`) and
//! driven over its standard input and output.

/// Records are allocated on one thread and freed on another; mimalloc handles that far better
/// than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use crossbeam_channel::{Receiver, Sender, bounded};
use sluice_bench::process_cpu_time;
use sluice_worker::data::{Batch, Data, Event};
use sluice_worker::exchange::BATCH_SIZE;
use sluice_worker::net::frame::HEADER_LEN;
use sluice_worker::net::{
    ChannelId, DataPlane, NetInlet, NetOutlet, NetReceiver, codec, records_per_frame,
};

#[derive(Parser)]
struct Args {
    /// Records to move per measurement (rounded up to full batches per channel).
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Bytes per record (ASCII text of this length).
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Remote channels sharing the connection, each with its own producer and consumer.
    #[arg(long, default_value_t = 1)]
    channels: u32,
    /// Measurements of each kind; the best of each is compared.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The record type to measure; both, one after the other, if not given.
    #[arg(long, value_enum)]
    record_type: Option<RecordType>,
    /// Build each batch inside the timed region, as an upstream operator would while the
    /// exchange runs. By default every batch is built before the clock starts, so the figure is
    /// the exchange's alone: raw TCP creates no records either.
    #[arg(long)]
    build_in_clock: bool,
    /// Run only these measurements (repeatable), to profile one path alone; the ratios are
    /// printed for the measurements that ran.
    #[arg(long, value_enum)]
    only: Vec<Measurement>,
    /// Internal: run as the receiving side.
    #[arg(long, hide = true)]
    receiver: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Measurement {
    Raw,
    RawMemory,
    Plane,
    Codec,
    Frames,
}

impl Measurement {
    /// Every measurement, in the order a round runs them: their order of declaration, so a
    /// measurement's discriminant is its index here.
    const ALL: [Measurement; 5] = [
        Measurement::Raw,
        Measurement::RawMemory,
        Measurement::Plane,
        Measurement::Codec,
        Measurement::Frames,
    ];

    /// Its name in a round's line and in the shares.
    fn name(self) -> &'static str {
        match self {
            Measurement::Raw => "raw TCP",
            Measurement::RawMemory => "raw TCP from memory",
            Measurement::Plane => "data plane",
            Measurement::Codec => "codec only",
            Measurement::Frames => "frames only",
        }
    }

    /// Its name in the table of best runs, which aligns the figures after it.
    fn short_name(self) -> &'static str {
        match self {
            Measurement::RawMemory => "raw, memory",
            other => other.name(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecordType {
    String,
    Bytes,
    Struct,
}

/// The `struct` record type: a reading of twelve `u64` and a `u32`, 100 bytes as bincode
/// writes it. Records of a user's own type go through the codec's general (serde) path.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Reading {
    sensor: u64,
    values: [u64; 11],
    flags: u32,
}

/// Bytes of a [`Reading`] on the wire.
const READING_BYTES: usize = 100;

impl Record for Reading {
    const NAME: &'static str = "struct";
    fn from_text(text: &str) -> Self {
        Reading {
            sensor: text.len() as u64,
            values: [3; 11],
            flags: 7,
        }
    }
    fn fresh(template: &Batch<Self>) -> Batch<Self> {
        Batch::from_vec(template.data.clone())
    }
    fn size(&self) -> usize {
        READING_BYTES
    }
}

/// What the benchmark needs of a record type beyond what the exchange needs.
trait Record: Data {
    const NAME: &'static str;
    fn from_text(text: &str) -> Self;
    /// A new batch of the template's records, as an upstream operator would produce it.
    fn fresh(template: &Batch<Self>) -> Batch<Self>;
    fn size(&self) -> usize;
}

impl Record for String {
    const NAME: &'static str = "string";
    fn from_text(text: &str) -> Self {
        text.to_string()
    }
    fn fresh(template: &Batch<Self>) -> Batch<Self> {
        Batch::from_vec(template.data.clone())
    }
    fn size(&self) -> usize {
        self.len()
    }
}

impl Record for Bytes {
    const NAME: &'static str = "bytes";
    fn from_text(text: &str) -> Self {
        Bytes::copy_from_slice(text.as_bytes())
    }
    /// One buffer per batch with the records sliced out of it, like a source that received
    /// them in one read: cloning the template's records would only bump reference counts.
    fn fresh(template: &Batch<Self>) -> Batch<Self> {
        let all: Bytes = template.data.concat().into();
        let mut at = 0;
        let data = template
            .data
            .iter()
            .map(|r| {
                at += r.len();
                all.slice(at - r.len()..at)
            })
            .collect();
        Batch::from_vec(data)
    }
    fn size(&self) -> usize {
        self.len()
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.receiver {
        receiver(&args)
    } else {
        driver(&args)
    }
}

/// The workload both measurements move.
struct Shape {
    batches_per_channel: u64,
    /// Batches the data plane joins into one frame (after its first), as an outlet fills a
    /// frame ([`records_per_frame`]).
    batches_per_frame: u64,
    records: u64,
    /// Bytes of one such frame on the wire, header included: raw TCP writes as many at a time.
    frame_bytes: usize,
    /// All bytes the data plane writes, end-of-input frames included; raw TCP moves as many.
    wire_bytes: u64,
}

impl Shape {
    fn of<R: Record>(args: &Args) -> Result<Shape> {
        let per_channel = args.records.div_ceil(u64::from(args.channels));
        let one = encoded_len(&Event::Batch(batch::<R>(args, 1)))?;
        let batches_per_frame = records_per_frame(one / BATCH_SIZE).div_ceil(BATCH_SIZE) as u64;
        // Whole frames per channel.
        let frames = per_channel.div_ceil(batches_per_frame * BATCH_SIZE as u64);
        let batches_per_channel = frames * batches_per_frame;
        let records = batches_per_channel * BATCH_SIZE as u64 * u64::from(args.channels);
        let frame = HEADER_LEN + encoded_len(&Event::Batch(batch::<R>(args, batches_per_frame)))?;
        let end = HEADER_LEN + encoded_len(&Event::<R>::EndOfInput)?;
        let wire_bytes = u64::from(args.channels) * (frames * frame as u64 + end as u64);
        Ok(Shape {
            batches_per_channel,
            batches_per_frame,
            records,
            frame_bytes: frame,
            wire_bytes,
        })
    }
}

/// Bytes of an event's frame payload, as the data plane's codec writes it.
fn encoded_len<R: Record>(ev: &Event<R>) -> Result<usize> {
    let mut buf = Vec::new();
    codec::encode(ev, &mut buf).map_err(|e| anyhow!(e))?;
    Ok(buf.len())
}

/// A batch of `batches` times [`BATCH_SIZE`] records.
fn batch<R: Record>(args: &Args, batches: u64) -> Batch<R> {
    let text: String = (0..args.record_bytes)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let n = BATCH_SIZE * batches as usize;
    Batch::from_vec((0..n).map(|_| R::from_text(&text)).collect())
}

fn channel(attempt: u64, producer: u32) -> ChannelId {
    ChannelId {
        attempt,
        node: 1,
        input: 0,
        producer,
        consumer: producer,
    }
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Peer {
    /// A receiver left running (the driver failed midway) would wait on its sockets forever.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ignored = self.child.kill();
            let _ignored = self.child.wait();
        }
    }
}

impl Peer {
    fn command(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        ensure!(!line.is_empty(), "the receiver process exited");
        Ok(line.trim_end().to_string())
    }
}

fn driver(args: &Args) -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--receiver")
        .args(["--channels", &args.channels.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the receiver process")?;
    let mut peer = Peer {
        stdin: child.stdin.take().context("receiver stdin")?,
        stdout: BufReader::new(child.stdout.take().context("receiver stdout")?),
        child,
    };
    let ready = peer.reply()?;
    let mut words = ready.split_whitespace().skip(1);
    let plane_addr: SocketAddr = words.next().context("plane address")?.parse()?;
    let raw_addr: SocketAddr = words.next().context("raw address")?.parse()?;
    let plane = DataPlane::bind("127.0.0.1:0".parse()?)?;
    let mut bench = Bench {
        args,
        peer: &mut peer,
        plane: &plane,
        plane_addr,
        raw_addr,
        attempt: 0,
    };
    let types = match args.record_type {
        Some(t) => vec![t],
        None => vec![RecordType::String, RecordType::Bytes, RecordType::Struct],
    };
    if types.contains(&RecordType::Struct) && args.record_bytes != READING_BYTES {
        bail!(
            "struct records are {READING_BYTES} bytes; --record-bytes {} applies to string \
             and bytes records only",
            args.record_bytes
        );
    }
    let mut summary = Vec::new();
    for t in types {
        summary.push(match t {
            RecordType::String => bench.measure::<String>()?,
            RecordType::Bytes => bench.measure::<Bytes>()?,
            RecordType::Struct => bench.measure::<Reading>()?,
        });
    }
    peer.command("quit")?;
    peer.child.wait()?;
    if summary.len() > 1 {
        println!();
        for line in summary {
            println!("{line}");
        }
    }
    Ok(())
}

/// The two processes' ends of the measurements.
struct Bench<'a> {
    args: &'a Args,
    peer: &'a mut Peer,
    plane: &'a DataPlane,
    plane_addr: SocketAddr,
    raw_addr: SocketAddr,
    /// Each data plane run uses channels of a new attempt.
    attempt: u64,
}

impl Bench<'_> {
    /// Rounds of raw TCP, data plane, codec only and frames only for records of type `R`;
    /// prints the best
    /// of each and returns the data plane's share of raw TCP as one line.
    fn measure<R: Record>(&mut self) -> Result<String> {
        let args = self.args;
        let shape = Shape::of::<R>(args)?;
        println!(
            "{} {} records of {} bytes over {} channel(s), {:.1} MB on the wire per run, {} bytes per frame",
            shape.records,
            R::NAME,
            args.record_bytes,
            args.channels,
            shape.wire_bytes as f64 / 1e6,
            shape.frame_bytes
        );
        println!(
            "records built {}",
            if args.build_in_clock {
                "inside the timed region (--build-in-clock)"
            } else {
                "before the clock starts; the exchange moves and the receiver drops them"
            }
        );
        let runs = |m: Measurement| args.only.is_empty() || args.only.contains(&m);
        // The best (fastest) run of each measurement, in the order of `Measurement::ALL`.
        let mut best = [Run::default(); Measurement::ALL.len()];
        for round in 1..=args.rounds {
            let mut took = Vec::new();
            for (m, best) in Measurement::ALL.into_iter().zip(best.iter_mut()) {
                if runs(m) {
                    let run = self.run::<R>(m, &shape)?;
                    took.push(format!("{} {}", m.name(), run.brief()));
                    *best = best.best(run);
                }
            }
            println!("round {round}: {}", took.join(", "));
        }
        let best_of = |m: Measurement| best[m as usize];
        for (m, r) in Measurement::ALL.into_iter().zip(&best) {
            if r.wall == Duration::MAX {
                continue; // not measured (--only)
            }
            let s = r.wall.as_secs_f64();
            println!(
                "{:<11} {:>9.1} MB/s  {:>6.2} M records/s  {:>5.2} CPU-s",
                m.short_name(),
                shape.wire_bytes as f64 / s / 1e6,
                shape.records as f64 / s / 1e6,
                r.cpu.as_secs_f64()
            );
        }
        // Shares of measurements that ran; `--only` may leave some out.
        let share = |of: Measurement, base: Measurement| {
            let (of_run, base_run) = (best_of(of), best_of(base));
            (of_run.wall != Duration::MAX && base_run.wall != Duration::MAX).then(|| {
                format!(
                    "{} {:.1} % of {}",
                    of.name(),
                    100.0 * base_run.wall.as_secs_f64() / of_run.wall.as_secs_f64(),
                    base.name()
                )
            })
        };
        let shares: Vec<String> = [
            share(Measurement::Plane, Measurement::Raw),
            share(Measurement::Plane, Measurement::RawMemory),
            share(Measurement::Frames, Measurement::Raw),
        ]
        .into_iter()
        .flatten()
        .collect();
        let summary = format!("{} records: {}", R::NAME, shares.join(", "));
        println!("{summary}");
        let budget = cpu_budget(
            &shape,
            &best_of(Measurement::Raw),
            &best_of(Measurement::Frames),
            &best_of(Measurement::Codec),
        );
        if let Some(budget) = budget {
            println!("{budget}");
        }
        Ok(summary)
    }
}

/// The data plane's share of raw TCP that the issue asks for.
const TARGET_SHARE: f64 = 0.70;

/// What the target share leaves each record in CPU time, against what the same run measured:
/// in [`TARGET_SHARE`] of raw TCP's speed, this machine's CPUs together have
/// `raw wall / TARGET_SHARE × CPUs` of CPU time for all the work, frames only shows what moving
/// the frames takes without any record, and codec only what encoding, decoding and dropping the
/// records take without any network. The data plane needs both, so when frames and records
/// together exceed the budget no scheduling of the work can reach the share on this machine.
/// `None` unless all three ran.
fn cpu_budget(shape: &Shape, raw: &Run, frames: &Run, codec: &Run) -> Option<String> {
    if [raw, frames, codec].iter().any(|r| r.wall == Duration::MAX) {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_record = |d: Duration| d.as_secs_f64() * 1e9 / shape.records as f64;
    let budget = per_record(raw.wall) / TARGET_SHARE * cpus as f64;
    let frames = per_record(frames.cpu);
    let records = per_record(codec.cpu);
    Some(format!(
        "CPU per record: {:.0} % of raw TCP on {cpus} CPU(s) allows {budget:.1} ns in all; \
         frames only took {frames:.1} ns and codec only {records:.1} ns ({:.1} ns together, \
         {:.1}x the allowance)",
        TARGET_SHARE * 100.0,
        frames + records,
        (frames + records) / budget
    ))
}

/// One measurement: wall time and the CPU time of both processes meanwhile.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    /// Batches the consumers received, where they count them (the data plane): a producer
    /// without credit sends the batches it built meanwhile as one.
    batches: Option<u64>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            wall: Duration::MAX,
            cpu: Duration::ZERO,
            batches: None,
        }
    }
}

impl Run {
    fn best(self, other: Run) -> Run {
        if other.wall < self.wall { other } else { self }
    }

    fn brief(&self) -> String {
        let batches = self
            .batches
            .map(|n| format!(", {n} batches"))
            .unwrap_or_default();
        format!(
            "{:.3} s ({:.2} CPU-s{batches})",
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64()
        )
    }
}

/// Splits a reply `done <fields...> [batches=<n>] <child CPU seconds>` into its fields, the
/// batches received if counted, and the CPU time.
fn parse_done(reply: &str) -> Result<(String, Option<u64>, Duration)> {
    let (fields, cpu) = reply
        .rsplit_once(' ')
        .ok_or_else(|| anyhow!("bad reply {reply:?}"))?;
    let cpu = Duration::from_secs_f64(cpu.parse()?);
    match fields.rsplit_once(" batches=") {
        Some((fields, n)) => Ok((fields.to_string(), Some(n.parse()?), cpu)),
        None => Ok((fields.to_string(), None, cpu)),
    }
}

/// Where raw TCP's sender takes the bytes it writes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawSource {
    /// One frame-sized buffer, written again and again: it stays in the CPU's cache.
    OneFrame,
    /// The whole workload's bytes, laid out in memory before the clock starts as the data
    /// plane's batches are, each written once: the sender reads them from memory as the data
    /// plane's producers read their records.
    Memory,
}

/// Writes the workload's bytes over a plain socket in frame-sized writes.
fn raw_send(peer: &mut Peer, to: SocketAddr, shape: &Shape, source: RawSource) -> Result<Run> {
    peer.command(&format!("raw {} {}", shape.wire_bytes, shape.frame_bytes))?;
    let mut s = TcpStream::connect(to)?;
    s.set_nodelay(true)?;
    // A non-zero fill writes every page, so none is faulted in while the clock runs.
    let bytes = match source {
        RawSource::OneFrame => vec![7u8; shape.frame_bytes],
        RawSource::Memory => vec![7u8; shape.wire_bytes as usize],
    };
    let cpu = process_cpu_time();
    let t = Instant::now();
    let mut left = shape.wire_bytes;
    let mut at = 0;
    while left > 0 {
        let n = left.min(shape.frame_bytes as u64) as usize;
        s.write_all(&bytes[at..at + n])?;
        left -= n as u64;
        if source == RawSource::Memory {
            at += n;
        }
    }
    let reply = peer.reply()?;
    let wall = t.elapsed();
    let cpu = process_cpu_time() - cpu;
    let (fields, _, child_cpu) = parse_done(&reply)?;
    ensure!(
        fields == format!("done {}", shape.wire_bytes),
        "raw receiver: {reply}"
    );
    Ok(Run {
        wall,
        cpu: cpu + child_cpu,
        batches: None,
    })
}

impl Bench<'_> {
    /// One run of measurement `m` with records of type `R`.
    fn run<R: Record>(&mut self, m: Measurement, shape: &Shape) -> Result<Run> {
        match m {
            Measurement::Raw => raw_send(self.peer, self.raw_addr, shape, RawSource::OneFrame),
            Measurement::RawMemory => raw_send(self.peer, self.raw_addr, shape, RawSource::Memory),
            Measurement::Plane => self.plane_send::<R>(shape),
            Measurement::Codec => codec_only::<R>(self.args, shape),
            Measurement::Frames => self.frames_send::<R>(shape),
        }
    }

    /// The attempt whose channels a new data plane run uses.
    fn next_attempt(&mut self) -> u64 {
        self.attempt += 1;
        self.attempt
    }

    /// Moves the workload from producers through their outlets and the data plane into the child.
    fn plane_send<R: Record>(&mut self, shape: &Shape) -> Result<Run> {
        let attempt = self.next_attempt();
        let (plane, to, args) = (self.plane, self.plane_addr, self.args);
        self.peer.command(&format!("plane {attempt} {}", R::NAME))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let template = batch::<R>(args, 1);
        let mut producers = Producers::default();
        let mut readies = Vec::new();
        for p in 0..args.channels {
            let mut outlet =
                NetOutlet::new(plane.open_sender(to, channel(attempt, p))?, Arc::default());
            let (c, template, batches) =
                (cancel.clone(), template.clone(), shape.batches_per_channel);
            let (ready_tx, ready_rx) = bounded::<()>(1);
            readies.push(ready_rx);
            let build_in_clock = args.build_in_clock;
            producers.spawn(move |go| {
                let mut built = Batches::new(&template, batches, build_in_clock);
                let blocked = AtomicU64::new(0);
                let _ = ready_tx.send(());
                let _ = go.recv();
                while let Some(b) = built.next_batch() {
                    outlet.send(Event::Batch(b), &c, &blocked)?;
                }
                outlet.send(Event::<R>::EndOfInput, &c, &blocked)
            })?;
        }
        for r in readies {
            r.recv()?;
        }
        let expected = format!(
            "done {} {}",
            shape.records,
            shape.records * args.record_bytes as u64
        );
        producers.run(self.peer, plane, attempt, &expected)
    }

    /// Moves the workload's frames through the data plane without any record work: each producer
    /// sends the encoding of one frame's batches joined (made before the clock) as every frame,
    /// then the end of input;
    /// the child's consumers take the frames and drop them undecoded. The data plane's channels,
    /// credits, connection and hand-over to the consumers' threads are all there, so this is as fast
    /// as any layout of records could cross it.
    fn frames_send<R: Record>(&mut self, shape: &Shape) -> Result<Run> {
        let attempt = self.next_attempt();
        let (plane, to, args) = (self.plane, self.plane_addr, self.args);
        let mut encoded = Vec::new();
        let joined = batch::<R>(args, shape.batches_per_frame);
        codec::encode(&Event::Batch(joined), &mut encoded).map_err(|e| anyhow!(e))?;
        let mut end = Vec::new();
        codec::encode(&Event::<R>::EndOfInput, &mut end).map_err(|e| anyhow!(e))?;
        let (batch, end) = (Arc::new(encoded), Arc::new(end));
        let frames = shape.batches_per_channel / shape.batches_per_frame;
        self.peer.command(&format!("frames {attempt} {frames}"))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let mut producers = Producers::default();
        for p in 0..args.channels {
            let mut tx = plane.open_sender(to, channel(attempt, p))?;
            let (c, batch, end) = (cancel.clone(), batch.clone(), end.clone());
            producers.spawn(move |go| {
                let _ = go.recv();
                for _ in 0..frames {
                    tx.send(&batch, &c)?;
                }
                tx.send(&end, &c)
            })?;
        }
        let bytes = u64::from(args.channels) * (frames * batch.len() as u64 + end.len() as u64);
        let frames = u64::from(args.channels) * (frames + 1);
        producers.run(self.peer, plane, attempt, &format!("done {frames} {bytes}"))
    }
}

/// The sending threads of one data plane measurement, each waiting for the start.
#[derive(Default)]
struct Producers {
    starts: Vec<Sender<()>>,
    threads: Vec<JoinHandle<sluice_core::Result<()>>>,
}

impl Producers {
    /// Starts a producer thread; `send` gets the receiver that says go.
    fn spawn<F>(&mut self, send: F) -> Result<()>
    where
        F: FnOnce(Receiver<()>) -> sluice_core::Result<()> + Send + 'static,
    {
        let (go_tx, go_rx) = bounded::<()>(1);
        self.starts.push(go_tx);
        let producer = std::thread::Builder::new().name("producer".into());
        self.threads.push(producer.spawn(move || send(go_rx))?);
        Ok(())
    }

    /// Starts the clock and the producers, and stops the clock at the child's reply, which
    /// must be `expected` (followed by the child's CPU time); then closes the attempt's
    /// channels.
    fn run(self, peer: &mut Peer, plane: &DataPlane, attempt: u64, expected: &str) -> Result<Run> {
        let cpu = process_cpu_time();
        let t = Instant::now();
        for s in self.starts {
            s.send(())?;
        }
        let reply = peer.reply()?;
        let wall = t.elapsed();
        let cpu = process_cpu_time() - cpu;
        let (fields, batches, child_cpu) = parse_done(&reply)?;
        for th in self.threads {
            th.join()
                .map_err(|_| anyhow!("a sending thread panicked"))??;
        }
        plane.close_attempts_before(attempt + 1);
        ensure!(fields == expected, "receiver: {reply}, expected {expected}");
        Ok(Run {
            wall,
            cpu: cpu + child_cpu,
            batches,
        })
    }
}

/// The batches a producer sends: built up front (the default), or each when it is sent.
struct Batches<R: Record> {
    template: Batch<R>,
    left: u64,
    built: std::vec::IntoIter<Batch<R>>,
}

impl<R: Record> Batches<R> {
    fn new(template: &Batch<R>, count: u64, build_in_clock: bool) -> Self {
        let built: Vec<Batch<R>> = if build_in_clock {
            Vec::new()
        } else {
            (0..count).map(|_| R::fresh(template)).collect()
        };
        Batches {
            template: template.clone(),
            left: if build_in_clock { count } else { 0 },
            built: built.into_iter(),
        }
    }

    fn next_batch(&mut self) -> Option<Batch<R>> {
        if let Some(b) = self.built.next() {
            return Some(b);
        }
        (self.left > 0).then(|| {
            self.left -= 1;
            R::fresh(&self.template)
        })
    }
}

/// The records' own work, with no network and no other thread: each batch encoded into a
/// frame, decoded from it as a consumer decodes (`Bytes` records as slices of it) and dropped,
/// one after the other on this thread. The frame's buffer is taken back once its records are
/// gone, as the data plane's buffers are reused, so no page is touched for the first time in
/// the clock. Wall and CPU time are the same here; it is the CPU time that counts.
fn codec_only<R: Record>(args: &Args, shape: &Shape) -> Result<Run> {
    let batches = shape.batches_per_channel * u64::from(args.channels);
    let template = batch::<R>(args, 1);
    let mut built = Batches::new(&template, batches, args.build_in_clock);
    let mut buf = Vec::new();
    let mut records = 0u64;
    let cpu = process_cpu_time();
    let t = Instant::now();
    while let Some(b) = built.next_batch() {
        buf.clear();
        codec::encode(&Event::Batch(b), &mut buf).map_err(|e| anyhow!(e))?;
        let frame = Bytes::from(std::mem::take(&mut buf));
        match codec::decode_frame::<R>(frame.clone()).map_err(|e| anyhow!(e))? {
            Event::Batch(b) => records += b.data.iter().filter(|r| r.size() > 0).count() as u64,
            _ => bail!("a batch decoded as another event"),
        }
        // The decoded records are gone: the frame is this thread's alone again.
        buf = frame.try_into_mut().map(Vec::from).unwrap_or_default();
    }
    let wall = t.elapsed();
    ensure!(
        records == shape.records,
        "codec only moved {records} records"
    );
    Ok(Run {
        wall,
        cpu: process_cpu_time() - cpu,
        batches: None,
    })
}

/// The child process: serves one command per line until `quit`.
fn receiver(args: &Args) -> Result<()> {
    let plane = DataPlane::bind("127.0.0.1:0".parse()?)?;
    let raw = TcpListener::bind("127.0.0.1:0")?;
    println!("ready {} {}", plane.local_addr(), raw.local_addr()?);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("raw"), Some(n), Some(read_size)) => {
                let cpu = process_cpu_time();
                let got = raw_receive(&raw, n.parse()?, read_size.parse()?)?;
                let cpu = (process_cpu_time() - cpu).as_secs_f64();
                println!("done {got} {cpu}");
            }
            (Some("plane"), Some(attempt), Some(record_type)) => {
                let cpu = process_cpu_time();
                let attempt = attempt.parse()?;
                let [records, bytes, batches] = match record_type {
                    String::NAME => plane_receive::<String>(&plane, args, attempt)?,
                    Bytes::NAME => plane_receive::<Bytes>(&plane, args, attempt)?,
                    Reading::NAME => plane_receive::<Reading>(&plane, args, attempt)?,
                    other => bail!("unknown record type {other}"),
                };
                let cpu = (process_cpu_time() - cpu).as_secs_f64();
                println!("done {records} {bytes} batches={batches} {cpu}");
            }
            (Some("frames"), Some(attempt), Some(frames)) => {
                let cpu = process_cpu_time();
                let [frames, bytes] =
                    frames_receive(&plane, args, attempt.parse()?, frames.parse()?)?;
                let cpu = (process_cpu_time() - cpu).as_secs_f64();
                println!("done {frames} {bytes} {cpu}");
            }
            (Some("quit"), _, _) => return Ok(()),
            _ => bail!("unknown command {line:?}"),
        }
    }
    Ok(())
}

fn raw_receive(listener: &TcpListener, bytes: u64, read_size: usize) -> Result<u64> {
    let (mut s, _) = listener.accept()?;
    let mut buf = vec![0u8; read_size];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf)?;
        ensure!(n > 0, "raw sender closed early");
        got += n as u64;
    }
    Ok(got)
}

/// The child's end of [`Bench::frames_send`]: every channel's frames (`data` frames of batches
/// and the end of input), taken and dropped undecoded; returns how many frames and payload
/// bytes came.
fn frames_receive(plane: &DataPlane, args: &Args, attempt: u64, data: u64) -> Result<[u64; 2]> {
    receive_all(plane, args, attempt, move |rx| {
        let (mut frames, mut bytes) = (0u64, 0u64);
        while frames <= data {
            let Some(frame) = rx.recv_timeout(Duration::from_secs(60))? else {
                bail!("no frame within a minute");
            };
            frames += 1;
            bytes += frame.len() as u64;
        }
        Ok([frames, bytes])
    })
}

/// The child's end of [`Bench::plane_send`]: every channel's events, decoded; returns how many
/// records, record bytes and batches came.
fn plane_receive<R: Record>(plane: &DataPlane, args: &Args, attempt: u64) -> Result<[u64; 3]> {
    receive_all(plane, args, attempt, |rx| {
        let mut inlet = NetInlet::<R>::new(rx, Arc::default());
        let (mut records, mut bytes, mut batches) = (0u64, 0u64, 0u64);
        loop {
            let Some(ev) = inlet.recv_timeout(Duration::from_secs(60))? else {
                bail!("no event within a minute");
            };
            match ev {
                Event::Batch(b) => {
                    batches += 1;
                    records += b.len() as u64;
                    bytes += b.data.iter().map(|r| r.size() as u64).sum::<u64>();
                }
                Event::EndOfInput => return Ok([records, bytes, batches]),
                _ => {}
            }
        }
    })
}

/// Runs `consume` on a consumer thread of its own for each channel of the attempt, with its
/// receiving end, and adds up the counts they return; then closes the channels.
fn receive_all<F, const N: usize>(
    plane: &DataPlane,
    args: &Args,
    attempt: u64,
    consume: F,
) -> Result<[u64; N]>
where
    F: Fn(NetReceiver) -> Result<[u64; N]> + Clone + Send + 'static,
{
    let mut consumers = Vec::new();
    for p in 0..args.channels {
        let rx = plane.open_receiver(channel(attempt, p))?;
        let consume = consume.clone();
        let consumer = std::thread::Builder::new().name("consumer".into());
        consumers.push(consumer.spawn(move || consume(rx))?);
    }
    let mut sums = [0u64; N];
    for c in consumers {
        let counts = c.join().map_err(|_| anyhow!("a consumer panicked"))??;
        for (sum, n) in sums.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    plane.close_attempts_before(attempt + 1);
    Ok(sums)
}
