//! WordCount: lines → words → `(word, 1)` → keyed running sum → `(word,count)` updates.

use std::fmt;

use serde::{Deserialize, Serialize};
use sluice::prelude::*;
use sluice::{SinkHandle, SluiceError};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

impl fmt::Display for WordCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.word, self.count)
    }
}

/// Splits lines into lowercase words; fails on `fail_on` (to demonstrate recovery).
pub fn tokenize(lines: &DataStream<String>, fail_on: Option<String>) -> DataStream<(String, u64)> {
    lines
        .try_flat_map(move |line: String, out: &mut Collector<(String, u64)>| {
            for word in line
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                if fail_on.as_deref() == Some(word) {
                    return Err(SluiceError::job(format!(
                        "saw the word '{word}' (--fail-on)"
                    )));
                }
                out.collect((word.to_lowercase(), 1));
            }
            Ok(())
        })
        .uid("tokenizer")
        .name("Tokenizer")
}

/// The counting part of the job: running counts per word.
pub fn count_words(lines: &DataStream<String>, fail_on: Option<String>) -> DataStream<WordCount> {
    tokenize(lines, fail_on)
        .key_by_field(|r: &(String, u64)| &r.0)
        .sum()
        .uid("counter")
        .name("Count")
        .map(|(word, count)| WordCount { word, count })
        .uid("to-word-count")
}

/// Prints the updates, like Flink's WordCount example.
pub fn print(counts: &DataStream<WordCount>) -> SinkHandle {
    counts.print().uid("print")
}

/// Words of generated lines come from this vocabulary.
pub const GENERATED_WORDS: u64 = 1000;

/// Every `(word,count)` update a failure-free run of `wordcount --generate n` writes, in no
/// particular order: what an exactly-once run must write, whatever failed on the way.
pub fn expected_updates(n: u64) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for i in 0..n {
        for w in generated_line(i).split_whitespace() {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .flat_map(|(w, c)| (1..=c).map(move |k| format!("({w},{k})")))
        .collect()
}

/// Line `i` of `wordcount --generate`: three words of a fixed vocabulary, deterministic, so a
/// run's expected counts are known without running it.
pub fn generated_line(i: u64) -> String {
    let w = |k: u64| format!("w{}", (i.wrapping_mul(k) + k) % GENERATED_WORDS);
    format!("{} {} {}", w(7), w(13), w(31))
}
