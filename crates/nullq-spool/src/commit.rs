//! Group commit: one `fsync` of `queue/` makes durable every rename done before it started.
//! Owns the [`Committer`] (its thread and batches) and the typestate [`Renamed`] →
//! [`PendingCommit`] → [`QueueId`].
//!
//! One committer thread per spool owns the directory fsync. A caller renames its message into
//! `queue/` ([`crate::Incoming::finish`]), then sends its id on the committer's channel
//! ([`Renamed::submit`]) and waits for a one-shot answer: blocking ([`Renamed::commit`],
//! [`PendingCommit::wait`]) or as a future (`.await`), so that an async server parks no thread
//! per waiting session. The thread takes everything waiting on the channel as one batch, fsyncs
//! once, and answers each request of the batch. Every request was sent after its rename and
//! received before the fsync started, so that fsync covers it; requests arriving during the
//! fsync wait for the next one.
//!
//! A failed directory fsync fails its whole batch and poisons the committer: the kernel may have
//! dropped the directory's dirty metadata, and a later fsync that "succeeds" would not bring it
//! back. Every refused commit has its file unlinked from `queue/` again before the error is
//! returned (by the thread, before it answers; then `queue/` is fsynced once for the batch, best
//! effort), so that a message whose client is told `Z` is not delivered as well (the client sends
//! it again, elsewhere: leaving it would make a duplicate). From then on nothing new is renamed
//! into `queue/` ([`crate::Spool::receive`] and [`crate::Incoming::finish`] refuse too).
//!
//! The committer also knows which renames are not committed yet
//! ([`Committer::is_uncommitted`]), so that a delivery runner in the same process does not
//! deliver a message whose client may still be told `Z`. A submitted id stays uncommitted until
//! the thread has its answer (and, if refused, has unlinked the file), even if the waiting caller
//! gives up meanwhile.
//!
//! The thread ends when the last handle is dropped (the spool's and its clones', and the one in
//! each [`crate::Incoming`], [`Renamed`] and [`PendingCommit`]): that closes the channel, and the
//! last drop joins the thread. Should the thread be gone anyway (a panic), a commit is refused
//! with an error instead, its caller unlinks its own file, and the committer counts as poisoned.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::error::{copy_io, Result, SpoolError, Step};
use crate::id::QueueId;
use crate::reply;

type SyncFn = Box<dyn FnMut() -> io::Result<()> + Send>;

/// Makes renamed messages durable, sharing one directory fsync among concurrent callers.
/// Obtained from [`crate::Spool::committer`]; clones share the same thread and batches.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

/// What the handles share; dropping the last one stops the thread.
struct Shared {
    state: Arc<State>,
    /// `None` only while being dropped.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// What the handles and the thread share.
struct State {
    /// The directory being fsynced.
    dir: PathBuf,
    counts: Mutex<Counts>,
    /// Messages renamed into `dir` (or being renamed) whose commit has not been answered yet.
    uncommitted: Mutex<HashSet<QueueId>>,
}

#[derive(Default)]
struct Counts {
    /// Directory fsyncs started so far.
    started: u64,
    /// Successful commits.
    commits: u64,
    /// The failed fsync (or why the thread is gone); set once, never cleared.
    failed: Option<io::Error>,
}

/// One waiting caller: its message (renamed already) and where to answer.
struct Request {
    id: QueueId,
    reply: reply::Sender<Result<QueueId>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("dir", &self.shared.state.dir)
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
        Committer::spawn(dir, move || {
            let result = fd.sync_all();
            match &fault {
                Some(fault) if fault.hit() => Err(io::Error::from_raw_os_error(libc::EIO)),
                _ => result,
            }
        })
    }

    /// A committer whose "fsync" is `sync` (tests use a slow or failing one).
    #[cfg(test)]
    pub(crate) fn with_sync(
        dir: PathBuf,
        sync: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> Committer {
        Committer::spawn(dir, sync).expect("spawn the committer thread")
    }

    /// Starts the committer thread, which calls `sync` for each batch.
    fn spawn(
        dir: PathBuf,
        sync: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> Result<Committer> {
        let state = Arc::new(State {
            dir,
            counts: Mutex::default(),
            uncommitted: Mutex::default(),
        });
        let (tx, rx) = mpsc::channel();
        let thread = {
            let state = state.clone();
            let sync: SyncFn = Box::new(sync);
            std::thread::Builder::new()
                .name("nullq-committer".into())
                .spawn(move || run(&state, sync, &rx))
        };
        // No thread, no fsync of the directory: named as that step.
        let thread = thread.map_err(|e| SpoolError::io(Step::DirFsync, &state.dir, e))?;
        Ok(Committer {
            shared: Arc::new(Shared {
                state,
                requests: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// True while the message `id` is renamed into `queue/` but its commit has not been
    /// answered: its client has not been told anything yet, and may be told `Z` (then the file
    /// is unlinked). A delivery runner sharing this spool skips such messages in its scans; it
    /// learns of the committed ones when they are.
    pub fn is_uncommitted(&self, id: &QueueId) -> bool {
        self.shared.state.uncommitted().contains(id)
    }

    /// The error for a commit refused now, if the committer is poisoned: receiving and renaming
    /// stop as well, so that nothing more reaches `queue/` once commits cannot succeed.
    pub(crate) fn refusal(&self) -> Option<SpoolError> {
        let state = &self.shared.state;
        let c = state.counts();
        c.failed
            .as_ref()
            .map(|e| SpoolError::poisoned(&state.dir, e))
    }

    /// `id` is about to be renamed into the directory: uncommitted until [`Self::settled`].
    pub(crate) fn renaming(&self, id: QueueId) {
        self.shared.state.uncommitted().insert(id);
    }

    /// The rename of `id` failed, or it was dropped uncommitted (the thread settles the ids it
    /// answers).
    pub(crate) fn settled(&self, id: &QueueId) {
        self.shared.state.uncommitted().remove(id);
    }

    /// `(directory fsyncs started, successful commits)`: with concurrent callers the first is
    /// much smaller than the second.
    pub fn stats(&self) -> (u64, u64) {
        let c = self.shared.state.counts();
        (c.started, c.commits)
    }

    /// True once a directory fsync has failed (or the thread is gone); every later commit fails.
    pub fn is_poisoned(&self) -> bool {
        self.shared.state.counts().failed.is_some()
    }

    /// Queues `id` for the next batch; the answer comes on the returned receiver (or, if the
    /// thread is gone, the sender is dropped unanswered, which the receiver sees).
    fn request(&self, id: QueueId) -> reply::Receiver<Result<QueueId>> {
        let (reply, answer) = reply::channel();
        if let Some(requests) = &self.shared.requests {
            // A send fails only if the thread is gone; the request, and its reply, drop with it.
            let _ = requests.send(Request { id, reply });
        }
        answer
    }

    /// No answer came for `id`: the thread is gone. Refused like a commit after a failed fsync,
    /// with its file unlinked here, as the thread would have.
    fn refused_unanswered(&self, id: &QueueId) -> SpoolError {
        let state = &self.shared.state;
        let _ = std::fs::remove_file(state.dir.join(id.to_string()));
        let _ = crate::sys::fsync_dir(&state.dir);
        let e = {
            let mut c = state.counts();
            let failed = c
                .failed
                .get_or_insert_with(|| io::Error::other("the committer thread is gone"));
            SpoolError::poisoned(&state.dir, failed)
        };
        self.settled(id);
        e
    }

    fn dir(&self) -> &Path {
        &self.shared.state.dir
    }

    /// One commit of an id that was never renamed (the batching tests need only the fsyncs).
    #[cfg(test)]
    pub(crate) fn wait_durable(&self) -> Result<()> {
        let id = QueueId::generate();
        match self.request(id).wait() {
            Some(answer) => answer.map(|_| ()),
            None => Err(self.refused_unanswered(&id)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered what is still queued
        // (requests of callers who stopped waiting: each waiting caller holds a handle).
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            // Never joins itself: the thread holds no handle (only `State`).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl State {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while holding the lock, so the counters are consistent even if poisoned.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn uncommitted(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        // Only inserts and removes happen under this lock; a panic cannot leave it half done.
        self.uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a batch ended.
enum Outcome {
    Durable,
    /// This batch's fsync failed.
    Failed(io::Error),
    /// An earlier fsync failed (or the thread is gone): no fsync was tried.
    Poisoned(io::Error),
}

/// The committer thread: a batch is everything waiting when the previous one is answered.
/// Returns once every handle, hence every sender, is gone.
fn run(state: &State, mut sync: SyncFn, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let earlier = {
            let mut c = state.counts();
            if c.failed.is_none() {
                c.started += 1;
            }
            c.failed.as_ref().map(copy_io)
        };
        // Every rename of the batch happened before its request was sent, so before this.
        let outcome = match earlier {
            Some(e) => Outcome::Poisoned(e),
            None => match sync() {
                Ok(()) => {
                    state.counts().commits += batch.len() as u64;
                    Outcome::Durable
                }
                Err(e) => {
                    state.counts().failed = Some(copy_io(&e));
                    Outcome::Failed(e)
                }
            },
        };
        answer(state, batch, &outcome);
    }
}

/// Answers a batch. Refused files are unlinked first (then `queue/` fsynced once), and each id
/// is settled before its answer, so a runner's scan in between finds a refused file gone rather
/// than deliverable.
fn answer(state: &State, batch: Vec<Request>, outcome: &Outcome) {
    if !matches!(outcome, Outcome::Durable) {
        for r in &batch {
            let _ = std::fs::remove_file(state.dir.join(r.id.to_string()));
        }
        let _ = crate::sys::fsync_dir(&state.dir);
    }
    for Request { id, reply } in batch {
        state.uncommitted().remove(&id);
        reply.send(match outcome {
            Outcome::Durable => Ok(id),
            Outcome::Failed(e) => Err(SpoolError::io(Step::DirFsync, &state.dir, copy_io(e))),
            Outcome::Poisoned(e) => Err(SpoolError::poisoned(&state.dir, e)),
        });
    }
}

/// A message renamed into `queue/ID` (state *renamed*) whose rename is not durable yet: commit it
/// ([`Renamed::commit`], or [`Renamed::submit`] and await) before answering `K`; a refused
/// commit unlinks the file again. It commits through the committer of the spool it was received
/// in, and no other. Dropping it leaves the message queued, to be delivered, without an
/// acknowledgement (the client may send it again: a duplicate, not a loss).
#[derive(Debug)]
#[must_use = "a renamed message is not durable until committed"]
pub struct Renamed {
    id: QueueId,
    committer: Committer,
    /// Set by `submit`: from then on the thread settles the id, not this value's drop.
    submitted: bool,
}

impl Renamed {
    /// Called by [`crate::Incoming::finish`] once `id` is in `queue/`, registered with
    /// [`Committer::renaming`].
    pub(crate) fn new(id: QueueId, committer: Committer) -> Renamed {
        Renamed {
            id,
            committer,
            submitted: false,
        }
    }

    /// The message's id.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Blocks until the rename is durable (one directory fsync that started after it), then
    /// returns the id: only now may the client be told `K`. [`Renamed::submit`] is the same
    /// without blocking a thread.
    ///
    /// Errors: the fsync failed (for this batch), or an earlier one did
    /// ([`SpoolError::is_poisoned`]). Either way the file has been unlinked from `queue/`
    /// again (then `queue/` fsynced, best effort) and the client must be told `Z`. A message of
    /// the batch whose fsync failed may still come back after a crash (that fsync may have
    /// written the rename, the unlink may not be durable): a duplicate, never a loss.
    pub fn commit(self) -> Result<QueueId> {
        self.submit().wait()
    }

    /// Hands the message to the committer thread for its next batch; the answer (that of
    /// [`Renamed::commit`]) comes from the returned [`PendingCommit`], awaited or waited for.
    /// Dropping that unanswered abandons nothing: the commit goes on, and a refused one is still
    /// unlinked, but nobody learns the outcome (the client, not told `K`, may send again).
    pub fn submit(mut self) -> PendingCommit {
        self.submitted = true;
        let committer = self.committer.clone();
        let answer = committer.request(self.id);
        PendingCommit {
            id: self.id,
            committer,
            answer: Some(answer),
        }
    }
}

impl Drop for Renamed {
    fn drop(&mut self) {
        if !self.submitted {
            self.committer.settled(&self.id);
        }
    }
}

/// A commit handed to the committer thread ([`Renamed::submit`]): [`PendingCommit::wait`] for its
/// answer, or `.await` it (the future needs no particular runtime).
#[derive(Debug)]
#[must_use = "the client may be told K only once the commit answered Ok"]
pub struct PendingCommit {
    id: QueueId,
    committer: Committer,
    /// `None` once the future has returned its answer.
    answer: Option<reply::Receiver<Result<QueueId>>>,
}

impl PendingCommit {
    /// The message's id.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Blocks until the commit is answered: see [`Renamed::commit`].
    pub fn wait(mut self) -> Result<QueueId> {
        match self.answer.take().and_then(reply::Receiver::wait) {
            Some(answer) => answer,
            None => Err(self.committer.refused_unanswered(&self.id)),
        }
    }
}

impl Future for PendingCommit {
    type Output = Result<QueueId>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<QueueId>> {
        let this = self.get_mut();
        let Some(answer) = this.answer.as_mut() else {
            // Polled after its answer: say so rather than panic (and unlink nothing).
            let e = io::Error::other("a commit polled after it was answered");
            return Poll::Ready(Err(SpoolError::io(Step::DirFsync, this.committer.dir(), e)));
        };
        let answered = match answer.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answered) => answered,
        };
        this.answer = None;
        Poll::Ready(match answered {
            Some(answer) => answer,
            None => Err(this.committer.refused_unanswered(&this.id)),
        })
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
        // Each round: one fsync for the first request, then usually one more for everyone who
        // came during it (2 per round); the bound leaves room for a loaded machine.
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

    /// Polls `f` to its end on this thread, parking between polls: no runtime.
    fn block_on<F: Future + Unpin>(mut f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = Pin::new(&mut f).poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    #[test]
    fn an_awaited_commit_stays_uncommitted_until_answered() {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let committer = Committer::with_sync("/q".into(), move || {
            let _ = go_rx.recv_timeout(Duration::from_secs(10));
            Ok(())
        });
        let id = QueueId::generate();
        committer.renaming(id);
        let mut pending = Renamed::new(id, committer.clone()).submit();
        let waker = std::task::Waker::noop();
        assert!(Pin::new(&mut pending)
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        assert!(committer.is_uncommitted(&id), "not answered yet");
        let _ = go_tx.send(());
        assert_eq!(block_on(pending).ok(), Some(id));
        assert!(!committer.is_uncommitted(&id));
        assert_eq!(committer.stats(), (1, 1));

        // A caller that stops waiting leaves the commit to the thread, which still settles it.
        let id = QueueId::generate();
        committer.renaming(id);
        drop(Renamed::new(id, committer.clone()).submit());
        let _ = go_tx.send(());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while committer.is_uncommitted(&id) {
            assert!(std::time::Instant::now() < deadline, "never settled");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_thread_ends_with_the_last_handle() {
        let alive = Arc::new(());
        let held = alive.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            let _ = &held;
            Ok(())
        });
        let other = committer.clone();
        assert!(committer.wait_durable().is_ok());
        drop(committer);
        assert_eq!(Arc::strong_count(&alive), 2, "a clone keeps it running");
        assert!(other.wait_durable().is_ok());
        drop(other);
        // The last drop joined the thread, which dropped its fsync closure on the way out.
        assert_eq!(Arc::strong_count(&alive), 1);
    }

    #[test]
    fn a_gone_thread_refuses_without_a_panic() {
        let committer = Committer::with_sync("/q".into(), || panic!("the fsync panicked"));
        let id = QueueId::generate();
        committer.renaming(id);
        let e = Renamed::new(id, committer.clone()).commit().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        assert!(committer.is_poisoned() && committer.refusal().is_some());
        assert!(!committer.is_uncommitted(&id));
        let e = block_on(Renamed::new(id, committer.clone()).submit()).err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
    }
}
