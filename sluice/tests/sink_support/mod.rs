//! What the file-sink tests share: checkpointing settings, the records they write, and a
//! reader of the sink's directory that tells visible parts from in-progress ones.
// Each test file uses only some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sluice::RollingPolicy;
use sluice::prelude::*;

pub fn checkpointing(env: &StreamEnv, dir: &Path, interval: &str) {
    env.set("execution.checkpointing.interval", interval)
        .unwrap();
    env.set("state.checkpoints.dir", dir.to_str().unwrap())
        .unwrap();
    env.set("restart-strategy.type", "fixed-delay").unwrap();
    env.set("restart-strategy.fixed-delay.delay", "10 ms")
        .unwrap();
    short_checkpoint_timeout(env);
}

/// A checkpoint that can no longer complete (a task failed before acknowledging it) holds the
/// next one back until it times out: keep that wait short.
pub fn short_checkpoint_timeout(env: &StreamEnv) {
    env.set("execution.checkpointing.timeout", "5 s").unwrap();
}

/// Parts small enough to roll between checkpoints too.
pub fn small_parts() -> RollingPolicy {
    RollingPolicy {
        max_part_size: 1000,
        rollover_interval: Duration::from_secs(3600),
    }
}

pub fn line(x: u64) -> String {
    format!("record {x:06}")
}

pub fn expected_lines(count: u64) -> Vec<String> {
    (0..count).map(line).collect()
}

/// What the sink's directory holds: visible parts by name with their contents, and the names
/// of in-progress parts. Fails on any other file.
pub struct DirContents {
    pub visible: BTreeMap<String, String>,
    pub in_progress: Vec<String>,
}

pub fn read_sink_dir(dir: &Path) -> DirContents {
    let mut visible = BTreeMap::new();
    let mut in_progress = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.starts_with(".part-") && name.ends_with(".inprogress") {
            in_progress.push(name);
        } else if name.starts_with("part-") {
            let content = std::fs::read_to_string(dir.join(&name)).unwrap();
            assert!(content.ends_with('\n'), "{name} ends mid-line");
            visible.insert(name, content);
        } else {
            panic!("unexpected file {name} in the sink's directory");
        }
    }
    DirContents {
        visible,
        in_progress,
    }
}

pub fn lines_of(visible: &BTreeMap<String, String>) -> Vec<String> {
    visible
        .values()
        .flat_map(|c| c.lines().map(String::from).collect::<Vec<_>>())
        .collect()
}
