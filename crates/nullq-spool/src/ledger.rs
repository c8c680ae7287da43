//! The committer's ledger: what its handles and its thread share. Which renames into `queue/`
//! are not committed yet (so a delivery runner in the same process skips them), the counts of
//! flushes and commits, and the poison: the first failed flush, after which nothing more is
//! renamed into `queue/` and every commit is refused.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::SpoolError;
use crate::id::QueueId;

/// What the committer's handles and its thread share.
pub(crate) struct Ledger {
    /// The directory being fsynced.
    dir: PathBuf,
    counts: Mutex<Counts>,
    /// Messages renamed into `dir` (or being renamed) whose commit has not been answered yet.
    uncommitted: Mutex<HashSet<QueueId>>,
    /// Set when a `syncfs` failed and the committer went over to syncing file by file: the
    /// error, until someone takes it to report it ([`Ledger::take_fallback`]).
    fallback: Mutex<Fallback>,
}

#[derive(Default)]
struct Fallback {
    happened: bool,
    unreported: Option<io::Error>,
}

/// The committer's counters and its poison.
#[derive(Default)]
pub(crate) struct Counts {
    /// Batch flushes started so far.
    pub(crate) started: u64,
    /// Successful commits.
    pub(crate) commits: u64,
    /// The failed flush (or why the thread is gone); set once, never cleared.
    pub(crate) failed: Option<io::Error>,
}

impl Ledger {
    /// A ledger for a committer flushing `dir`: nothing uncommitted, nothing counted.
    pub(crate) fn new(dir: PathBuf) -> Ledger {
        Ledger {
            dir,
            counts: Mutex::default(),
            uncommitted: Mutex::default(),
            fallback: Mutex::default(),
        }
    }

    /// The error for a commit refused now, if the committer is poisoned: receiving and renaming
    /// stop as well, so that nothing more reaches `queue/` once commits cannot succeed.
    pub(crate) fn refusal(&self) -> Option<SpoolError> {
        self.counts()
            .failed
            .as_ref()
            .map(|e| SpoolError::poisoned(&self.dir, e))
    }

    /// `id` is about to be renamed into the directory: uncommitted until [`Self::settled`].
    pub(crate) fn renaming(&self, id: QueueId) {
        self.uncommitted().insert(id);
    }

    /// The rename of `id` failed, or it was dropped uncommitted (the thread settles the ids it
    /// answers).
    pub(crate) fn settled(&self, id: &QueueId) {
        self.uncommitted().remove(id);
    }

    /// The directory the committer flushes (`queue/`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the failed flush that poisons the committer (the first one stays).
    pub(crate) fn fail(&self, e: io::Error) {
        self.counts().failed.get_or_insert(e);
    }

    /// A `syncfs` failed with `e`: from now on batches are synced file by file.
    pub(crate) fn fell_back(&self, e: io::Error) {
        let mut f = self.fallback();
        f.happened = true;
        f.unreported = Some(e);
    }

    /// True once the committer syncs file by file after a failed `syncfs`.
    pub(crate) fn has_fallen_back(&self) -> bool {
        self.fallback().happened
    }

    /// The error of the failed `syncfs`, once: for the caller to report.
    pub(crate) fn take_fallback(&self) -> Option<io::Error> {
        self.fallback().unreported.take()
    }

    fn fallback(&self) -> MutexGuard<'_, Fallback> {
        // Only assignments happen under this lock.
        self.fallback.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `queue/ID` (the directory itself for a message without an id yet).
    pub(crate) fn path_of(&self, id: Option<&QueueId>) -> PathBuf {
        match id {
            Some(id) => self.dir.join(id.to_string()),
            None => self.dir.clone(),
        }
    }

    pub(crate) fn counts(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while holding the lock, so the counters are consistent even if poisoned.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn uncommitted(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        // Only inserts and removes happen under this lock; a panic cannot leave it half done.
        self.uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
