//! Group commit: one flush makes durable every message renamed into `queue/` before it started.
//! Owns the [`Committer`] (its thread and batches) and the typestate [`Renamed`] →
//! [`PendingCommit`] → [`QueueId`]; how a batch is written and flushed is `flush.rs`'s.
//!
//! One committer thread per spool owns the flush. A caller either renames its message into
//! `queue/` itself ([`crate::Incoming::finish`]) and sends it, its file open and unsynced, on
//! the committer's channel ([`Renamed::submit`]), or sends the whole message
//! ([`crate::Spool::store`]) for the thread to write and rename; then it waits for a one-shot
//! answer: blocking ([`Renamed::commit`], [`PendingCommit::wait`]) or as a future (`.await`),
//! so that an async server parks no thread per waiting session. The thread takes everything
//! waiting on the channel as one batch, writes its stored messages, flushes once, and answers
//! each request of the batch. Every message of the batch was renamed before the flush started,
//! so the flush covers it; requests arriving during the flush wait for the next one.
//!
//! A failed flush (the fsync of `queue/`) fails its whole batch and poisons the committer: the kernel may have
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

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::error::{copy_io, Result, SpoolError, Step};
use crate::flush::{Entry, Flush, Flusher, Other, Outcome, Reply, Request, SyncFn, Work, Writer};
use crate::format::Envelope;
use crate::id::QueueId;
use crate::ledger::Ledger;
use crate::reply;
use crate::writer::Intake;

/// Makes renamed messages durable, sharing one flush among concurrent callers.
/// Obtained from [`crate::Spool::committer`]; clones share the same thread and batches.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

/// What the handles share; dropping the last one stops the thread.
struct Shared {
    ledger: Arc<Ledger>,
    /// `None` only while being dropped.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("dir", &self.shared.ledger.dir())
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// A committer for the directory `dir` that makes each batch durable the way `flush` says.
    /// The directory is opened once, here, so that the only thing that can fail later is the
    /// flush itself (a transient `EMFILE` must not poison the committer).
    pub(crate) fn for_dir(dir: PathBuf, flush: Flush, intake: Intake) -> Result<Committer> {
        let fd = crate::sys::open_dir(&dir)?;
        let fault = crate::fault::DirFsyncFault::from_env();
        // `Auto` is resolved by the spool before this; undecided, it flushes file by file.
        let fs_fd = match flush {
            Flush::Files | Flush::Auto => None,
            Flush::Filesystem => Some(
                fd.try_clone()
                    .map_err(|e| SpoolError::io(Step::Open, &dir, e))?,
            ),
        };
        let sync_dir = move || {
            let result = fd.sync_all();
            match &fault {
                Some(fault) if fault.hit() => Err(io::Error::from_raw_os_error(libc::EIO)),
                _ => result,
            }
        };
        let sync_fs = fs_fd.map(|fd| Box::new(move || crate::sys::syncfs(&fd)) as SyncFn);
        Committer::spawn(dir, Flusher::new(Box::new(sync_dir), sync_fs), Some(intake))
    }

    /// A committer whose "fsync" of the directory is `sync` (tests use a slow or failing one).
    #[cfg(test)]
    pub(crate) fn with_sync(
        dir: PathBuf,
        sync: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> Committer {
        Committer::spawn(dir, Flusher::new(Box::new(sync), None), None)
            .expect("spawn the committer thread")
    }

    /// A committer whose "fsync" of the directory is `sync`, storing messages through `intake`.
    #[cfg(test)]
    pub(crate) fn with_sync_storing(
        dir: PathBuf,
        intake: Intake,
        sync: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> Committer {
        Committer::spawn(dir, Flusher::new(Box::new(sync), None), Some(intake))
            .expect("spawn the committer thread")
    }

    /// A committer flushing the whole filesystem with `sync_fs` (falling back to `sync_dir`).
    #[cfg(test)]
    pub(crate) fn with_syncfs(
        dir: PathBuf,
        sync_dir: impl FnMut() -> io::Result<()> + Send + 'static,
        sync_fs: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> Committer {
        Committer::spawn(
            dir,
            Flusher::new(Box::new(sync_dir), Some(Box::new(sync_fs))).syncfs_always(),
            None,
        )
        .expect("spawn the committer thread")
    }

    /// Starts the committer thread, which flushes each batch.
    fn spawn(dir: PathBuf, flusher: Flusher, intake: Option<Intake>) -> Result<Committer> {
        let ledger = Arc::new(Ledger::new(dir));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let ledger = ledger.clone();
            let writer = Writer::new(intake);
            std::thread::Builder::new()
                .name("nullq-committer".into())
                .spawn(move || run(&ledger, &writer, flusher, &rx))
        };
        // No thread, no fsync of the directory: named as that step.
        let thread = thread.map_err(|e| SpoolError::io(Step::DirFsync, ledger.dir(), e))?;
        Ok(Committer {
            shared: Arc::new(Shared {
                ledger,
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
        self.shared.ledger.uncommitted().contains(id)
    }

    /// The error for a commit refused now, if the committer is poisoned (see [`Ledger::refusal`]).
    pub(crate) fn refusal(&self) -> Option<SpoolError> {
        self.shared.ledger.refusal()
    }

    /// What this committer shares with its thread (for the message writer's rename).
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// `(batch flushes started, successful commits)`: with concurrent callers the first is
    /// much smaller than the second.
    pub fn stats(&self) -> (u64, u64) {
        let c = self.shared.ledger.counts();
        (c.started, c.commits)
    }

    /// The error of a failed `syncfs` after which this committer syncs file by file
    /// ([`crate::Flush::Filesystem`]), once: the server logs it at ERROR (the disk, or some
    /// file on it, failed a writeback), though no commit failed.
    pub fn take_flush_fallback(&self) -> Option<io::Error> {
        self.shared.ledger.take_fallback()
    }

    /// True once a `syncfs` failed and batches are synced file by file.
    pub(crate) fn has_fallen_back(&self) -> bool {
        self.shared.ledger.has_fallen_back()
    }

    /// True once a flush has failed (or the thread is gone); every later commit fails.
    pub fn is_poisoned(&self) -> bool {
        self.shared.ledger.counts().failed.is_some()
    }

    /// Queues `id` for the next batch; the answer comes on the returned receiver (or, if the
    /// thread is gone, the sender is dropped unanswered, which the receiver sees).
    fn request(&self, work: Work) -> reply::Receiver<Result<QueueId>> {
        let (reply, answer) = reply::channel();
        self.send(Request {
            work,
            reply: Reply::Commit(reply),
        });
        answer
    }

    fn send(&self, request: Request) {
        if let Some(requests) = &self.shared.requests {
            // A send fails only if the thread is gone; the request, and its reply, drop with it.
            let _ = requests.send(request);
        }
    }

    /// Makes `file` durable with the next batch (see [`crate::Spool::sync_with_batch`]): an
    /// `fsync` issued with the batch's own, or, when `covered` and the batch is flushed with
    /// `syncfs`, that. With no file: the batch's flush of `queue/` itself.
    pub(crate) fn sync(
        &self,
        file: Option<std::fs::File>,
        path: PathBuf,
        covered: bool,
    ) -> PendingSync {
        let (reply, answer) = reply::channel();
        self.send(Request {
            work: Work::Sync(file, Other { path, covered }),
            reply: Reply::Sync(reply),
        });
        PendingSync {
            committer: self.clone(),
            answer: Some(answer),
        }
    }

    /// No answer came for `id`: the thread is gone. Refused like a commit after a failed fsync,
    /// with its file unlinked here, as the thread would have.
    fn refused_unanswered(&self, id: Option<&QueueId>) -> SpoolError {
        let ledger = &self.shared.ledger;
        if let Some(id) = id {
            let _ = std::fs::remove_file(ledger.dir().join(id.to_string()));
            let _ = crate::sys::fsync_dir(ledger.dir());
        }
        let e = {
            let mut c = ledger.counts();
            let failed = c
                .failed
                .get_or_insert_with(|| io::Error::other("the committer thread is gone"));
            SpoolError::poisoned(ledger.dir(), failed)
        };
        if let Some(id) = id {
            ledger.settled(id);
        }
        e
    }

    /// Hands a message whole in memory to the thread (see [`crate::Spool::store`]).
    pub(crate) fn store(&self, message: Vec<u8>, envelope: Envelope) -> PendingCommit {
        PendingCommit {
            id: None,
            committer: self.clone(),
            answer: Some(self.request(Work::Store(message, envelope))),
        }
    }

    /// The error of a pending answer polled again after it was answered.
    fn polled_twice(&self, what: &str, step: Step) -> SpoolError {
        let e = io::Error::other(format!("{what} polled after it was answered"));
        SpoolError::io(step, self.shared.ledger.dir(), e)
    }

    /// One commit of an id that was never renamed (the batching tests need only the fsyncs).
    #[cfg(test)]
    pub(crate) fn wait_durable(&self) -> Result<()> {
        let id = QueueId::generate();
        match self.request(Work::Renamed(id, None)).wait() {
            Some(answer) => answer.map(|_| ()),
            None => Err(self.refused_unanswered(Some(&id))),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered what is still queued
        // (requests of callers who stopped waiting: each waiting caller holds a handle).
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            // Never joins itself: the thread holds no handle (only `Ledger`).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The committer thread: a batch is everything waiting when the previous one is answered. Its
/// stored messages are written first, then the whole batch is flushed and answered. Returns
/// once every handle, hence every sender, is gone.
///
/// One thread for both, on purpose: a second thread flushing while this one writes (measured,
/// BENCHMARKS.md) starts flushes of the first few messages while the rest are still being
/// written, doubling the journal commits at 50 sessions and lowering messages a second.
fn run(ledger: &Ledger, writer: &Writer, mut flusher: Flusher, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut waiting: Vec<Request> = std::iter::once(first).chain(requests.try_iter()).collect();
        waiting.reverse(); // taken from the end, in arrival order
        let mut batch: Vec<Entry> = Vec::with_capacity(waiting.len());
        // A panic (there is none on purpose) must not leave a stored message in queue/ whose
        // caller is told `Z`, nor a caller waiting: the batch is refused and unlinked, and the
        // committer poisoned, as for a failed flush.
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while let Some(request) = waiting.pop() {
                batch.push(writer.entry(ledger, request));
            }
            let earlier = {
                let mut c = ledger.counts();
                if c.failed.is_none() {
                    c.started += 1;
                }
                c.failed.as_ref().map(copy_io)
            };
            match earlier {
                Some(e) => {
                    for entry in batch
                        .iter_mut()
                        .filter(|e| e.outcome.is_none() && e.other.is_none())
                    {
                        entry.outcome = Some(Outcome::Poisoned(copy_io(&e)));
                    }
                    // Not messages: a delivery's files and a removal's queue/ are still
                    // synced, one by one (a runner must be able to finish what is queued).
                    flusher.flush_others(ledger, &mut batch);
                }
                None => flusher.flush(ledger, &mut batch),
            }
        }));
        if flushed.is_err() {
            ledger.fail(io::Error::other("the committer thread panicked"));
            let e = ledger.counts().failed.as_ref().map(copy_io);
            for entry in batch.iter_mut() {
                let e = e
                    .as_ref()
                    .map_or_else(|| io::Error::other("panicked"), copy_io);
                entry.outcome = Some(Outcome::Poisoned(e));
            }
            // The requests not reached yet drop their answers: refused, with nothing written.
            drop(waiting);
        }
        let durable = batch
            .iter()
            .filter(|e| e.other.is_none() && matches!(e.outcome, Some(Outcome::Durable)))
            .count();
        ledger.counts().commits += durable as u64;
        answer(ledger, batch);
    }
}

/// Answers a batch. Refused files are unlinked first (then `queue/` fsynced once), and each id
/// is settled before its answer, so a runner's scan in between finds a refused file gone rather
/// than deliverable.
fn answer(ledger: &Ledger, batch: Vec<Entry>) {
    let mut unlinked = false;
    for entry in &batch {
        if let (Some(id), false) = (&entry.id, matches!(entry.outcome, Some(Outcome::Durable))) {
            let _ = std::fs::remove_file(ledger.dir().join(id.to_string()));
            unlinked = true;
        }
    }
    if unlinked {
        let _ = crate::sys::fsync_dir(ledger.dir());
    }
    for entry in batch {
        if let Some(id) = &entry.id {
            ledger.settled(id);
        }
        let refused = |e: io::Error| SpoolError::io(Step::DirFsync, ledger.dir(), e);
        let failed = |outcome: Option<Outcome>| match outcome {
            Some(Outcome::FileFailed(e)) => e,
            Some(Outcome::Failed(e)) => refused(e),
            Some(Outcome::Poisoned(e)) => SpoolError::poisoned(ledger.dir(), &e),
            // Not reached: every entry is decided by now.
            Some(Outcome::Durable) | None => {
                refused(io::Error::other("the commit was not decided"))
            }
        };
        match entry.reply {
            Reply::Commit(reply) => reply.send(match (entry.outcome, entry.id) {
                (Some(Outcome::Durable), Some(id)) => Ok(id),
                // A durable one without its id is not reached either.
                (outcome, _) => Err(failed(outcome)),
            }),
            Reply::Sync(reply) => reply.send(match entry.outcome {
                Some(Outcome::Durable) => Ok(()),
                outcome => Err(failed(outcome)),
            }),
        }
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
    /// The file in `queue/`, written but not synced: the committer syncs it with its batch.
    file: Option<std::fs::File>,
    /// Set by `submit`: from then on the thread settles the id, not this value's drop.
    submitted: bool,
}

impl Renamed {
    /// Called by [`crate::Incoming::finish`] once `id` is in `queue/`, registered with
    /// [`Committer::renaming`].
    pub(crate) fn new(id: QueueId, committer: Committer, file: Option<std::fs::File>) -> Renamed {
        Renamed {
            id,
            committer,
            file,
            submitted: false,
        }
    }

    /// The message's id.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Blocks until the message is durable (one flush that started after its rename), then
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
        let answer = committer.request(Work::Renamed(self.id, self.file.take()));
        PendingCommit {
            id: Some(self.id),
            committer,
            answer: Some(answer),
        }
    }
}

impl Drop for Renamed {
    fn drop(&mut self) {
        if !self.submitted {
            self.committer.ledger().settled(&self.id);
        }
    }
}

/// A commit handed to the committer thread ([`Renamed::submit`]): [`PendingCommit::wait`] for its
/// answer, or `.await` it (the future needs no particular runtime).
#[derive(Debug)]
#[must_use = "the client may be told K only once the commit answered Ok"]
pub struct PendingCommit {
    /// `None` for a stored message, whose id the thread gives it.
    id: Option<QueueId>,
    committer: Committer,
    /// `None` once the future has returned its answer.
    answer: Option<reply::Receiver<Result<QueueId>>>,
}

impl PendingCommit {
    /// Blocks until the commit is answered: see [`Renamed::commit`].
    pub fn wait(mut self) -> Result<QueueId> {
        let (committer, id) = (&self.committer, self.id);
        wait_answer(self.answer.take(), || {
            committer.refused_unanswered(id.as_ref())
        })
    }
}

impl Future for PendingCommit {
    type Output = Result<QueueId>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<QueueId>> {
        let this = self.get_mut();
        let (committer, id) = (&this.committer, this.id);
        poll_answer(
            &mut this.answer,
            cx,
            || committer.refused_unanswered(id.as_ref()),
            // Polled after its answer: say so rather than panic (and unlink nothing).
            || committer.polled_twice("a commit", Step::DirFsync),
        )
    }
}

/// Waits for `answer`; `gone` makes the error when the thread went without answering.
fn wait_answer<T>(
    answer: Option<reply::Receiver<Result<T>>>,
    gone: impl FnOnce() -> SpoolError,
) -> Result<T> {
    answer
        .and_then(reply::Receiver::wait)
        .unwrap_or_else(|| Err(gone()))
}

/// Polls `answer`, dropped once it has answered; `gone` makes the error when the thread went
/// without answering, `twice` that of a poll after the answer.
fn poll_answer<T>(
    answer: &mut Option<reply::Receiver<Result<T>>>,
    cx: &mut Context<'_>,
    gone: impl FnOnce() -> SpoolError,
    twice: impl FnOnce() -> SpoolError,
) -> Poll<Result<T>> {
    let Some(receiver) = answer.as_mut() else {
        return Poll::Ready(Err(twice()));
    };
    let answered = match receiver.poll(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(answered) => answered,
    };
    *answer = None;
    Poll::Ready(answered.unwrap_or_else(|| Err(gone())))
}

/// A file handed to the committer to be made durable with its next batch
/// ([`crate::Spool::sync_with_batch`]): [`PendingSync::wait`] for the answer, or `.await` it.
#[derive(Debug)]
#[must_use = "the file is durable only once this answers Ok"]
pub struct PendingSync {
    committer: Committer,
    /// `None` once the future has returned its answer.
    answer: Option<reply::Receiver<Result<()>>>,
}

impl PendingSync {
    /// One answered already, with `result` (a file its caller synced itself).
    pub(crate) fn ready(committer: Committer, result: Result<()>) -> PendingSync {
        let (reply, answer) = reply::channel();
        reply.send(result);
        PendingSync {
            committer,
            answer: Some(answer),
        }
    }

    /// Blocks until the batch that has the file is flushed. An error: its own `fsync` failed
    /// (or `close`), or the batch's flush did, or an earlier one ([`SpoolError::is_poisoned`]).
    pub fn wait(mut self) -> Result<()> {
        let committer = &self.committer;
        wait_answer(self.answer.take(), || committer.refused_unanswered(None))
    }
}

impl Future for PendingSync {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let committer = &this.committer;
        poll_answer(
            &mut this.answer,
            cx,
            || committer.refused_unanswered(None),
            || committer.polled_twice("a sync", Step::Fsync),
        )
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

    /// A committer whose fsync of `queue/` number `nth` (from 0) fails with EIO, the others
    /// succeed; and the count of those fsyncs.
    fn failing_fsync(nth: u64) -> (Committer, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            if c.fetch_add(1, Ordering::SeqCst) == nth {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        (committer, calls)
    }

    #[test]
    fn a_failed_fsync_fails_its_batch_and_poisons() {
        let (committer, calls) = failing_fsync(1);
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
        committer.ledger().renaming(id);
        let mut pending = Renamed::new(id, committer.clone(), None).submit();
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
        committer.ledger().renaming(id);
        drop(Renamed::new(id, committer.clone(), None).submit());
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
    fn a_failed_syncfs_falls_back_to_syncing_file_by_file_for_good() {
        let dir_syncs = Arc::new(AtomicU64::new(0));
        let fs_syncs = Arc::new(AtomicU64::new(0));
        let (d, f) = (dir_syncs.clone(), fs_syncs.clone());
        let committer = Committer::with_syncfs(
            "/q".into(),
            move || {
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            move || {
                // The second syncfs reports a writeback error (of some file on the filesystem).
                if f.fetch_add(1, Ordering::SeqCst) == 1 {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    Ok(())
                }
            },
        );
        assert!(committer.wait_durable().is_ok(), "syncfs alone");
        assert_eq!(
            dir_syncs.load(Ordering::SeqCst),
            0,
            "no directory fsync with syncfs"
        );
        // The failed syncfs is not the batch's failure: its files are synced one by one (none
        // here) and queue/ fsynced, and that is what answers.
        assert!(committer.wait_durable().is_ok(), "fallback after EIO");
        assert_eq!(dir_syncs.load(Ordering::SeqCst), 1);
        let reported = committer.take_flush_fallback();
        assert_eq!(reported.and_then(|e| e.raw_os_error()), Some(libc::EIO));
        assert!(committer.take_flush_fallback().is_none(), "reported once");
        assert!(committer.has_fallen_back());
        assert!(!committer.is_poisoned());
        assert!(committer.wait_durable().is_ok());
        assert_eq!(
            fs_syncs.load(Ordering::SeqCst),
            2,
            "syncfs is not tried again"
        );
        assert_eq!(dir_syncs.load(Ordering::SeqCst), 2);
        assert_eq!(committer.stats(), (3, 3));
    }

    #[test]
    fn a_gone_thread_refuses_without_a_panic() {
        let committer = Committer::with_sync("/q".into(), || panic!("the fsync panicked"));
        let id = QueueId::generate();
        committer.ledger().renaming(id);
        let e = Renamed::new(id, committer.clone(), None).commit().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        assert!(committer.is_poisoned() && committer.refusal().is_some());
        assert!(!committer.is_uncommitted(&id));
        let e = block_on(Renamed::new(id, committer.clone(), None).submit()).err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
    }

    /// A file whose `fsync` fails (a pipe: EINVAL), and the pipe's other end, kept open.
    fn unsyncable() -> (std::fs::File, std::fs::File) {
        let (r, w) = std::io::pipe().expect("pipe");
        (
            std::fs::File::from(std::os::fd::OwnedFd::from(r)),
            std::fs::File::from(std::os::fd::OwnedFd::from(w)),
        )
    }

    #[test]
    fn another_file_is_synced_with_the_batch_and_fails_alone() {
        let dir_syncs = Arc::new(AtomicU64::new(0));
        let d = dir_syncs.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let file = tmp.reopen().expect("reopen");
        committer
            .sync(Some(file), tmp.path().to_owned(), false)
            .wait()
            .expect("a real file syncs");
        assert_eq!(
            dir_syncs.load(Ordering::SeqCst),
            0,
            "a delivery's file alone needs no fsync of queue/"
        );
        // A removal's barrier: no file, answered after a flush of queue/.
        committer
            .sync(None, "/q".into(), true)
            .wait()
            .expect("barrier");
        assert_eq!(dir_syncs.load(Ordering::SeqCst), 1);
        // Its own fsync failing fails it alone: not the committer, not a message.
        let (pipe, _other_end) = unsyncable();
        let e = committer
            .sync(Some(pipe), "/md/new/x".into(), false)
            .wait()
            .unwrap_err();
        assert_eq!(e.step(), Step::Fsync, "{e}");
        assert!(e.to_string().contains("/md/new/x"), "{e}");
        assert!(!committer.is_poisoned());
        assert!(committer.wait_durable().is_ok());
        // Not counted as commits.
        assert_eq!(committer.stats().1, 1);
    }

    #[test]
    fn syncfs_stands_for_the_fsync_of_a_file_on_its_filesystem_only() {
        let committer = Committer::with_syncfs("/q".into(), || Ok(()), || Ok(()));
        // A pipe cannot be fsynced: that it is answered Ok shows nothing tried to.
        let (covered, _a) = unsyncable();
        committer
            .sync(Some(covered), "/q/../md/x".into(), true)
            .wait()
            .expect("covered by syncfs");
        let (elsewhere, _b) = unsyncable();
        let e = committer
            .sync(Some(elsewhere), "/other/md/x".into(), false)
            .wait()
            .unwrap_err();
        assert_eq!(e.step(), Step::Fsync, "synced on its own: {e}");
    }

    #[test]
    fn a_poisoned_committer_still_syncs_other_files() {
        // queue/'s first fsync fails (poisoning); the later ones work.
        let (committer, _) = failing_fsync(0);
        assert!(committer.wait_durable().is_err());
        assert!(committer.is_poisoned());
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        committer
            .sync(
                Some(tmp.reopen().expect("reopen")),
                tmp.path().to_owned(),
                false,
            )
            .wait()
            .expect("a delivery's file is still synced");
        committer
            .sync(None, "/q".into(), true)
            .wait()
            .expect("a removal's queue/ fsync too");
        let e = committer.wait_durable().unwrap_err();
        assert!(e.is_poisoned(), "messages stay refused: {e}");
    }

    #[test]
    fn a_failed_queue_fsync_fails_the_messages_and_removals_not_another_synced_file() {
        // Every fsync of queue/ is held until three requests are queued, then fails.
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let committer = Committer::with_sync("/q".into(), move || {
            g.wait();
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let message = {
            let c = committer.clone();
            std::thread::spawn(move || c.wait_durable())
        };
        // The message's batch is in its fsync (held at the gate); these two wait for the next.
        while committer.stats().0 == 0 {
            std::thread::yield_now();
        }
        let file = committer.sync(
            Some(tmp.reopen().expect("reopen")),
            tmp.path().to_owned(),
            false,
        );
        let removal = committer.sync(None, "/q".into(), true);
        gate.wait();
        assert!(message.join().expect("join").is_err());
        // Poisoned now: the next batch syncs the file on its own and fsyncs queue/ again.
        let second = std::thread::spawn(move || gate.wait());
        assert!(file.wait().is_ok(), "its own fsync succeeded");
        let e = removal.wait().unwrap_err();
        assert_eq!(
            e.io_error().and_then(|e| e.raw_os_error()),
            Some(libc::EIO),
            "{e}"
        );
        second.join().expect("join");
    }

    #[test]
    fn files_syncfs_cannot_cover_alone_flush_nothing_of_the_spool() {
        let (fs, dir) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (f2, d2) = (fs.clone(), dir.clone());
        let committer = Committer::with_syncfs(
            "/q".into(),
            move || {
                d2.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            move || {
                f2.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        );
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        committer
            .sync(
                Some(tmp.reopen().expect("reopen")),
                tmp.path().to_owned(),
                false,
            )
            .wait()
            .expect("synced");
        let (fs, dir) = (fs.load(Ordering::SeqCst), dir.load(Ordering::SeqCst));
        assert_eq!(
            (fs, dir),
            (0, 0),
            "syncfs {fs} times, fsync of queue/ {dir} times"
        );
    }
}
