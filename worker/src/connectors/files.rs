//! Text lines from the files of a directory. Bounded mode reads the files present at start;
//! continuous mode keeps watching for new files. Files are dealt to subtasks by name, so each
//! file is read by exactly one subtask. The position (finished files, and the byte offset in the
//! current one) is state: after a restore, reading resumes exactly after the last line emitted.
//! Hidden files and files starting with `_` or `.` (in-progress writes) are ignored, so a
//! writer should create a file under such a name and rename it when complete. Lines end with
//! `\n` or `\r\n`; invalid UTF-8 is replaced (U+FFFD) rather than failing the job.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::context::OperatorContext;
use crate::data::Barrier;
use crate::emit::Collector;
use crate::snapshot::{OperatorSnapshot, Redistribution};
use crate::source::{Source, SourcePoll};
use sluice_core::keygroup::stable_hash;
use sluice_core::{Result, SluiceError};

const STATE: &str = "files";

/// One file's progress: finished, or read up to `offset` bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct FileProgress {
    name: String,
    offset: u64,
    done: bool,
}

pub struct FileSource {
    dir: PathBuf,
    /// `Some(interval)`: continuous mode, re-listing the directory at this interval.
    watch: Option<Duration>,
    subtask: usize,
    parallelism: usize,
    done: BTreeSet<String>,
    queue: BTreeSet<String>,
    current: Option<(String, BufReader<File>, u64)>,
    /// Offset to resume at for files read partially before a restore.
    resume: Vec<FileProgress>,
    last_scan: Option<Instant>,
    line: Vec<u8>,
}

impl FileSource {
    pub fn new(dir: PathBuf, watch: Option<Duration>) -> Self {
        FileSource {
            dir,
            watch,
            subtask: 0,
            parallelism: 1,
            done: BTreeSet::new(),
            queue: BTreeSet::new(),
            current: None,
            resume: Vec::new(),
            last_scan: None,
            line: Vec::new(),
        }
    }

    fn mine(&self, name: &str) -> bool {
        (stable_hash(name) % self.parallelism as u64) as usize == self.subtask
    }

    fn scan(&mut self) -> Result<()> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| SluiceError::io(self.dir.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SluiceError::io(self.dir.display(), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            // Follows symbolic links: a link to a file is read like the file.
            let is_file = std::fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false);
            let current = self.current.as_ref().is_some_and(|(n, _, _)| *n == name);
            if is_file && self.mine(&name) && !self.done.contains(&name) && !current {
                self.queue.insert(name);
            }
        }
        self.last_scan = Some(Instant::now());
        Ok(())
    }

    fn open_next(&mut self) -> Result<bool> {
        let (name, mut f) = loop {
            let Some(name) = self.queue.pop_first() else {
                return Ok(false);
            };
            let path = self.dir.join(&name);
            match File::open(&path) {
                Ok(f) => break (name, f),
                // Listed but gone since (moved or deleted): nothing to read; should it come
                // back, a later listing finds it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SluiceError::io(path.display(), e)),
            }
        };
        let path = self.dir.join(&name);
        let offset = self
            .resume
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.offset)
            .unwrap_or(0);
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| SluiceError::io(path.display(), e))?;
        }
        self.current = Some((name, BufReader::with_capacity(256 * 1024, f), offset));
        Ok(true)
    }
}

impl Source for FileSource {
    type Out = String;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.subtask = ctx.subtask;
        self.parallelism = ctx.parallelism;
        if !self.dir.is_dir() {
            return Err(ctx.error(format!(
                "input directory {} does not exist",
                self.dir.display()
            )));
        }
        if let Some(e) = ctx.restored.as_ref().and_then(|r| r.operator_state(STATE)) {
            for item in &e.items {
                let p: FileProgress = bincode::deserialize(item)
                    .map_err(|e| ctx.error(format!("bad file source state: {e}")))?;
                if p.done {
                    self.done.insert(p.name);
                } else {
                    self.resume.push(p);
                }
            }
        }
        self.scan()
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<String>,
        max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let mut emitted = 0;
        while emitted < max {
            if self.current.is_none() && !self.open_next()? {
                return Ok(match self.watch {
                    None => SourcePoll::Finished,
                    Some(interval) => {
                        if self.last_scan.is_none_or(|t| t.elapsed() >= interval) {
                            self.scan()?;
                            if !self.queue.is_empty() {
                                continue;
                            }
                        }
                        if emitted > 0 {
                            SourcePoll::More
                        } else {
                            SourcePoll::Idle(interval.min(Duration::from_millis(100)))
                        }
                    }
                });
            }
            let (name, reader, offset) = self.current.as_mut().expect("a current file");
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| SluiceError::io(self.dir.join(&*name).display(), e))?;
            if n == 0 {
                let (name, _, _) = self.current.take().expect("a current file");
                self.resume.retain(|p| p.name != name);
                self.done.insert(name);
                continue;
            }
            *offset += n as u64;
            let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.collect(String::from_utf8_lossy(line).into_owned());
            emitted += 1;
        }
        Ok(SourcePoll::More)
    }

    fn snapshot_state(
        &mut self,
        _b: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        let mut items: Vec<Vec<u8>> = self
            .done
            .iter()
            .map(|n| FileProgress {
                name: n.clone(),
                offset: 0,
                done: true,
            })
            .chain(self.current.iter().map(|(n, _, off)| FileProgress {
                name: n.clone(),
                offset: *off,
                done: false,
            }))
            .chain(
                self.resume
                    .iter()
                    .filter(|p| self.current.as_ref().is_none_or(|(n, _, _)| *n != p.name))
                    .cloned(),
            )
            .map(|p| bincode::serialize(&p).expect("progress serialises"))
            .collect();
        items.dedup();
        // Every subtask needs to know every finished file, whatever the new parallelism.
        Ok(OperatorSnapshot::default().with_operator_state(STATE, Redistribution::Union, items))
    }
}
