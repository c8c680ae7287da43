//! Counters since the runner started (deliveries, deferrals, bounces per backend; CommuniGate
//! Pro `.bad` files), kept in memory and written to `DATA/deliver-stats.json` (write a
//! temporary file, rename) so that `nullq queue stats` can show them from another process.
//! They are statistics, not state: a crash may lose the last second of counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file name of the counters in the spool root.
pub const STATS_FILE: &str = "deliver-stats.json";

/// What one backend did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Recipients delivered.
    pub delivered: u64,
    /// Attempts that ended in "try again later".
    pub deferred: u64,
    /// Recipients failed for good (bounced, or dropped as a double bounce).
    pub failed: u64,
}

/// The counters as written to the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the runner started (unix seconds).
    pub started: u64,
    /// The runner's process id.
    pub pid: u32,
    /// Per backend kind and target, e.g. `smtp://127.0.0.1:25`.
    pub backends: BTreeMap<String, Counts>,
    /// Bounces queued (RFC 3464 reports to senders).
    pub bounces_queued: u64,
    /// Delay warnings queued.
    pub warnings_queued: u64,
    /// Double bounces dropped or sent to the postmaster.
    pub double_bounces: u64,
    /// `.bad` files CommuniGate Pro left for our messages, as found.
    pub cgp_bad_files: Vec<String>,
}

/// Live counters, shared by the runner's tasks.
#[derive(Debug)]
pub struct Stats {
    inner: Mutex<(Snapshot, bool)>,
    path: PathBuf,
}

impl Stats {
    /// Counters for the spool at `root`, starting now.
    pub fn new(root: &Path) -> Stats {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Stats {
            inner: Mutex::new((
                Snapshot {
                    started,
                    pid: std::process::id(),
                    ..Snapshot::default()
                },
                true,
            )),
            path: root.join(STATS_FILE),
        }
    }

    /// Change the counters.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        // Counters cannot be left inconsistent by a panic: use them anyway.
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g.0);
        g.1 = true;
    }

    /// Count one recipient's result for `backend`.
    pub fn count(&self, backend: &str, f: impl FnOnce(&mut Counts)) {
        self.update(|s| f(s.backends.entry(backend.to_owned()).or_default()));
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Write the file if anything changed since the last write (blocking; best effort).
    pub fn flush(&self) {
        let snapshot = {
            let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if !g.1 {
                return;
            }
            g.1 = false;
            g.0.clone()
        };
        let Ok(text) = serde_json::to_vec_pretty(&snapshot) else {
            return;
        };
        let tmp = self.path.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }

    /// Read the file a runner wrote (for `nullq queue stats`).
    pub fn read(root: &Path) -> Option<Snapshot> {
        let bytes = std::fs::read(root.join(STATS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
