//! Counters since the runner started (deliveries, deferrals, bounces per backend; CommuniGate
//! Pro `.bad` files), kept in memory and written to `DATA/deliver-stats.json` (write a
//! temporary file, rename) so that `nullq queue stats` can show them from another process.
//! They are statistics, not state: a crash may lose the last second of counts. Each count also
//! goes to the process's [`Metrics`] (`nullq_deliveries_total`, `nullq_cgp_bad_files_total`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::metrics::{DeliveryResult, Metrics};

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
    metrics: Arc<Metrics>,
}

impl Stats {
    /// Counters for the spool at `root`, starting now, also counted in `metrics`.
    pub fn new(root: &Path, metrics: Arc<Metrics>) -> Stats {
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
            metrics,
        }
    }

    /// Change the counters.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        // Counters cannot be left inconsistent by a panic: use them anyway.
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g.0);
        g.1 = true;
    }

    /// Count one recipient's result through `backend` (a target as text, `smtp://HOST:PORT`):
    /// in the file by target, in the metrics by kind (the scheme: `smtp`, `cgp`, ...), which
    /// keeps the metric's labels few and free of paths and commands.
    pub fn count(&self, backend: &str, result: DeliveryResult) {
        self.update(|s| {
            let c = s.backends.entry(backend.to_owned()).or_default();
            match result {
                DeliveryResult::Delivered => c.delivered += 1,
                DeliveryResult::Deferred => c.deferred += 1,
                DeliveryResult::Failed => c.failed += 1,
            }
        });
        let kind = backend.split(':').next().unwrap_or(backend);
        self.metrics.delivery(kind, result);
    }

    /// Count a CommuniGate Pro `.bad` file found at `path`.
    pub fn bad_file(&self, path: String) {
        self.update(|s| s.cgp_bad_files.push(path));
        self.metrics.cgp_bad_file();
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
