//! The example binaries run as a user runs them, with their printed output checked exactly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_examples::windowed::click;

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const WINDOWED: &str = env!("CARGO_BIN_EXE_windowed");

/// How long one run of an example may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

struct Output {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(String::from).collect()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `bin` with `args`; `during` runs while it does (e.g. to serve its socket). Fails the
/// test when the program does not end within [`RUN_TIMEOUT`].
fn run_with(bin: &str, args: &[&str], during: impl FnOnce()) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    during();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{bin} {args:?} did not end within {RUN_TIMEOUT:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(bin: &str, args: &[&str]) -> Output {
    run_with(bin, args, || {})
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The `(word,count)` lines WordCount prints for `texts` read in this order: words are runs of
/// alphanumeric characters, lowercased.
fn expected_wordcount(texts: &[&str]) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for text in texts {
        for w in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let w = w.to_lowercase();
            let c = counts.entry(w.clone()).or_insert(0);
            *c += 1;
            out.push(format!("({w},{c})"));
        }
    }
    out
}

/// Per word, the counts printed must be 1, 2, 3, ... in this order.
fn assert_counts_in_order(lines: &[String]) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        let inner = l
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .unwrap_or_else(|| panic!("bad line {l}"));
        let (w, c) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("bad line {l}"));
        let c: u64 = c.parse().unwrap_or_else(|_| panic!("bad count in {l}"));
        let prev = last.insert(w.to_string(), c).unwrap_or(0);
        assert_eq!(c, prev + 1, "counts of '{w}' out of order at {l}");
    }
}

const TEXTS: [(&str, &str); 3] = [
    (
        "a.txt",
        "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n",
    ),
    (
        "b.txt",
        "The slings and arrows of outrageous fortune,\r\nOr to take arms against a sea of troubles",
    ),
    ("c.txt", "\n\nAnd by opposing end them. To die: to sleep;\n"),
];

fn input_dir() -> tempfile::TempDir {
    let dir = temp_dir("wordcount-in");
    for (name, text) in TEXTS {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    // Ignored by the files source.
    std::fs::write(dir.path().join(".hidden"), "hidden words\n").unwrap();
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    dir
}

#[test]
fn wordcount_counts_the_files_of_a_directory() {
    let dir = input_dir();
    let out = run(WORDCOUNT, &["--input", dir.path().to_str().unwrap()]);
    assert!(out.success, "{out:?}");
    let lines = out.lines();
    let texts: Vec<&str> = TEXTS.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        sorted(lines.clone()),
        sorted(expected_wordcount(&texts)),
        "{out:?}"
    );
    assert_counts_in_order(&lines);
    // One subtask reads the files in name order and one counter sees them in that order.
    assert_eq!(lines, expected_wordcount(&texts));
}

#[test]
fn wordcount_in_parallel_prints_the_same_updates_with_subtask_prefixes() {
    let dir = input_dir();
    let out = run(
        WORDCOUNT,
        &["--input", dir.path().to_str().unwrap(), "-p", "3"],
    );
    assert!(out.success, "{out:?}");
    let mut stripped = Vec::new();
    for l in out.lines() {
        let (prefix, rest) = l
            .split_once("> ")
            .unwrap_or_else(|| panic!("no subtask prefix in {l}"));
        assert!(["1", "2", "3"].contains(&prefix), "{l}");
        stripped.push(rest.to_string());
    }
    let texts: Vec<&str> = TEXTS.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        sorted(stripped.clone()),
        sorted(expected_wordcount(&texts)),
        "{out:?}"
    );
    assert_counts_in_order(&stripped);
}

#[test]
fn wordcount_reads_a_socket_until_it_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let out = run_with(WORDCOUNT, &["--socket", &address], || {
        // Like `nc -lk PORT`: accept the job's connection, send the lines, close.
        let deadline = Instant::now() + RUN_TIMEOUT;
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "wordcount never connected to {address}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.write_all(b"a\nb\nb\n").unwrap();
    });
    assert!(out.success, "{out:?}");
    assert_eq!(out.lines(), vec!["(a,1)", "(b,1)", "(b,2)"], "{out:?}");
}

#[test]
fn wordcount_without_a_listener_fails_naming_the_address() {
    let address = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run(WORDCOUNT, &["--socket", &address]);
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains(&address), "{out:?}");
}

#[test]
fn wordcount_fail_on_fails_naming_the_word_and_the_operator() {
    let dir = temp_dir("wordcount-fail");
    std::fs::write(
        dir.path().join("log.txt"),
        "all fine\nan ERROR here\nmore lines\n",
    )
    .unwrap();
    let out = run(
        WORDCOUNT,
        &[
            "--input",
            dir.path().to_str().unwrap(),
            "--fail-on",
            "ERROR",
        ],
    );
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains("ERROR"), "{out:?}");
    assert!(out.stderr.contains("tokenizer"), "{out:?}");
}

#[test]
fn wordcount_with_rocksdb_state_prints_the_same_as_with_heap_state() {
    let dir = input_dir();
    let input = dir.path().to_str().unwrap();
    let heap = run(WORDCOUNT, &["--input", input]);
    assert!(heap.success, "{heap:?}");
    let rocks = run(
        WORDCOUNT,
        &["--input", input, "-D", "state.backend.type=rocksdb"],
    );
    assert!(rocks.success, "{rocks:?}");
    assert!(!heap.stdout.is_empty());
    assert_eq!(rocks.stdout, heap.stdout);
}

#[test]
fn wordcount_rejects_a_bad_configuration_value_naming_the_key() {
    let out = run(WORDCOUNT, &["-D", "parallelism.default=zero"]);
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains("parallelism.default"), "{out:?}");
    assert!(out.stderr.contains("zero"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn wordcount_on_a_missing_directory_fails_naming_it() {
    let dir = temp_dir("wordcount-missing");
    let missing = dir.path().join("nope");
    let out = run(WORDCOUNT, &["--input", missing.to_str().unwrap()]);
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains(missing.to_str().unwrap()), "{out:?}");
}

#[test]
fn windowed_prints_every_window_exactly_and_drops_nothing() {
    let (count, users, window_ms, step_ms) = (200u64, 3u64, 1000i64, 100i64);
    let out = run(
        WINDOWED,
        &[
            "--count",
            &count.to_string(),
            "--users",
            &users.to_string(),
            "--window-ms",
            &window_ms.to_string(),
            "--step-ms",
            &step_ms.to_string(),
        ],
    );
    assert!(out.success, "{out:?}");
    // The binary delays every 7th event by 3 steps and bounds out-of-orderness by 5 steps.
    let mut per_window: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for i in 0..count {
        let c = click(i, users, step_ms, 3 * step_ms);
        let start = c.timestamp_ms.div_euclid(window_ms) * window_ms;
        *per_window.entry((c.user, start)).or_insert(0) += 1;
    }
    let expected: Vec<String> = per_window
        .iter()
        .map(|((user, start), n)| format!("({user},{start},{},{n})", start + window_ms))
        .collect();
    assert_eq!(expected.len(), 60, "20 windows of 3 users");
    assert_eq!(sorted(out.lines()), sorted(expected), "{out:?}");
    assert!(out.stderr.contains("late records dropped: 0"), "{out:?}");
}

/// A fresh directory under the system temp dir, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sluice-test-{tag}-"))
        .tempdir()
        .unwrap()
}
