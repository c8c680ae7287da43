//! How a Maildir's or a CommuniGate Pro folder's writer makes its batch durable: with the
//! spool's commits. The writer hands its files, then the directory they were renamed into, to
//! the spool's committer ([`Spool::sync_with_batch`]), which syncs them with the messages it is
//! committing. Under load the committer is always flushing, so the filesystem's journal then
//! commits once for receiving and delivering, instead of once for receiving and again for each
//! delivery batch (measured: BENCHMARKS.md, "Delivery that keeps up"). The order stays the
//! Maildir's: every file durable before its rename, the renames durable before the delivery is
//! answered (and so before the message leaves the queue).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nullq_fs::{BatchSync, OwnSyncs};
use nullq_spool::{PendingSync, Spool, SpoolError};

/// The syncs of a delivery batch: through the spool's committer, or the batch's own.
#[derive(Debug, Clone, Default)]
pub struct Syncs {
    /// `None`: the batch syncs its files itself ([`OwnSyncs`]).
    spool: Option<Spool>,
}

impl Syncs {
    /// Syncs shared with the commits of `spool`.
    pub fn with(spool: &Spool) -> Syncs {
        Syncs {
            spool: Some(spool.clone()),
        }
    }
}

impl Syncs {
    /// The spool to sync with: none once its committer is poisoned (after a failed flush of
    /// `queue/`, or its thread gone), so that the messages still queued can be delivered.
    fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref().filter(|s| !s.committer().is_poisoned())
    }
}

impl BatchSync for Syncs {
    fn files(&self, files: Vec<(File, PathBuf)>) -> Vec<io::Result<()>> {
        let Some(spool) = self.spool() else {
            return OwnSyncs.files(files);
        };
        // All handed over before waiting for any: they go in the same batch.
        let pending: Vec<PendingSync> = files
            .into_iter()
            .map(|(file, path)| spool.sync_with_batch(file, &path))
            .collect();
        pending
            .into_iter()
            .map(|p| p.wait().map_err(plain))
            .collect()
    }

    fn dir(&self, dir: File, path: &Path) -> io::Result<()> {
        match self.spool() {
            Some(spool) => spool.sync_with_batch(dir, path).wait().map_err(plain),
            None => OwnSyncs.dir(dir, path),
        }
    }
}

/// The system's error inside a spool error (the caller names the file): `EIO` stays `EIO`. A
/// refusal of a poisoned committer keeps its whole text (the spool's, not this file's, fsync
/// failed).
fn plain(e: SpoolError) -> io::Error {
    match e.io_error() {
        Some(io) if !e.is_poisoned() => io
            .raw_os_error()
            .map(io::Error::from_raw_os_error)
            .unwrap_or_else(|| io::Error::new(io.kind(), io.to_string())),
        _ => io::Error::other(e.to_string()),
    }
}
