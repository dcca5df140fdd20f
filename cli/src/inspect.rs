//! `sluice inspect`: what a savepoint or checkpoint holds, read from `_metadata` and the state
//! files (each verified against its length and CRC32), without running anything.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};
use serde_json::json;
use sluice_hdfs_backend::{
    CheckpointMetadata, OperatorState, SnapshotDir, StateHandle, load_snapshot,
};
use sluice_worker::snapshot::{EntryIter, OperatorSnapshot};

use crate::args::InspectArgs;

pub fn inspect(a: InspectArgs) -> Result<()> {
    let (dir, meta) =
        load_snapshot(&a.path).map_err(|e| anyhow!("cannot inspect {}: {e}", a.path))?;
    match &a.dump {
        Some(uid) => dump(&dir, &meta, uid),
        None => summary(&dir, &meta),
    }
}

/// Where a handle's bytes are, for messages: the state file, or `_metadata` for inline state.
fn handle_location(dir: &SnapshotDir, handle: &StateHandle) -> String {
    // Through serde rather than a match, so handle kinds added later still print.
    let v = serde_json::to_value(handle).unwrap_or_default();
    match v["path"].as_str() {
        Some(p) => format!("{}/{p}", dir.url()),
        None => format!(
            "{}/_metadata ({} state)",
            dir.url(),
            v["type"].as_str().unwrap_or("inline")
        ),
    }
}

/// The decoded state of every subtask of `op`: (subtask, its snapshot).
fn decode(dir: &SnapshotDir, op: &OperatorState) -> Result<Vec<(usize, OperatorSnapshot)>> {
    op.subtasks
        .iter()
        .map(|st| {
            // Incremental RocksDB state is downloaded into a temporary directory and read out.
            let scratch =
                std::env::temp_dir().join(format!("sluice-inspect-{}", std::process::id()));
            let snap = sluice_worker::incremental::read_canonical(dir, &st.handle, &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            let snap: OperatorSnapshot = snap.map_err(|e| {
                anyhow!(
                    "{} (operator {}, subtask {}) is not a state snapshot this build can read: {e}",
                    handle_location(dir, &st.handle),
                    op.uid,
                    st.subtask
                )
            })?;
            Ok((st.subtask, snap))
        })
        .collect()
}

fn summary(dir: &SnapshotDir, meta: &CheckpointMetadata) -> Result<()> {
    let kind = serde_json::to_value(meta.kind)?;
    println!("{} {}", kind.as_str().unwrap_or("snapshot"), dir.url());
    println!(
        "  job {} ({}), checkpoint id {}, taken at {} ms, format version {}",
        meta.job_name, meta.job_id, meta.checkpoint_id, meta.timestamp_ms, meta.format_version
    );
    println!(
        "  max parallelism {}, {} operators, {} bytes of state",
        meta.max_parallelism,
        meta.operators.len(),
        meta.state_size()
    );
    for op in &meta.operators {
        println!();
        println!("operator {} \"{}\"", op.uid, op.name);
        println!(
            "  parallelism {}, max parallelism {}",
            op.parallelism, meta.max_parallelism
        );
        let mut groups = BTreeSet::new();
        let mut tables: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut op_states: BTreeMap<String, (String, usize, usize)> = BTreeMap::new();
        for (subtask, snap) in decode(dir, op)? {
            let st = op.subtasks.iter().find(|s| s.subtask == subtask);
            let (len, location) = st
                .map(|s| (s.handle.len(), handle_location(dir, &s.handle)))
                .unwrap_or_default();
            println!("  subtask {subtask}: {len} bytes in {location}");
            if let Some(k) = &snap.keyed {
                for (kg, blob) in &k.groups {
                    groups.insert(*kg);
                    for (table, key, value) in EntryIter::new(blob) {
                        let name = k.tables.get(table as usize).cloned();
                        let e = tables
                            .entry(name.unwrap_or_else(|| format!("#{table}")))
                            .or_default();
                        e.0 += 1;
                        e.1 += (key.len() + value.len()) as u64;
                    }
                }
                for t in &k.tables {
                    tables.entry(t.clone()).or_default();
                }
            }
            for e in &snap.operator_state {
                let entry = op_states
                    .entry(e.name.clone())
                    .or_insert_with(|| (format!("{:?}", e.mode).to_lowercase(), 0, 0));
                entry.1 += e.items.len();
                entry.2 += e.items.iter().map(Vec::len).sum::<usize>();
            }
        }
        if tables.is_empty() && groups.is_empty() {
            println!("  keyed state: none");
        } else {
            println!(
                "  keyed state: {} key groups ({})",
                groups.len(),
                ranges(&groups)
            );
            for (name, (entries, bytes)) in &tables {
                println!("    state \"{name}\": {entries} entries, {bytes} bytes");
            }
        }
        if op_states.is_empty() {
            println!("  operator state: none");
        } else {
            println!("  operator state:");
            for (name, (mode, items, bytes)) in &op_states {
                println!("    \"{name}\" ({mode}): {items} items, {bytes} bytes");
            }
        }
    }
    Ok(())
}

/// `0-3, 7, 9-12`.
fn ranges(set: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end {
            format!("{start}")
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(", ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bincode `String` is an 8-byte little-endian length and the UTF-8 bytes; when the key
/// looks like one, show it as text. Best effort: the key's real type is known only to the job.
fn key_utf8(key: &[u8]) -> Option<&str> {
    let (len, rest) = key.split_first_chunk::<8>()?;
    (!rest.is_empty() && u64::from_le_bytes(*len) as usize == rest.len())
        .then(|| std::str::from_utf8(rest).ok())
        .flatten()
}

fn dump(dir: &SnapshotDir, meta: &CheckpointMetadata, uid: &str) -> Result<()> {
    let Some(op) = meta.operators.iter().find(|o| o.uid == uid) else {
        let uids: Vec<&str> = meta.operators.iter().map(|o| o.uid.as_str()).collect();
        bail!(
            "{} has no state of an operator with uid '{uid}' (it has: {})",
            dir.url(),
            uids.join(", ")
        );
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (_, snap) in decode(dir, op)? {
        let Some(k) = &snap.keyed else { continue };
        for (kg, blob) in &k.groups {
            for (table, key, value) in EntryIter::new(blob) {
                // Written by hand to keep the documented field order.
                let mut line = format!(
                    "{{\"key_group\":{kg},\"state\":{},\"key\":\"{}\"",
                    json!(
                        k.tables
                            .get(table as usize)
                            .cloned()
                            .unwrap_or_else(|| format!("#{table}"))
                    ),
                    hex(key)
                );
                if let Some(s) = key_utf8(key) {
                    line.push_str(&format!(",\"key_utf8\":{}", json!(s)));
                }
                line.push_str(&format!(",\"value\":\"{}\"}}", hex(value)));
                std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())?;
            }
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_print_as_ranges() {
        let set: BTreeSet<u16> = [0, 1, 2, 3, 7, 9, 10].into_iter().collect();
        assert_eq!(ranges(&set), "0-3, 7, 9-10");
    }

    #[test]
    fn string_keys_are_decoded_best_effort() {
        let key = bincode::serialize("hello").unwrap();
        assert_eq!(key_utf8(&key), Some("hello"));
        assert_eq!(key_utf8(&bincode::serialize(&7u64).unwrap()), None);
    }
}
