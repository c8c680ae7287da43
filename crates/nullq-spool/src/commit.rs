//! Group commit: one `fsync` of `queue/` makes durable every rename done before it started.
//! Owns the [`Committer`] and the typestate step [`Renamed`] → [`QueueId`]: a renamed message
//! commits through the committer of the spool it was received in, and no other.
//!
//! Leader/follower, as in database group commit. A caller arrives after its rename and needs
//! an fsync that *starts* later: generation `started + 1`. If no fsync is running it becomes
//! the leader, starts that generation, and fsyncs with the lock released, while callers that
//! arrive meanwhile wait for the generation after it, whose leader will be one of them. A
//! generation's result wakes everyone; each checks whether the last good generation covers it.
//!
//! A failed directory fsync fails its whole batch and poisons the committer: the kernel may have
//! dropped the directory's dirty metadata, and a later fsync that "succeeds" would not bring it
//! back. Every refused commit unlinks its file from `queue/` again before returning the error,
//! so that a message whose client is told `Z` is not delivered as well (the client sends it
//! again, elsewhere: leaving it would make a duplicate). From then on nothing new is renamed
//! into `queue/` ([`crate::Spool::receive`] and [`crate::Incoming::finish`] refuse too).
//!
//! The committer also knows which renames are not committed yet
//! ([`Committer::is_uncommitted`]), so that a delivery runner in the same process does not
//! deliver a message whose client may still be told `Z`.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::{copy_io, Result, SpoolError, Step};
use crate::id::QueueId;

type SyncFn = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Makes renamed messages durable, sharing one directory fsync among concurrent callers.
/// Obtained from [`crate::Spool::committer`]; clones share the same batches.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

struct Shared {
    /// The directory being fsynced, for error messages.
    dir: PathBuf,
    sync: SyncFn,
    gens: Mutex<Generations>,
    done: Condvar,
    /// Messages renamed into `dir` (or being renamed) whose commit has not returned yet.
    uncommitted: Mutex<HashSet<QueueId>>,
}

#[derive(Default)]
struct Generations {
    /// Fsyncs started so far; generation `n` is the n-th.
    started: u64,
    /// Whether generation `started` is still running.
    running: bool,
    /// The last generation that succeeded: every rename before it started is durable.
    durable: u64,
    /// The generation that failed, and how; set once, never cleared.
    failed: Option<(u64, io::Error)>,
    /// Successful commits.
    commits: u64,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// A committer that fsyncs the directory `dir`. The directory is opened once, here, so that
    /// the only thing that can fail later is the fsync itself (a transient `EMFILE` must not
    /// poison the committer).
    pub(crate) fn for_dir(dir: PathBuf) -> Result<Committer> {
        let fd = crate::sys::open_dir(&dir)?;
        let fault = crate::fault::DirFsyncFault::from_env();
        Ok(Committer::with_sync(dir, move || {
            let result = fd.sync_all();
            match &fault {
                Some(fault) if fault.hit() => Err(io::Error::from_raw_os_error(libc::EIO)),
                _ => result,
            }
        }))
    }

    /// A committer whose "fsync" is `sync` (tests use a slow or failing one).
    pub(crate) fn with_sync(
        dir: PathBuf,
        sync: impl Fn() -> io::Result<()> + Send + Sync + 'static,
    ) -> Committer {
        let shared = Shared {
            dir,
            sync: Box::new(sync),
            gens: Mutex::default(),
            done: Condvar::new(),
            uncommitted: Mutex::default(),
        };
        Committer {
            shared: Arc::new(shared),
        }
    }

    /// True while the message `id` is renamed into `queue/` but its commit has not returned:
    /// its client has not been told anything yet, and may be told `Z` (then the file is
    /// unlinked). A delivery runner sharing this spool skips such messages in its scans; it
    /// learns of the committed ones when they are.
    pub fn is_uncommitted(&self, id: &QueueId) -> bool {
        self.shared.uncommitted().contains(id)
    }

    /// The error for a commit refused now, if the committer is poisoned: receiving and renaming
    /// stop as well, so that nothing more reaches `queue/` once commits cannot succeed.
    pub(crate) fn refusal(&self) -> Option<SpoolError> {
        let g = self.shared.lock();
        g.failed
            .as_ref()
            .map(|(_, e)| SpoolError::poisoned(&self.shared.dir, e))
    }

    /// `id` is about to be renamed into the directory: uncommitted until [`Self::settled`].
    pub(crate) fn renaming(&self, id: QueueId) {
        self.shared.uncommitted().insert(id);
    }

    /// The commit of `id` returned (or its rename failed, or it was dropped uncommitted).
    pub(crate) fn settled(&self, id: &QueueId) {
        self.shared.uncommitted().remove(id);
    }

    /// `(directory fsyncs started, successful commits)`: with concurrent callers the first is
    /// much smaller than the second.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.shared.lock();
        (g.started, g.commits)
    }

    /// True once a directory fsync has failed; every later commit fails.
    pub fn is_poisoned(&self) -> bool {
        self.shared.lock().failed.is_some()
    }

    #[cfg(test)]
    pub(crate) fn wait_durable(&self) -> Result<()> {
        self.shared.wait_durable()
    }
}

/// A message renamed into `queue/ID` (state *renamed*) whose rename is not durable yet: commit
/// it ([`Renamed::commit`]) before answering `K` (a refused commit unlinks the file again).
/// Dropping it leaves the message queued, to be delivered, without an acknowledgement (the
/// client may send it again: a duplicate, not a loss).
#[derive(Debug)]
#[must_use = "a renamed message is not durable until committed"]
pub struct Renamed {
    id: QueueId,
    committer: Committer,
}

impl Renamed {
    /// Called by [`crate::Incoming::finish`] once `id` is in `queue/`, registered with
    /// [`Committer::renaming`].
    pub(crate) fn new(id: QueueId, committer: Committer) -> Renamed {
        Renamed { id, committer }
    }

    /// The message's id.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Blocks until the rename is durable (one directory fsync that started after it), then
    /// returns the id: only now may the client be told `K`.
    ///
    /// Errors: the fsync failed (for this batch), or an earlier one did
    /// ([`SpoolError::is_poisoned`]). Either way the file has been unlinked from `queue/`
    /// again (then `queue/` fsynced, best effort) and the client must be told `Z`. A message of
    /// the batch whose fsync failed may still come back after a crash (that fsync may have
    /// written the rename, the unlink may not be durable): a duplicate, never a loss.
    pub fn commit(self) -> Result<QueueId> {
        let shared = &self.committer.shared;
        if let Err(e) = shared.wait_durable() {
            // Unlinked before `self` is dropped (which forgets it as uncommitted), so a
            // runner's scan in between finds the file gone rather than deliverable.
            let _ = std::fs::remove_file(shared.dir.join(self.id.to_string()));
            let _ = crate::sys::fsync_dir(&shared.dir);
            return Err(e);
        }
        Ok(self.id)
    }
}

impl Drop for Renamed {
    fn drop(&mut self) {
        self.committer.settled(&self.id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Nothing panics while holding the lock, so the counters are consistent even if poisoned.
        self.gens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn uncommitted(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        // Only inserts and removes happen under this lock; a panic cannot leave it half done.
        self.uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_durable(&self) -> Result<()> {
        let mut g = self.lock();
        // Our rename is done. A generation that is running now may have started before it, so
        // the first one that surely covers it is the next to start: `started + 1`. (Waiting for
        // `started` lost acknowledged messages in the power-cut test.)
        let target = g.started + 1;
        loop {
            if g.durable >= target {
                g.commits += 1;
                return Ok(());
            }
            if let Some((gen, e)) = &g.failed {
                return Err(if *gen >= target {
                    SpoolError::io(Step::DirFsync, &self.dir, copy_io(e))
                } else {
                    SpoolError::poisoned(&self.dir, e)
                });
            }
            if g.running {
                g = self.done.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.started += 1;
            g.running = true;
            let gen = g.started;
            drop(g);
            let result = (self.sync)();
            g = self.lock();
            g.running = false;
            match result {
                Ok(()) => g.durable = gen,
                Err(e) => g.failed = Some((gen, e)),
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_fsyncs() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        });
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (committer, barrier) = (committer.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        barrier.wait();
                        committer.wait_durable().map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().ok(), Some(Ok(())));
        }
        let (fsyncs, commits) = committer.stats();
        assert_eq!(commits, 80);
        assert_eq!(fsyncs, calls.load(Ordering::SeqCst));
        // Each round: one leader, then usually one more fsync for everyone who came during it
        // (2 per round); the bound leaves room for a loaded machine.
        assert!(fsyncs < 40, "{fsyncs} fsyncs for 80 commits");
    }

    #[test]
    fn a_caller_waits_for_an_fsync_that_starts_after_it() {
        // Slow fsync #1 is running when the second caller arrives: it must not be covered by #1.
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let first = {
            let c = committer.clone();
            std::thread::spawn(move || c.wait_durable().is_ok())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first caller never fsynced"
            );
            std::thread::yield_now();
        }
        assert!(committer.wait_durable().is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(first.join().ok(), Some(true));
    }

    #[test]
    fn a_failed_fsync_fails_its_batch_and_poisons() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        assert!(committer.wait_durable().is_ok());
        let e = committer.wait_durable().err();
        assert!(
            matches!(&e, Some(e) if e.step() == Step::DirFsync && !e.is_poisoned()),
            "{e:?}"
        );
        assert!(committer.is_poisoned());
        let e = committer.wait_durable().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no fsync is tried after a failure"
        );
        assert_eq!(committer.stats(), (2, 1));
    }
}
