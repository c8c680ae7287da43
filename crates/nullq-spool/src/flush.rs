//! How the committer thread makes a batch durable: the [`Flush`] modes, and the [`Flusher`]
//! that writes the batch's stored messages and flushes it, deciding each message's
//! [`Outcome`]. `commit.rs` owns the thread, the batches and the answers.
//!
//! Measured on the 2-core machine (`bench/flush-cost.sh`, BENCHMARKS.md): one `syncfs` of a
//! loop-mounted ext4 holding 50 fresh 1 KB files takes about 5 ms, as does one `fdatasync`
//! each issued together from a few threads; the same fdatasyncs one after another take 22 ms,
//! each paying its own device flush. So a batch is flushed at once, never file after file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{copy_io, Result, SpoolError, Step};
use crate::format::Envelope;
use crate::id::QueueId;
use crate::ledger::Ledger;
use crate::reply;
use crate::writer::{Intake, MessageWriter};

/// One waiting caller: its message (or other file) and where to answer.
pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) reply: Reply,
}

/// Where a request is answered: a commit with its message's id, a [`Work::Sync`] with how its
/// flush went.
pub(crate) enum Reply {
    Commit(reply::Sender<Result<QueueId>>),
    Sync(reply::Sender<Result<()>>),
}

/// What a caller hands the thread.
pub(crate) enum Work {
    /// A message the caller renamed into `queue/` already, its file still open and not synced
    /// (`None` only for the batching tests' requests, which have no file).
    Renamed(QueueId, Option<File>),
    /// A message whole in memory (its `Received` lines first) and its envelope: the thread
    /// writes its file, renames it and commits it with the batch ([`crate::Spool::store`]).
    Store(Vec<u8>, Envelope),
    /// Something else made durable with the batch, sharing its journal commit
    /// ([`crate::Spool::sync_with_batch`]): a file or directory a delivery wrote (fsynced,
    /// unless `covered`), or, with no file, the spool's own `queue/` (removals: the batch's
    /// flush covers it). Nothing of it is unlinked, whatever happens.
    Sync(Option<File>, Other),
}

/// A [`Work::Sync`]'s file in the batch.
pub(crate) struct Other {
    /// For its error.
    pub(crate) path: PathBuf,
    /// On the spool's filesystem: a successful `syncfs` of it stands for its fsync.
    pub(crate) covered: bool,
}

/// One message of the batch being flushed, in the thread.
pub(crate) struct Entry {
    /// `None`: a [`Work::Store`] refused before it had a file.
    pub(crate) id: Option<QueueId>,
    /// The file to sync (taken when synced or closed).
    pub(crate) file: Option<File>,
    /// `None` while the message waits for the batch's flush.
    pub(crate) outcome: Option<Outcome>,
    pub(crate) reply: Reply,
    /// `Some` for a [`Work::Sync`]: not a message (fsynced, never unlinked).
    pub(crate) other: Option<Other>,
    /// Its file's writeback was started when it was written ([`Writer::entry`]).
    pub(crate) writing: bool,
}

/// A flush step: `fsync` of `queue/`, or `syncfs` of its filesystem (tests use fakes).
pub(crate) type SyncFn = Box<dyn FnMut() -> io::Result<()> + Send>;

/// How the committer makes a batch of messages durable (`spool_flush` in the server's
/// configuration, `--spool-flush`). Every mode keeps the same promise: a commit is answered
/// `Ok` only once the message's file, its inode and its name in `queue/` would survive a power
/// cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flush {
    /// [`Flush::Filesystem`] if the spool has a filesystem of its own (its directory is the root
    /// of a mounted filesystem) where `syncfs` is known to keep its promise (ext4, xfs or btrfs,
    /// Linux 5.17 or later), else [`Flush::Files`].
    #[default]
    Auto,
    /// `fsync` of each message file of the batch, issued together from a few threads
    /// (their writeback started first) so that the filesystem merges them into one journal
    /// commit, then one `fsync` of `queue/`. Right wherever the spool lives.
    Files,
    /// One `syncfs(2)` of the spool's filesystem per batch: data, inodes and renames of the
    /// whole batch with one journal commit and one device flush. It also writes back whatever
    /// else is dirty on that filesystem, so it is for a spool with a filesystem of its own.
    /// Refused at open on a filesystem other than ext4, xfs or btrfs, or before Linux 5.17.
    /// After a failed `syncfs` the committer flushes [`Flush::Files`] for good.
    Filesystem,
}

impl Flush {
    /// The mode for a spool at `root`: `Auto` decided, the others as they are. `Filesystem`
    /// (asked for, or what `Auto` would pick) is refused where `syncfs` does not keep its
    /// promise: see [`syncfs_problem`]. `Auto` then takes `Files`; asked for, it is an error,
    /// so that an operator who chose it learns it cannot work here instead of getting `K`s
    /// that a power cut takes back.
    pub(crate) fn resolve(self, root: &Path) -> Result<Flush> {
        match self {
            Flush::Auto if mount_root(root) && syncfs_problem(root).is_none() => {
                Ok(Flush::Filesystem)
            }
            Flush::Auto | Flush::Files => Ok(Flush::Files),
            Flush::Filesystem => match syncfs_problem(root) {
                None => Ok(Flush::Filesystem),
                Some(why) => {
                    let e = io::Error::other(format!(
                        "spool_flush = filesystem cannot make messages durable here: {why}; \
                         use files (or auto)"
                    ));
                    Err(SpoolError::io(Step::Open, root, e))
                }
            },
        }
    }
}

/// Why one `syncfs` of the filesystem holding `root` cannot stand for the batch's syncs, if it
/// cannot: a filesystem whose `syncfs` is known to write and flush everything and to report
/// writeback errors is needed (ext4, xfs, btrfs: on FUSE, 9p or a network filesystem it may
/// return 0 having synced nothing), on Linux 5.17 or later (before 5.8 `syncfs` reports no
/// writeback error at all; before 5.17 not the filesystem's own, such as a failed journal
/// commit).
fn syncfs_problem(root: &Path) -> Option<String> {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    let fs = match rustix::fs::statfs(root) {
        Ok(fs) => fs,
        Err(e) => return Some(format!("statfs: {e}")),
    };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    let kind = fs.f_type as i64;
    if ![EXT4, XFS, BTRFS].contains(&kind) {
        return Some(format!(
            "the filesystem (type {kind:#x}) is not ext4, xfs or btrfs"
        ));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (5, 17) {
        return Some(format!(
            "Linux {} does not report every writeback error from syncfs (5.17 or later does)",
            release.trim()
        ));
    }
    None
}

impl std::fmt::Display for Flush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flush::Auto => "auto",
            Flush::Files => "files",
            Flush::Filesystem => "filesystem",
        })
    }
}

/// True if `root` is where a filesystem is mounted (its device differs from its parent's): a
/// filesystem made for the spool. A spool in a directory of a larger filesystem (`/var/nullq`
/// on `/var`) does not count, even if that one is mounted apart: its `syncfs` would also wait
/// for everything anyone else wrote there. `/` itself never counts (`/..` is `/`).
fn mount_root(root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(root), dev(&root.join(".."))) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// How a batch, or one message of it, ended.
pub(crate) enum Outcome {
    Durable,
    /// This message alone failed: writing its file (a [`Work::Store`]), or its own
    /// `fsync` or `close`.
    FileFailed(SpoolError),
    /// This batch's flush failed.
    Failed(io::Error),
    /// An earlier flush failed (or the thread is gone): no flush was tried.
    Poisoned(io::Error),
}

/// The smallest batch that [`Flush::Filesystem`] flushes with one `syncfs`; a smaller one is
/// synced file by file (issued together). Measured (BENCHMARKS.md, "the commit path"): a
/// `syncfs` costs about what eight fdatasyncs issued together cost, and on ext4 it often takes
/// two journal commits (one before the inodes are written back, one after), so for a batch of
/// one it is slower than the file's own `fdatasync` (455-475 against 519-595 messages a second
/// at one session).
const SYNCFS_FROM: usize = 8;

/// How many threads issue a batch's fdatasyncs together in [`Flush::Files`] mode: enough for
/// the filesystem to merge them (4 already does on ext4), few enough to cost nothing idle.
const SYNC_THREADS: usize = 8;

/// The writing half of the committer: turns each request into an entry of the next batch,
/// writing and renaming a stored message's file first.
pub(crate) struct Writer {
    /// Where [`Work::Store`] messages are written (`None` in the batching tests).
    intake: Option<Intake>,
}

impl Writer {
    pub(crate) fn new(intake: Option<Intake>) -> Writer {
        Writer { intake }
    }

    /// The entry for one request. A stored message is written and renamed into `queue/` now,
    /// unless the committer is poisoned (then it is refused without a file).
    pub(crate) fn entry(&self, ledger: &Ledger, request: Request) -> Entry {
        let Request { work, reply } = request;
        let mut other = None;
        let mut writing = false;
        let (id, file, outcome) = match work {
            Work::Renamed(id, file) => (Some(id), file, None),
            Work::Store(message, envelope) => match self.write(ledger, &message, &envelope) {
                Ok((id, file)) => {
                    // Its data on the way to the disk now, while the batch forms and the
                    // previous one is flushed: the flush then has less to write and wait
                    // for (measured at 10 sessions: +8 % messages a second, BENCHMARKS.md).
                    crate::sys::start_writeback(&file);
                    writing = true;
                    (Some(id), Some(file), None)
                }
                Err(e) if e.is_poisoned() => (None, None, None),
                Err(e) => (None, None, Some(Outcome::FileFailed(e))),
            },
            Work::Sync(file, what) => {
                other = Some(what);
                (None, file, None)
            }
        };
        Entry {
            id,
            file,
            outcome,
            reply,
            other,
            writing,
        }
    }

    /// Writes a stored message's file and renames it into `queue/`.
    fn write(
        &self,
        ledger: &Ledger,
        message: &[u8],
        envelope: &Envelope,
    ) -> Result<(QueueId, File)> {
        let Some(intake) = &self.intake else {
            let e = io::Error::other("this committer stores no messages");
            return Err(SpoolError::io(Step::Create, ledger.dir(), e));
        };
        if let Some(e) = ledger.refusal() {
            return Err(e);
        }
        MessageWriter::store(intake, message, envelope, ledger)
    }
}

/// The flushing half of the committer: makes a batch durable. Every message of a batch is in
/// `queue/` before the batch's flush starts: renamed by its caller before the request was
/// sent, or by the [`Writer`] before it handed the entry over.
pub(crate) struct Flusher {
    /// `fsync` of `queue/`: the last step of a batch flushed file by file.
    sync_dir: SyncFn,
    /// `syncfs` of the spool's filesystem ([`Flush::Filesystem`]); `None` flushes file by file,
    /// and so does every batch after a `syncfs` failed.
    sync_fs: Option<SyncFn>,
    /// The threads that sync a batch's files together; started on first use.
    pool: Option<SyncPool>,
    /// The smallest batch flushed with `syncfs` ([`SYNCFS_FROM`]; 1 in the tests).
    syncfs_from: usize,
}

impl Flusher {
    pub(crate) fn new(sync_dir: SyncFn, sync_fs: Option<SyncFn>) -> Flusher {
        Flusher {
            sync_dir,
            sync_fs,
            pool: None,
            syncfs_from: SYNCFS_FROM,
        }
    }

    /// A flusher that takes `syncfs` for every batch, however small (the tests' fakes).
    #[cfg(test)]
    pub(crate) fn syncfs_always(mut self) -> Flusher {
        self.syncfs_from = 1;
        self
    }

    /// Flushes the entries still waiting (`outcome` `None`), deciding each.
    pub(crate) fn flush(&mut self, ledger: &Ledger, batch: &mut [Entry]) {
        // What a syncfs would stand for: messages, removals, covered files (not a file of
        // another filesystem, which its own fsync makes durable either way).
        let coverable = |e: &Entry| {
            e.other
                .as_ref()
                .is_none_or(|o| o.covered || e.file.is_none())
        };
        let waiting = batch
            .iter()
            .filter(|e| e.outcome.is_none() && coverable(e))
            .count();
        // Whether queue/ needs its fsync: a message (its rename, or the unlink of a refused
        // one) or a removal is in the batch; delivery files alone need only their own fsyncs.
        let spool_work = batch.iter().any(|e| e.other.is_none() || e.file.is_none());
        if let Some(sync_fs) = self
            .sync_fs
            .as_mut()
            .filter(|_| waiting >= self.syncfs_from)
        {
            // One call writes back every dirty file of the filesystem and commits its journal:
            // the batch's data, inodes and renames with one device flush.
            match sync_fs() {
                Ok(()) => {
                    // Everything on the spool's filesystem is durable now; the other
                    // filesystems' files are synced next.
                    let elsewhere = |e: &Entry| e.other.as_ref().is_some_and(|o| !o.covered);
                    for entry in batch
                        .iter_mut()
                        .filter(|e| e.outcome.is_none() && !(elsewhere(e) && e.file.is_some()))
                    {
                        let closed = entry.file.take().map(nullq_fs::close);
                        entry.outcome = Some(match closed {
                            Some(Err(e)) => {
                                let path = entry.path(ledger);
                                Outcome::FileFailed(SpoolError::io(Step::Close, &path, e))
                            }
                            _ => Outcome::Durable,
                        });
                    }
                    if batch.iter().any(|e| e.outcome.is_none()) {
                        self.sync_files(ledger, batch);
                        for entry in batch.iter_mut().filter(|e| e.outcome.is_none()) {
                            entry.outcome = Some(Outcome::Durable);
                        }
                    }
                    return;
                }
                // A writeback error somewhere on the filesystem since the last syncfs (in
                // another file, maybe), reported once. From now on every file is synced on its
                // own: each open file sees its own errors, so none is taken as durable on the
                // strength of an error already reported here.
                Err(e) => {
                    self.sync_fs = None;
                    ledger.fell_back(e);
                }
            }
        }
        self.sync_others_files(ledger, batch);
        if !spool_work {
            return;
        }
        let synced = (self.sync_dir)();
        for entry in batch.iter_mut().filter(|e| e.outcome.is_none()) {
            entry.outcome = Some(match &synced {
                Ok(()) => Outcome::Durable,
                Err(e) => Outcome::Failed(copy_io(e)),
            });
        }
        if let Err(e) = synced {
            ledger.fail(e);
        }
    }

    /// The [`Work::Sync`] entries of a batch of a poisoned committer (the messages are
    /// refused): each file fsynced, and `queue/` once for those without one. A `queue/` fsync
    /// that fails again fails them; the committer is poisoned already.
    pub(crate) fn flush_others(&mut self, ledger: &Ledger, batch: &mut [Entry]) {
        self.sync_others_files(ledger, batch);
        if batch.iter().any(|e| e.outcome.is_none()) {
            let synced = (self.sync_dir)();
            for entry in batch.iter_mut().filter(|e| e.outcome.is_none()) {
                entry.outcome = Some(match &synced {
                    Ok(()) => Outcome::Durable,
                    Err(e) => Outcome::Failed(copy_io(e)),
                });
            }
        }
    }

    /// [`Flusher::sync_files`], and a [`Work::Sync`]'s file synced is decided durable then:
    /// its own `fsync` is what it needs, whatever becomes of the `queue/` fsync that follows
    /// for the messages (a failure there must not make a delivery's writer repeat it).
    fn sync_others_files(&mut self, ledger: &Ledger, batch: &mut [Entry]) {
        let other_file: Vec<bool> = batch
            .iter()
            .map(|e| e.other.is_some() && e.file.is_some() && e.outcome.is_none())
            .collect();
        self.sync_files(ledger, batch);
        for (entry, _) in batch
            .iter_mut()
            .zip(other_file)
            .filter(|(e, other)| *other && e.outcome.is_none())
        {
            entry.outcome = Some(Outcome::Durable);
        }
    }

    /// `fsync` and `close` of every file of the batch (see [`sync_job`]), issued together; an entry whose file fails is decided (`FileFailed`), and a message's
    /// file unlinked (the directory fsync that follows makes that durable).
    fn sync_files(&mut self, ledger: &Ledger, batch: &mut [Entry]) {
        // Start the writeback of every file before waiting for any: the device sees them
        // together, and one journal commit carries all their blocks.
        // Only the undecided: a refused message's file is not synced (it is unlinked).
        let waiting = |e: &Entry| e.outcome.is_none();
        for file in batch
            .iter()
            .filter(|e| waiting(e) && !e.writing)
            .filter_map(|e| e.file.as_ref())
        {
            crate::sys::start_writeback(file);
        }
        let jobs: Vec<Job> = batch
            .iter_mut()
            .enumerate()
            .filter(|(_, e)| waiting(e))
            .filter_map(|(i, e)| {
                let file = e.file.take()?;
                Some((i, file, e.path(ledger)))
            })
            .collect();
        let results = match jobs.len() {
            0 => Vec::new(),
            1 => jobs.into_iter().map(sync_job).collect(),
            _ => {
                if self.pool.is_none() {
                    self.pool = SyncPool::start();
                }
                match &self.pool {
                    Some(pool) => pool.sync_all(jobs),
                    // No threads to be had: one after another, slower but as safe.
                    None => jobs.into_iter().map(sync_job).collect(),
                }
            }
        };
        for (i, result, path) in results {
            if let (Err(e), Some(entry)) = (result, batch.get_mut(i)) {
                // Its pages may be lost: a message must not be delivered. Another file is
                // its writer's to handle.
                if entry.other.is_none() {
                    let _ = std::fs::remove_file(&path);
                }
                entry.outcome = Some(Outcome::FileFailed(e));
            }
        }
    }
}

impl Entry {
    /// The path its errors name.
    fn path(&self, ledger: &Ledger) -> PathBuf {
        match &self.other {
            Some(o) => o.path.clone(),
            None => ledger.path_of(self.id.as_ref()),
        }
    }
}

/// A file to sync: its place in the batch, the file, its path (for the error).
type Job = (usize, File, PathBuf);

/// Syncs and closes one job's file: `fsync`, the inode's every change with the data. A
/// message's file too: the committer makes a small message's file in `queue/` itself, marked
/// as being written until its mode is set (writer.rs), and that mode must be durable before
/// `K` (`fdatasync` need not write a mode change).
fn sync_job((i, file, path): Job) -> Synced {
    (i, crate::sys::fsync_and_close(file, &path), path)
}
/// A synced file: its place in the batch, how its `fsync` and `close` went, its path.
type Synced = (usize, Result<()>, PathBuf);

/// A few threads that `fsync` and close files handed to them, so that a batch's syncs are
/// in flight together. They end when the pool is dropped (with the committer thread).
struct SyncPool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Synced>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncPool {
    /// Starts the threads; `None` if not even one could be started.
    fn start() -> Option<SyncPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (report, done) = mpsc::channel::<Synced>();
        let queue = Arc::new(Mutex::new(queue));
        let threads: Vec<_> = (0..SYNC_THREADS)
            .filter_map(|_| {
                let (queue, report) = (Arc::clone(&queue), report.clone());
                std::thread::Builder::new()
                    .name("nullq-sync".into())
                    .spawn(move || loop {
                        // The lock is held only to take one job; a panic elsewhere cannot
                        // leave the receiver half-used.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        let (i, path, step) = (job.0, job.2.clone(), Step::Fsync);
                        // A panic is an answer too (an error), so sync_all never waits forever.
                        let synced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            sync_job(job)
                        }))
                        .unwrap_or_else(|_| {
                            let e = io::Error::other(format!("{step} panicked"));
                            (i, Err(SpoolError::io(step, &path, e)), path)
                        });
                        if report.send(synced).is_err() {
                            return;
                        }
                    })
                    .ok()
            })
            .collect();
        (!threads.is_empty()).then_some(SyncPool {
            jobs: Some(jobs),
            done,
            threads,
        })
    }

    /// Syncs every file, together; returns when all are done. A job whose thread died (a
    /// panic) comes back as an error, so its message is refused, never taken as durable.
    fn sync_all(&self, jobs: Vec<Job>) -> Vec<Synced> {
        let mut missing: Vec<(usize, PathBuf, Step)> = jobs
            .iter()
            .map(|job| (job.0, job.2.clone(), Step::Fsync))
            .collect();
        let mut results = Vec::with_capacity(jobs.len());
        if let Some(sender) = &self.jobs {
            for job in jobs {
                if sender.send(job).is_err() {
                    break;
                }
            }
        }
        while results.len() < missing.len() {
            match self.done.recv() {
                Ok(synced) => results.push(synced),
                Err(_) => break,
            }
        }
        missing.retain(|(i, _, _)| !results.iter().any(|(j, _, _)| j == i));
        for (i, path, step) in missing {
            let e = io::Error::other("the thread syncing this file is gone");
            results.push((i, Err(SpoolError::io(step, &path, e)), path));
        }
        results
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
