//! One scan of the queue that `nullq queue stats`, `nullq health` and the metrics' queue gauges
//! share, so that the three never disagree: the loadable messages, their summary, and the
//! CommuniGate Pro `.bad` files of the configured folders.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nullq_config::server::{ServerConfig, Target};
use nullq_spool::{QueueId, QueuedMessage, Spool, SpoolError};

/// Every queued message that can be loaded; one that cannot is handed to `unreadable` (the
/// tools print it, the server logs it) and left out.
pub fn load_all_with(
    spool: &Spool,
    mut unreadable: impl FnMut(&QueueId, &SpoolError),
) -> Result<Vec<QueuedMessage>, SpoolError> {
    let mut out = Vec::new();
    for id in spool.list()? {
        match spool.load(&id) {
            Ok(q) => out.push(q),
            // Delivered and removed between list and load.
            Err(e) if e.is_not_found() => {}
            Err(e) => unreadable(&id, &e),
        }
    }
    Ok(out)
}

/// What `nullq queue stats`, `nullq health` and the metrics' queue gauges tell of the queue:
/// one scan, so that the three never disagree.
#[derive(Debug, Clone, Default)]
pub struct QueueSummary {
    /// Messages in `queue/`.
    pub messages: usize,
    /// The message that arrived first, and when (its envelope's arrival time).
    pub oldest: Option<(QueueId, SystemTime)>,
}

impl QueueSummary {
    /// Summarize `all`.
    pub fn of(all: &[QueuedMessage]) -> QueueSummary {
        QueueSummary {
            messages: all.len(),
            oldest: all
                .iter()
                .min_by_key(|q| q.envelope.arrival)
                .map(|q| (q.id, q.envelope.arrival)),
        }
    }

    /// Scan the queue (the envelopes, not the messages); `unreadable` is told of a message
    /// that cannot be loaded, which is then not counted.
    pub fn scan(
        spool: &Spool,
        unreadable: impl FnMut(&QueueId, &SpoolError),
    ) -> Result<QueueSummary, SpoolError> {
        Ok(QueueSummary::of(&load_all_with(spool, unreadable)?))
    }

    /// How long the oldest message has waited at `now` (zero for an empty queue, or an arrival
    /// in the future of a clock set back).
    pub fn oldest_age(&self, now: SystemTime) -> Duration {
        self.oldest
            .and_then(|(_, t)| now.duration_since(t).ok())
            .unwrap_or_default()
    }
}

/// The CommuniGate Pro Submitted folders among the configured targets (the default one and
/// the routes'), each once.
pub fn cgp_folders(config: &ServerConfig) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let default_target = config.delivery.effective_target(&config.data_dir);
    let targets = config
        .delivery
        .routes
        .values()
        .chain(std::iter::once(&default_target));
    for t in targets {
        if let Target::Cgp(dir) = t {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
    }
    dirs
}

/// The `ID.bad` files (a submission CommuniGate Pro could not process, not yet handled) in the
/// configured Submitted folders, as paths. A folder that cannot be read has none to show.
pub fn cgp_bad_files(config: &ServerConfig) -> Vec<String> {
    let mut bad_files = Vec::new();
    for dir in &cgp_folders(config) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name
                    .strip_suffix(".bad")
                    .is_some_and(|s| s.parse::<QueueId>().is_ok())
                {
                    bad_files.push(e.path().display().to_string());
                }
            }
        }
    }
    bad_files.sort();
    bad_files
}

/// `3d4h`, `12m`, `45s`: an age or a wait for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
