//! Built-in connectors end to end: the socket source, the files source (bounded and
//! continuous) and the rolling file sink, each checked against exact outputs.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sluice::prelude::*;
use sluice::{CollectHandle, JobStatus, RollingPolicy};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Waits until `cond` holds, failing the test with `what` after `secs` seconds.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Running word counts: `(word, count so far)` after every word.
fn word_counts(lines: &DataStream<String>) -> DataStream<(String, u64)> {
    lines
        .flat_map(|l: String| {
            l.split_whitespace()
                .map(|w| (w.to_string(), 1u64))
                .collect::<Vec<_>>()
        })
        .key_by_field(|r: &(String, u64)| &r.0)
        .sum()
        .uid("counts")
}

/// The updates a running word count emits for `text`: `(w, 1) ..= (w, n)` for each word `w`.
fn expected_updates(text: &str) -> Vec<(String, u64)> {
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        let c = seen.entry(w).or_insert(0);
        *c += 1;
        out.push((w.to_string(), *c));
    }
    sorted(out)
}

// ---------------------------------------------------------------------------------------------
// Socket source
// ---------------------------------------------------------------------------------------------

/// Serves `chunks` to the first connection, one write each, then closes it.
fn serve_once(chunks: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        for c in chunks {
            conn.write_all(&c).unwrap();
            conn.flush().unwrap();
            // Separate writes arrive as separate reads more often than not; either way the
            // output must be the same.
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dropping the connection closes it: the source sees end of stream.
    });
    (address, server)
}

#[test]
fn socket_word_count_ends_at_end_of_stream() {
    // A line split over two writes, a CRLF line, an empty line and a last line without newline.
    let chunks: Vec<Vec<u8>> = vec![
        b"to be or\nnot to".to_vec(),
        b" be\r\n\nthat is\n".to_vec(),
        b"the question be".to_vec(),
    ];
    let text = "to be or\nnot to be\n\nthat is\nthe question be";
    let (address, server) = serve_once(chunks);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let lines = env.socket_text_stream(&address).uid("socket");
    let (raw, raw_sink) = lines.collect();
    let _ = raw_sink.set_parallelism(1); // forward from the source: lines stay in order
    let (got, _) = word_counts(&lines).collect();
    let r = env.execute("socket word count").unwrap();
    server.join().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(
        raw.get(),
        vec!["to be or", "not to be", "", "that is", "the question be"],
        "lines in order, CR stripped"
    );
    assert_eq!(sorted(got.get()), expected_updates(text));
    assert_eq!(r.metrics("socket").unwrap().records_out, 5);
}

#[test]
fn socket_source_replaces_invalid_utf8_and_strips_a_final_carriage_return() {
    let chunks: Vec<Vec<u8>> = vec![
        b"caf\xc3".to_vec(), // a character split over two reads
        b"\xa9 ok\n".to_vec(),
        b"bad \xff byte\r\n".to_vec(),
        b"last\r".to_vec(),
    ];
    let (address, server) = serve_once(chunks);
    let env = StreamEnv::new();
    let (got, _) = env.socket_text_stream(&address).collect();
    env.execute("socket utf8").unwrap();
    server.join().unwrap();
    assert_eq!(got.get(), vec!["caf\u{e9} ok", "bad \u{fffd} byte", "last"]);
}

#[test]
fn socket_source_reads_more_than_one_batch_and_one_read_buffer() {
    // ~300 KB in 20 000 lines: several reads of the source's buffer and many batches.
    let mut text = String::new();
    for i in 0..20_000u64 {
        text.push_str(&format!("w{} x{}\n", i % 13, i % 1000));
    }
    let bytes = text.clone().into_bytes();
    let chunks: Vec<Vec<u8>> = bytes.chunks(7_777).map(|c| c.to_vec()).collect();
    let (address, server) = serve_once(chunks);
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let (got, _) = word_counts(&env.socket_text_stream(&address)).collect();
    env.execute("socket big").unwrap();
    server.join().unwrap();
    assert_eq!(sorted(got.get()), expected_updates(&text));
}

#[test]
fn socket_source_ends_a_job_at_once_when_the_peer_closes_without_data() {
    let (address, server) = serve_once(Vec::new());
    let env = StreamEnv::new();
    let (got, _) = env.socket_text_stream(&address).collect();
    let r = env.execute("empty socket").unwrap();
    server.join().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert!(got.is_empty());
}

#[test]
fn socket_source_without_a_listener_fails_naming_the_address() {
    // Bind then drop: the port is free and (almost surely) nobody listens on it.
    let address = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let env = StreamEnv::new();
    env.socket_text_stream(&address).uid("socket").discard();
    let started = Instant::now();
    let e = env.execute("no listener").unwrap_err().to_string();
    assert!(e.contains(&address), "error does not name {address}: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn socket_source_with_a_bad_address_fails_naming_it() {
    let env = StreamEnv::new();
    env.socket_text_stream("127.0.0.1:not-a-port").discard();
    let e = env.execute("bad address").unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:not-a-port"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Files source
// ---------------------------------------------------------------------------------------------

/// Writes `name` in `dir` atomically: under a hidden name first, then renamed.
fn write_file(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A directory of input files and the lines the source must read from it.
fn input_dir() -> (tempfile::TempDir, Vec<String>) {
    let dir = temp_dir("files-in");
    let mut expected: Vec<String> = Vec::new();
    // Enough files that every subtask of three gets some.
    for f in 0..12 {
        let lines: Vec<String> = (0..(f * 7 + 1))
            .map(|i| format!("file{f} line{i}"))
            .collect();
        write_file(
            dir.path(),
            &format!("in-{f:02}.txt"),
            format!("{}\n", lines.join("\n")).as_bytes(),
        );
        expected.extend(lines);
    }
    write_file(dir.path(), "no-newline.txt", b"first\nlast without newline");
    expected.extend(["first".to_string(), "last without newline".to_string()]);
    write_file(
        dir.path(),
        "crlf.txt",
        b"dos one\r\ndos two\r\n\r\nafter empty\r\n",
    );
    expected.extend(["dos one", "dos two", "", "after empty"].map(String::from));
    write_file(dir.path(), "empty.txt", b"");
    write_file(dir.path(), "latin1.txt", b"caf\xe9\nplain\n");
    expected.extend(["caf\u{fffd}", "plain"].map(String::from));
    // A link to a file is read like the file.
    std::os::unix::fs::symlink(
        dir.path().join("crlf.txt"),
        dir.path().join("link-to-crlf.txt"),
    )
    .unwrap();
    expected.extend(["dos one", "dos two", "", "after empty"].map(String::from));
    // Bigger than the reader's buffer and more lines than a batch.
    let big: Vec<String> = (0..30_000)
        .map(|i| format!("big line number {i:06}"))
        .collect();
    write_file(
        dir.path(),
        "big.log",
        format!("{}\n", big.join("\n")).as_bytes(),
    );
    expected.extend(big);
    // Ignored: hidden and underscore files, and directories.
    std::fs::write(dir.path().join(".x"), "hidden\n").unwrap();
    std::fs::write(dir.path().join("_y"), "underscore\n").unwrap();
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    std::fs::write(dir.path().join("subdir").join("nested.txt"), "nested\n").unwrap();
    (dir, sorted(expected))
}

#[test]
fn bounded_files_source_reads_every_line_once() {
    let (dir, expected) = input_dir();
    for parallelism in [1, 3] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let (got, _) = env.read_text_files(dir.path(), None).uid("files").collect();
        let r = env.execute("files").unwrap();
        assert_eq!(r.status, JobStatus::Finished);
        let got = sorted(got.take());
        assert_eq!(got.len(), expected.len(), "parallelism {parallelism}");
        assert_eq!(got, expected, "parallelism {parallelism}");
        assert_eq!(
            r.metrics("files").unwrap().records_out,
            expected.len() as u64
        );
    }
}

#[test]
fn files_source_on_a_missing_directory_fails_naming_it() {
    let dir = temp_dir("files-missing");
    let missing = dir.path().join("does-not-exist");
    let env = StreamEnv::new();
    env.read_text_files(&missing, None).uid("files").discard();
    let e = env.execute("missing").unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn files_source_on_a_regular_file_fails_naming_it() {
    let dir = temp_dir("files-not-dir");
    let file = dir.path().join("plain.txt");
    std::fs::write(&file, "x\n").unwrap();
    let env = StreamEnv::new();
    env.read_text_files(&file, None).discard();
    let e = env.execute("not a dir").unwrap_err().to_string();
    assert!(e.contains(&file.display().to_string()), "{e}");
}

#[test]
fn continuous_files_source_reads_new_files_exactly_once_until_cancelled() {
    let dir = temp_dir("files-watch");
    let lines =
        |tag: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{tag} {i}")).collect() };
    let content = |l: &[String]| format!("{}\n", l.join("\n"));
    let first = lines("first", 50);
    write_file(dir.path(), "a.txt", content(&first).as_bytes());

    let env = StreamEnv::new();
    env.set_parallelism(2);
    let (got, _): (CollectHandle<String>, _) = env
        .read_text_files(dir.path(), Some(Duration::from_millis(100)))
        .uid("files")
        .collect();
    let client = env.execute_async("watch").unwrap();
    wait_until(30, "the first file's lines", || got.len() >= first.len());

    let second = lines("second", 3000);
    write_file(dir.path(), "b.txt", content(&second).as_bytes());
    wait_until(30, "the second file's lines", || {
        got.len() >= first.len() + second.len()
    });

    // A third file: once it is read, the directory was listed again after the second file was
    // finished, so a re-read of an earlier file would have shown up too.
    let third = lines("third", 10);
    write_file(dir.path(), "c.txt", content(&third).as_bytes());
    wait_until(30, "the third file's lines", || {
        got.len() >= first.len() + second.len() + third.len()
    });

    assert!(!client.is_finished(), "a continuous source does not end");
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Canceled);
    let expected = sorted([first, second, third].concat());
    assert_eq!(sorted(got.get()), expected);
}

// ---------------------------------------------------------------------------------------------
// Rolling file sink
// ---------------------------------------------------------------------------------------------

/// The part files in `dir` by (subtask, number), with their contents; fails on any other entry.
fn parts(dir: &Path) -> BTreeMap<(usize, u64), String> {
    parts_in(dir, false)
}

/// The visible part files in `dir`; in-progress (hidden) parts are skipped when `running`.
fn parts_in(dir: &Path, running: bool) -> BTreeMap<(usize, u64), String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if running && name.starts_with('.') && name.ends_with(".inprogress") {
            continue;
        }
        let fields: Vec<&str> = name.split('-').collect();
        let parsed = match fields.as_slice() {
            ["part", s, n] => s.parse::<usize>().ok().zip(n.parse::<u64>().ok()),
            _ => None,
        };
        let Some(key) = parsed else {
            panic!("unexpected file {name} in the sink's directory")
        };
        out.insert(key, std::fs::read_to_string(dir.join(&name)).unwrap());
    }
    out
}

fn lines_of(parts: &BTreeMap<(usize, u64), String>) -> Vec<String> {
    sorted(
        parts
            .values()
            .flat_map(|c| c.lines().map(String::from).collect::<Vec<_>>())
            .collect(),
    )
}

/// Parts of each subtask are numbered 0, 1, 2, ... without gaps.
fn assert_dense_numbering(parts: &BTreeMap<(usize, u64), String>, subtasks: usize) {
    for s in 0..subtasks {
        let numbers: Vec<u64> = parts
            .keys()
            .filter(|(t, _)| *t == s)
            .map(|(_, n)| *n)
            .collect();
        assert!(!numbers.is_empty(), "subtask {s} wrote no part");
        assert_eq!(
            numbers,
            (0..numbers.len() as u64).collect::<Vec<_>>(),
            "subtask {s}"
        );
    }
}

#[test]
fn rolling_text_sink_rolls_by_size_and_publishes_every_part() {
    let dir = temp_dir("sink-text");
    let out = dir.path().join("out"); // created by the sink
    let max = 200u64;
    let mut expected: Vec<String> = (0..2000u64).map(|i| format!("record {i:05}")).collect();
    let oversize = "x".repeat(500);
    expected.push(oversize.clone());

    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.from_collection(expected.clone())
        .rebalance()
        .write_text_files(
            &out,
            RollingPolicy {
                max_part_size: max,
                rollover_interval: Duration::from_secs(3600),
            },
        )
        .uid("sink");
    let r = env.execute("text sink").unwrap();
    assert_eq!(r.metrics("sink").unwrap().records_in, expected.len() as u64);

    let parts = parts(&out);
    assert_dense_numbering(&parts, 2);
    // 2000 lines of 13 bytes: 15 per part of at most 200 bytes.
    assert!(parts.len() >= 2000 / 15, "only {} parts", parts.len());
    for ((s, n), content) in &parts {
        assert!(content.ends_with('\n'), "part-{s}-{n} ends mid-line");
        let lines = content.lines().count();
        assert!(
            content.len() as u64 <= max || lines == 1,
            "part-{s}-{n} has {} bytes in {lines} lines",
            content.len()
        );
    }
    assert!(
        parts.values().any(|c| c.trim_end() == oversize),
        "the oversize record is alone in a part"
    );
    assert_eq!(lines_of(&parts), sorted(expected));
}

#[test]
fn rolling_sink_with_zero_interval_writes_one_record_per_part() {
    let dir = temp_dir("sink-interval");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let expected: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    env.from_collection(expected.clone())
        .rebalance()
        .write_text_files(
            dir.path(),
            RollingPolicy {
                max_part_size: 1 << 20,
                rollover_interval: Duration::ZERO,
            },
        );
    env.execute("interval sink").unwrap();
    let parts = parts(dir.path());
    assert_dense_numbering(&parts, 2);
    assert_eq!(parts.len(), expected.len());
    assert!(parts.values().all(|c| c.lines().count() == 1));
    assert_eq!(lines_of(&parts), sorted(expected));
}

#[test]
fn rolling_sink_keeps_parts_of_an_earlier_run_in_the_same_directory() {
    let dir = temp_dir("sink-rerun");
    let policy = RollingPolicy {
        max_part_size: 64,
        rollover_interval: Duration::from_secs(3600),
    };
    let run = |tag: &str| -> Vec<String> {
        let records: Vec<String> = (0..100).map(|i| format!("{tag}-{i:03}")).collect();
        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.from_collection(records.clone())
            .rebalance()
            .write_text_files(dir.path(), policy);
        env.execute("rerun").unwrap();
        records
    };
    let mut expected = run("one");
    let after_first = parts(dir.path());
    expected.extend(run("two"));
    let after_second = parts(dir.path());
    for (k, content) in &after_first {
        assert_eq!(
            after_second.get(k),
            Some(content),
            "part {k:?} of the first run changed"
        );
    }
    assert_dense_numbering(&after_second, 2);
    assert_eq!(lines_of(&after_second), sorted(expected));
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    seq: u64,
    note: Option<String>,
}

#[test]
fn rolling_json_sink_writes_records_that_parse_back() {
    let dir = temp_dir("sink-json");
    let max = 300u64;
    let records: Vec<Reading> = (0..1500u64)
        .map(|i| Reading {
            sensor: format!("s{}", i % 7),
            seq: i,
            note: (i % 5 == 0).then(|| format!("quote \" newline \n tab \t #{i}")),
        })
        .collect();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.from_collection(records.clone())
        .rebalance()
        .write_json_files(
            dir.path(),
            RollingPolicy {
                max_part_size: max,
                rollover_interval: Duration::from_secs(3600),
            },
        )
        .uid("json-sink");
    env.execute("json sink").unwrap();
    let parts = parts(dir.path());
    assert_dense_numbering(&parts, 2);
    assert!(parts.len() > 10, "only {} parts", parts.len());
    let mut got = Vec::new();
    for ((s, n), content) in &parts {
        assert!(
            content.len() as u64 <= max || content.lines().count() == 1,
            "part-{s}-{n}: {} bytes",
            content.len()
        );
        for line in content.lines() {
            got.push(
                serde_json::from_str::<Reading>(line)
                    .unwrap_or_else(|e| panic!("part-{s}-{n}: {e}: {line}")),
            );
        }
    }
    assert_eq!(sorted(got), sorted(records));
}

#[test]
fn rolling_sink_publishes_a_part_by_age_while_no_records_arrive() {
    let input = temp_dir("sink-age-in");
    let output = temp_dir("sink-age-out");
    let env = StreamEnv::new();
    env.read_text_files(input.path(), Some(Duration::from_millis(50)))
        .uid("files")
        .write_text_files(
            output.path(),
            RollingPolicy {
                max_part_size: 1 << 20,
                rollover_interval: Duration::from_millis(200),
            },
        )
        .uid("sink");
    let client = env.execute_async("age").unwrap();
    let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    write_file(
        input.path(),
        "in.txt",
        format!("{}\n", lines.join("\n")).as_bytes(),
    );
    // The input is idle after these lines: only the part's age can publish them.
    let mut published = BTreeMap::new();
    wait_until(30, "a published part", || {
        published = parts_in(output.path(), true);
        lines_of(&published).len() >= lines.len()
    });
    assert!(!client.is_finished());
    client.cancel();
    assert_eq!(client.wait().unwrap().status, JobStatus::Canceled);
    assert_eq!(published.keys().copied().collect::<Vec<_>>(), vec![(0, 0)]);
    assert_eq!(lines_of(&published), sorted(lines));
}

/// A fresh directory under the system temp dir, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sluice-test-{tag}-"))
        .tempdir()
        .unwrap()
}
