//! The job processes of one daemon: started from a bundle, watched until they exit, killed on
//! request.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::settings::check_name;
use super::unpack::Unpack;
use crate::control::fence::EPOCH_ENV;
use crate::control::{Conn, EpochFence, ToMaster};

/// How often a watcher looks whether its job process has exited.
const POLL: Duration = Duration::from_millis(50);

/// Names of the environment variables a job process gets.
pub mod env {
    pub const ROLE: &str = "SLUICE_ROLE";
    pub const MASTER: &str = "SLUICE_MASTER";
    pub const JOB_ID: &str = "SLUICE_JOB_ID";
    pub const WORKER_ID: &str = "SLUICE_WORKER_ID";
    pub const SLOTS: &str = "SLUICE_SLOTS";
    pub const DYNAMIC_PROPERTIES: &str = "SLUICE_DYNAMIC_PROPERTIES";
    pub const BUNDLE_DIR: &str = "SLUICE_BUNDLE_DIR";
    pub const EXIT_ON_STDIN_EOF: &str = "SLUICE_EXIT_ON_STDIN_EOF";
}

/// What every job process of this daemon shares.
pub(crate) struct JobEnv {
    pub worker_id: String,
    pub master: SocketAddr,
    pub slots: usize,
    pub work_dir: PathBuf,
    pub log_dir: PathBuf,
    pub unpack: Unpack,
    /// The worker's newest leadership epoch, handed to each job process it starts.
    pub fence: Arc<EpochFence>,
}

/// The running job processes, shared by the control loop, their watchers and the signal
/// handler.
pub(crate) struct Jobs {
    env: JobEnv,
    conn: Conn,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    running: HashMap<String, Running>,
    /// Numbers launches, so a watcher never mistakes a later process of its job for its own.
    launches: u64,
    /// Set by [`Jobs::kill_all`]: the daemon is stopping and starts nothing more.
    closed: bool,
}

struct Running {
    launch: u64,
    /// Holds the write end of the process's stdin open until the process is gone.
    child: Child,
}

impl Jobs {
    pub fn new(env: JobEnv, conn: Conn) -> Arc<Jobs> {
        Arc::new(Jobs {
            env,
            conn,
            table: Mutex::new(Table::default()),
        })
    }

    /// Unpacks `bundle` and starts the job process. When that fails, the master is told with
    /// `JobProcessExited`; a lost master connection is noticed by the control loop.
    pub fn launch(
        self: &Arc<Self>,
        job_id: &str,
        bundle: Vec<u8>,
        args: &[String],
        config: &[String],
    ) {
        if let Err(why) = check_name(job_id) {
            let reason = format!("could not start: job id '{job_id}' is not usable ({why})");
            self.report_exit(job_id, &reason);
            return;
        }
        if self.table.lock().running.contains_key(job_id) {
            self.say(&format!(
                "job {job_id} already runs here; a second launch is ignored"
            ));
            return;
        }
        let dir = self.job_dir(job_id);
        match self.start(job_id, &dir, bundle, args, config) {
            Ok(child) => {
                let pid = child.id();
                let mut table = self.table.lock();
                if table.closed {
                    drop(table);
                    stop(child);
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                table.launches += 1;
                let launch = table.launches;
                table
                    .running
                    .insert(job_id.to_string(), Running { launch, child });
                drop(table);
                self.say(&format!("started job {job_id} (pid {pid})"));
                let jobs = Arc::clone(self);
                let id = job_id.to_string();
                let watcher = std::thread::Builder::new()
                    .name(format!("job-{job_id}"))
                    .stack_size(256 << 10)
                    .spawn(move || jobs.watch(&id, launch));
                if let Err(e) = watcher {
                    self.say(&format!("cannot watch job {job_id}: {e}; killing it"));
                    self.kill(job_id);
                    self.report_exit(job_id, &format!("could not start: {e}"));
                }
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                self.report_exit(job_id, &format!("could not start: {e}"));
            }
        }
    }

    /// Writes and unpacks the bundle into a fresh `dir` and spawns its entry program.
    fn start(
        &self,
        job_id: &str,
        dir: &Path,
        bundle: Vec<u8>,
        args: &[String],
        config: &[String],
    ) -> Result<Child, String> {
        let env = &self.env;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = dir.join("job.bundle");
        std::fs::write(&file, bundle)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let unpacked = dir.join("bundle");
        let entry = (env.unpack)(&file, &unpacked)?;
        let _ = std::fs::remove_file(&file);

        std::fs::create_dir_all(&env.log_dir)
            .map_err(|e| format!("cannot create {}: {e}", env.log_dir.display()))?;
        let log = env
            .log_dir
            .join(format!("job-{job_id}-{}.out", env.worker_id));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        Command::new(&entry)
            .args(args)
            .env(env::ROLE, "worker")
            .env(env::MASTER, env.master.to_string())
            .env(env::JOB_ID, job_id)
            .env(env::WORKER_ID, &env.worker_id)
            .env(env::SLOTS, env.slots.to_string())
            .env(env::DYNAMIC_PROPERTIES, config.join("\n"))
            .env(env::BUNDLE_DIR, &unpacked)
            .env(env::EXIT_ON_STDIN_EOF, "1")
            .env(EPOCH_ENV, env.fence.highest().to_string())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", entry.display()))
    }

    /// Waits until launch `launch` of `job_id` exits and reports that, unless it was killed
    /// on request first.
    fn watch(&self, job_id: &str, launch: u64) {
        loop {
            std::thread::sleep(POLL);
            let mut table = self.table.lock();
            let Some(r) = table.running.get_mut(job_id).filter(|r| r.launch == launch) else {
                return;
            };
            let reason = match r.child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => describe(status),
                Err(e) => {
                    let _ = r.child.kill();
                    format!("lost track of the process: {e}")
                }
            };
            let Some(r) = table.running.remove(job_id) else {
                return;
            };
            drop(table);
            stop(r.child);
            let _ = std::fs::remove_dir_all(self.job_dir(job_id));
            self.report_exit(job_id, &reason);
            return;
        }
    }

    /// Kills the job's process (SIGKILL) without reporting it, and removes its directory.
    /// Returns whether a process was running.
    pub fn kill(&self, job_id: &str) -> bool {
        let removed = self.table.lock().running.remove(job_id);
        let was_running = removed.is_some();
        if let Some(r) = removed {
            stop(r.child);
            self.say(&format!("killed job {job_id} as asked"));
        }
        if check_name(job_id).is_ok() {
            let _ = std::fs::remove_dir_all(self.job_dir(job_id));
        }
        was_running
    }

    /// Kills every job process, starts none after, and removes the daemon's work directory.
    /// Returns how many processes were killed.
    pub fn kill_all(&self) -> usize {
        let running: Vec<Running> = {
            let mut table = self.table.lock();
            table.closed = true;
            table.running.drain().map(|(_, r)| r).collect()
        };
        let n = running.len();
        for r in running {
            stop(r.child);
        }
        let _ = std::fs::remove_dir_all(&self.env.work_dir);
        n
    }

    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.env.work_dir.join(job_id)
    }

    /// Tells the master; when the connection is gone the control loop finds out itself.
    fn report_exit(&self, job_id: &str, reason: &str) {
        self.say(&format!("job {job_id}: {reason}"));
        let _ = self.conn.send(&ToMaster::JobProcessExited {
            job_id: job_id.to_string(),
            reason: reason.to_string(),
        });
    }

    fn say(&self, what: &str) {
        eprintln!("sluice-worker {}: {what}", self.env.worker_id);
    }
}

/// Kills (if still running) and reaps a job process; dropping it closes its stdin.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An exit status in words: `exited with status 3`, `killed by signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                3 => " (SIGQUIT)",
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                13 => " (SIGPIPE)",
                15 => " (SIGTERM)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by signal {sig}{name}{core}")
        }
        None => format!("ended ({status})"),
    }
}
