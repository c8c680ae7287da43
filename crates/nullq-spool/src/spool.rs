//! The spool: opening it (directories, lock, recovery) and the operations on committed
//! messages (list, load, verify, set aside, read, save state, remove).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::commit::{Committer, PendingCommit, PendingSync};
use crate::error::{Result, SpoolError, Step};
use crate::flush::Flush;
use crate::format::Envelope;
use crate::id::QueueId;
use crate::incoming::Incoming;
use crate::layout::Dirs;
use crate::reader::{
    check_whole, message_len, read_state_file, MessageBytes, MessageFile, MessageReader, WHOLE_MAX,
};
use crate::recover::{self, RecoveryReport};
use crate::state::DeliveryState;
use crate::sys;
use crate::writer::Intake;

/// A spool directory. Cheap to clone; clones share one [`Committer`] and one lock.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dirs: Dirs,
    /// Where [`Spool::receive`] creates its files.
    intake: Intake,
    /// How the committer flushes its batches (decided: never `Auto`).
    flush: Flush,
    /// The device of `queue/` (the committer's directory, whose filesystem its `syncfs`
    /// flushes): only a file on it shares the committer's flushes.
    dev: u64,
    committer: Committer,
    /// Holds the `flock` on `ROOT/lock` for as long as the spool is open (None when attached).
    _lock: Option<Arc<File>>,
}

/// What [`Spool::load`] returns: a committed message's envelope and delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The message's id.
    pub id: QueueId,
    /// Sender, recipients, arrival, client.
    pub envelope: Envelope,
    /// Size of the message bytes ([`Spool::message`] reads them).
    pub message_len: u64,
    /// Per-recipient state, in envelope order (all pending if never saved).
    pub state: DeliveryState,
}

impl Spool {
    /// Opens the spool at `root` for a server: creates the directories if missing (mode 0700),
    /// takes the lock on `ROOT/lock` (a second `open` of the same spool fails with
    /// [`Step::Lock`] until this one and its clones are dropped), then recovers: deletes
    /// everything in `tmp/`, checks every file in `queue/` (moving bad ones to `corrupt/`),
    /// and removes or sets aside bad `state/` files. See the report for what it did.
    pub fn open(root: impl AsRef<Path>) -> Result<(Spool, RecoveryReport)> {
        Spool::open_with(root, Flush::default())
    }

    /// [`Spool::open`] with the committer making its batches durable the way `flush` says.
    pub fn open_with(root: impl AsRef<Path>, flush: Flush) -> Result<(Spool, RecoveryReport)> {
        let dirs = Dirs::new(root.as_ref());
        let mut created = sys::mkdir(&dirs.root)?;
        for dir in dirs.subdirs() {
            created |= sys::mkdir(dir)?;
        }
        if created {
            sys::fsync_dir(&dirs.root)?;
        }
        let lock = Arc::new(sys::lock_file(&dirs.lock())?);
        let report = recover::recover(&dirs)?;
        let flush = flush.resolve(&dirs.root)?;
        let committer = Committer::for_dir(
            dirs.queue.clone(),
            flush,
            Intake::new(&dirs, Some(lock.clone()))?,
        )?;
        Ok((
            Spool {
                inner: Arc::new(Inner {
                    intake: Intake::new(&dirs, Some(lock.clone()))?,
                    flush,
                    dev: device(&dirs.queue)?,
                    dirs,
                    committer,
                    _lock: Some(lock),
                }),
            },
            report,
        ))
    }

    /// Uses the spool at `root` without locking or recovering it: for tools that inspect or
    /// change the queue of a running server. The directories must exist.
    pub fn attach(root: impl AsRef<Path>) -> Result<Spool> {
        let dirs = Dirs::new(root.as_ref());
        for dir in dirs.subdirs() {
            sys::open_dir(dir)?;
        }
        let committer =
            Committer::for_dir(dirs.queue.clone(), Flush::Files, Intake::new(&dirs, None)?)?;
        Ok(Spool {
            inner: Arc::new(Inner {
                intake: Intake::new(&dirs, None)?,
                flush: Flush::Files,
                dev: device(&dirs.queue)?,
                dirs,
                committer,
                _lock: None,
            }),
        })
    }

    /// Bind `ROOT/trigger` for this spool's delivery runner (non-blocking; see
    /// [`crate::pull_trigger`]). Only on a spool this process opened (holding its lock), so a
    /// socket left by a killed runner is replaced and no other runner is bound there.
    pub fn bind_trigger(&self) -> Result<std::os::unix::net::UnixDatagram> {
        if self.inner._lock.is_none() {
            let e = io::Error::other("only the process that opened the spool binds its trigger");
            return Err(SpoolError::io(Step::Lock, self.root(), e));
        }
        crate::trigger::bind(self.root())
    }

    /// How this spool's committer makes its batches durable now ([`Flush::Auto`] decided at
    /// open; `Files` once a failed `syncfs` made it fall back).
    pub fn flush(&self) -> Flush {
        match self.inner.flush {
            Flush::Filesystem if self.inner.committer.has_fallen_back() => Flush::Files,
            flush => flush,
        }
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.dirs.root
    }

    /// The group committer of this spool (shared by all clones).
    pub fn committer(&self) -> Committer {
        self.inner.committer.clone()
    }

    /// Starts receiving a message: creates `tmp/ID` (`O_CREAT|O_EXCL`, mode 0600). Refused,
    /// creating nothing, once the committer is poisoned ([`SpoolError::is_poisoned`]).
    pub fn receive(&self) -> Result<Incoming> {
        if let Some(e) = self.inner.committer.refusal() {
            return Err(e);
        }
        Incoming::create(&self.inner.intake, self.committer())
    }

    /// Stores a message that is whole in memory (`message`: its bytes, the server's `Received`
    /// lines first): the committer thread writes its file, renames it into `queue/` and makes
    /// it durable with the batch it is in, so that the caller's thread does no file work at
    /// all. The answer is [`crate::Renamed::commit`]'s, with the id the thread gave the message: only
    /// `Ok` allows a `K`. A failure to write it (a full disk) refuses this message alone.
    pub fn store(&self, message: Vec<u8>, envelope: Envelope) -> PendingCommit {
        self.inner.committer.store(message, envelope)
    }

    /// Makes `file` (a file or directory someone else wrote: a delivery's file in a Maildir, its
    /// `new/`) durable with the committer's next batch, its `fsync` issued with the batch's own
    /// so that the filesystem's journal commits them together, instead of a commit of its own
    /// while the spool commits another. Under load the committer is always flushing, so a
    /// delivery then costs receiving no extra journal commit. With [`Flush::Filesystem`] the
    /// batch's `syncfs` covers it (it is not synced again). Only a file on the spool's own
    /// filesystem (that of `queue/`) goes to the committer: one elsewhere would share no journal
    /// commit, and a stuck filesystem (an NFS server gone) would stop receiving too; it is
    /// fsynced here, now, and the answer is ready at once. The file is closed (a failed `close`
    /// is an error too); nothing is ever unlinked. `path` names it in errors. Answered `Ok`
    /// only once the file would survive a power cut.
    pub fn sync_with_batch(&self, file: File, path: &Path) -> PendingSync {
        use std::os::unix::fs::MetadataExt;
        let here = file.metadata().is_ok_and(|m| m.dev() == self.inner.dev);
        if !here {
            return PendingSync::ready(self.committer(), sys::fsync_and_close(file, path));
        }
        let covered = self.inner.flush == Flush::Filesystem;
        self.inner
            .committer
            .sync(Some(file), path.to_owned(), covered)
    }

    /// Ids of the committed messages, oldest first. Names in `queue/` that are not ids are
    /// skipped (the next [`Spool::open`] moves them to `corrupt/`).
    pub fn list(&self) -> Result<Vec<QueueId>> {
        let dir = &self.inner.dirs.queue;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| SpoolError::io(Step::Read, dir, e))? {
            let entry = entry.map_err(|e| SpoolError::io(Step::Read, dir, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The envelope and delivery state of a committed message. Reads the trailer and envelope
    /// (not the message) and `state/ID`; no state file means every recipient is pending.
    pub fn load(&self, id: &QueueId) -> Result<QueuedMessage> {
        let path = self.queue_path(id);
        let file = MessageFile::open(&path).map_err(|e| e.into_spool(&path))?;
        let envelope = file.envelope().map_err(|e| e.into_spool(&path))?;
        let state = self.read_state(id, envelope.recipients.len())?;
        Ok(QueuedMessage {
            id: *id,
            envelope,
            message_len: file.trailer.msg_len,
            state,
        })
    }

    /// Whether [`Spool::load_open`] reads a queue file of `len` bytes whole, in one read (else
    /// it checks the file's checksum by reading all of it in pieces: a large message takes
    /// a while, so callers with other work to do do that elsewhere).
    pub fn loads_whole(len: u64) -> bool {
        len <= WHOLE_MAX
    }

    /// [`Spool::verify`] and [`Spool::load`] in one, through `file`, the descriptor of
    /// `queue/ID` its caller already holds (and has locked): a delivery's one open of the
    /// file. A file of up to 64 KiB is read whole, in one read, and checked in memory; its
    /// message bytes come back with it, so that delivery does not read the file again (larger
    /// ones are checked as `verify` does, and read again from the spool as they are sent).
    /// Errors as theirs: a file found bad has [`SpoolError::is_corrupt`].
    pub fn load_open(
        &self,
        id: &QueueId,
        file: &File,
    ) -> Result<(QueuedMessage, Option<MessageBytes>)> {
        use std::os::unix::fs::FileExt;
        let path = self.queue_path(id);
        let len = message_len(file, &path).map_err(|e| e.into_spool(&path))?;
        if len > WHOLE_MAX {
            let copy = file
                .try_clone()
                .map_err(|e| SpoolError::io(Step::Open, &path, e))?;
            let checked = MessageFile::checked(copy, &path).map_err(|e| e.into_spool(&path))?;
            checked.check_crc().map_err(|e| e.into_spool(&path))?;
            let envelope = checked.envelope().map_err(|e| e.into_spool(&path))?;
            let state = self.read_state(id, envelope.recipients.len())?;
            let queued = QueuedMessage {
                id: *id,
                envelope,
                message_len: checked.trailer.msg_len,
                state,
            };
            return Ok((queued, None));
        }
        // At most WHOLE_MAX: fits in usize.
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| SpoolError::io(Step::Read, &path, e))?;
        let (trailer, envelope) =
            check_whole(&bytes).map_err(|why| SpoolError::invalid(&path, why))?;
        let state = self.read_state(id, envelope.recipients.len())?;
        let queued = QueuedMessage {
            id: *id,
            envelope,
            message_len: trailer.msg_len,
            state,
        };
        Ok((queued, Some(MessageBytes::of_file(bytes, trailer.msg_len))))
    }

    /// Checks a committed message's file completely, as [`Spool::open`] does: size, header,
    /// trailer, the checksum over message and envelope, the envelope. Reads the whole file. A
    /// file found bad gives an error with [`SpoolError::is_corrupt`]: move it aside with
    /// [`Spool::set_aside`] rather than trying it again.
    pub fn verify(&self, id: &QueueId) -> Result<()> {
        let path = self.queue_path(id);
        recover::check_message(&path)
            .map(|_| ())
            .map_err(|e| e.into_spool(&path))
    }

    /// Moves what `err` found corrupt (an error of [`Spool::load`] or [`Spool::verify`] with
    /// [`SpoolError::is_corrupt`]) into `corrupt/`, as [`Spool::open`] does with what it finds
    /// bad, and makes the moves durable (`corrupt/` fsynced first). A bad message file goes with
    /// its state file (`corrupt/ID`, `corrupt/ID.state`): the message is no longer queued. A bad
    /// state file goes alone (`corrupt/ID.state`): the message stays queued with every recipient
    /// pending again, which repeats deliveries and loses none. Returns the moves, for the log;
    /// the caller holds the message's lock.
    pub fn set_aside(&self, id: &QueueId, err: &SpoolError) -> Result<Vec<recover::CorruptFile>> {
        let reason = err
            .invalid_reason()
            .unwrap_or("not a whole queue file")
            .to_owned();
        self.move_aside(id, err.path() == self.state_path(id), reason)
    }

    /// [`Spool::set_aside`] for a `queue/ID` that is not a message file at all (a symlink or a
    /// socket, which its caller could not open to lock): moved with its state file, for
    /// `reason`.
    pub fn set_aside_queue_file(
        &self,
        id: &QueueId,
        reason: &str,
    ) -> Result<Vec<recover::CorruptFile>> {
        self.move_aside(id, false, reason.to_owned())
    }

    /// Moves `state/ID` alone (`state_only`), or `queue/ID` and its state, to `corrupt/`.
    fn move_aside(
        &self,
        id: &QueueId,
        state_only: bool,
        reason: String,
    ) -> Result<Vec<recover::CorruptFile>> {
        let d = &self.inner.dirs;
        let (queue_path, state_path) = (self.queue_path(id), self.state_path(id));
        let name = std::ffi::OsString::from(id.to_string());
        let mut moved = Vec::new();
        if !state_only {
            moved.push(recover::move_to_corrupt(d, &queue_path, &name, "", reason)?);
            let why = "its message was moved to corrupt/".to_string();
            match recover::move_to_corrupt(d, &state_path, &name, ".state", why) {
                Ok(m) => moved.push(m),
                // No state yet: every recipient was pending.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        } else {
            moved.push(recover::move_to_corrupt(
                d,
                &state_path,
                &name,
                ".state",
                reason,
            )?);
        }
        sys::fsync_dir(&d.corrupt)?;
        if moved.iter().any(|m| m.from == queue_path) {
            sys::fsync_dir(&d.queue)?;
        }
        if moved.iter().any(|m| m.from == state_path) {
            sys::fsync_dir(&d.state)?;
        }
        Ok(moved)
    }

    /// A reader over exactly the message bytes of a committed message, streamed from disk.
    pub fn message(&self, id: &QueueId) -> Result<MessageReader> {
        let path = self.queue_path(id);
        Ok(MessageFile::open(&path)
            .map_err(|e| e.into_spool(&path))?
            .into_message_reader())
    }

    /// Durably replaces the delivery state of a message: writes `tmp/ID.state.*`, fdatasyncs
    /// and closes it, renames it over `state/ID`, fsyncs `state/`. Returns only when the new
    /// state would survive a crash; on error the old state stands.
    pub fn save_state(&self, id: &QueueId, state: &DeliveryState) -> Result<()> {
        self.write_state(id, state, true)
    }

    /// Writes `state` aside in tmp/ and renames it over `state/ID` (the project's one durable
    /// write), fsyncing `state/` after if `sync_dir` (a batch fsyncs it once for all). Locked
    /// while in tmp/, like a message being received, so another process's recovery leaves it
    /// alone (a `nullq queue` tool writes these too).
    fn write_state(&self, id: &QueueId, state: &DeliveryState, sync_dir: bool) -> Result<()> {
        let d = &self.inner.dirs;
        let options = nullq_fs::Options {
            replace: true,
            lock: true,
            sync_dir,
            ..nullq_fs::Options::default()
        };
        nullq_fs::publish_to(
            &d.tmp,
            &format!("{id}.state.{}", QueueId::generate()),
            &d.state,
            &id.to_string(),
            &options,
            |file| file.write_all(&state.encode()),
        )
        .map_err(sys::from_fs)
    }

    /// Removes a message whose recipients are all done (the caller checks
    /// [`DeliveryState::any_pending`]). Unlinks `queue/ID` and fsyncs `queue/`, then unlinks
    /// `state/ID`. Removing an id that is already gone is not an error, so a removal cut short
    /// by a crash can simply be repeated.
    ///
    /// The queue file goes first: a crash in between leaves a state file without a message,
    /// which the next [`Spool::open`] deletes. The other order would leave a message without
    /// state, i.e. all pending, and deliver it to every recipient again.
    pub fn remove(&self, id: &QueueId) -> Result<()> {
        if sys::unlink(&self.queue_path(id))? {
            sys::fsync_dir(&self.inner.dirs.queue)?;
        }
        sys::unlink(&self.state_path(id))?;
        Ok(())
    }

    fn queue_path(&self, id: &QueueId) -> PathBuf {
        self.inner.dirs.queue_file(id)
    }

    fn state_path(&self, id: &QueueId) -> PathBuf {
        self.inner.dirs.state_file(id)
    }

    fn read_state(&self, id: &QueueId, recipients: usize) -> Result<DeliveryState> {
        let path = self.state_path(id);
        match read_state_file(&path, recipients).map_err(|e| e.into_spool(&path))? {
            Some(bytes) => recover::check_state(&bytes, recipients)
                .map_err(|why| SpoolError::invalid(&path, why)),
            None => Ok(DeliveryState::all_pending(recipients)),
        }
    }
}

/// Batched forms of [`Spool::remove`] and [`Spool::save_state`], for a delivery runner that
/// finishes many messages at the same moment: one directory fsync for the whole batch instead of
/// one per message, each message's own order kept (its queue file's unlink durable before its
/// state file goes; its new state file written and synced before the rename that the one fsync
/// of `state/` makes durable).
impl Spool {
    /// [`Spool::remove`] for every id of `ids`: unlinks each `queue/ID`, fsyncs `queue/` once,
    /// then unlinks the state files of those whose removal is durable. One result per id, in
    /// order; a failed fsync fails every id it was to make durable (their files are gone from
    /// `queue/`, but a crash may bring them back: delivered again, never lost).
    pub fn remove_batch(&self, ids: &[QueueId]) -> Vec<Result<()>> {
        let mut unlinked: Vec<Result<bool>> = ids
            .iter()
            .map(|id| sys::unlink(&self.queue_path(id)))
            .collect();
        if unlinked.iter().any(|r| matches!(r, Ok(true))) {
            // Made durable by the committer's next flush of queue/ (with the messages being
            // received), not by a journal commit of its own.
            // A poisoned committer (its thread maybe gone) is not asked: fsynced here.
            let queue = &self.inner.dirs.queue;
            let committer = &self.inner.committer;
            let synced = if committer.is_poisoned() {
                sys::fsync_dir(queue)
            } else {
                committer.sync(None, queue.clone(), true).wait()
            };
            if let Err(e) = synced {
                for r in unlinked.iter_mut().filter(|r| matches!(r, Ok(true))) {
                    *r = Err(same_error(&e));
                }
            }
        }
        unlinked
            .into_iter()
            .zip(ids)
            .map(|(r, id)| r.and_then(|_| sys::unlink(&self.state_path(id)).map(|_| ())))
            .collect()
    }

    /// [`Spool::save_state`] for every `(id, state)` of `states`: each written aside, synced and
    /// renamed over `state/ID`, then `state/` fsynced once. One result per entry, in order; on
    /// an error the old state of that message stands (or, after a failed fsync, either may).
    pub fn save_state_batch(&self, states: &[(QueueId, DeliveryState)]) -> Vec<Result<()>> {
        let d = &self.inner.dirs;
        let mut results: Vec<Result<bool>> = states
            .iter()
            .map(|(id, state)| self.write_state(id, state, false).map(|()| true))
            .collect();
        if results.iter().any(|r| matches!(r, Ok(true))) {
            if let Err(e) = sys::fsync_dir(&d.state) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(same_error(&e));
                }
            }
        }
        results.into_iter().map(|r| r.map(|_| ())).collect()
    }
}

/// The device of `root` (see [`Inner::dev`]).
fn device(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(root)
        .map(|m| m.dev())
        .map_err(|e| SpoolError::io(Step::Open, root, e))
}

/// The error of a batch's fsync again, for each message of the batch (`SpoolError` is not
/// `Clone`).
fn same_error(e: &SpoolError) -> SpoolError {
    let io = match e.io_error() {
        Some(io) => crate::error::copy_io(io),
        None => io::Error::other(e.to_string()),
    };
    SpoolError::io(e.step(), e.path(), io)
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    fn queue_one(spool: &Spool) -> QueueId {
        let mut incoming = spool.receive().expect("receive");
        incoming.write(b"Subject: s\n\nbody\n").expect("write");
        let envelope = Envelope {
            arrival: std::time::SystemTime::now(),
            client_addr: "192.0.2.7:4711".into(),
            client_host: String::new(),
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec(), b"e@f".to_vec()],
        };
        incoming
            .finish(&envelope)
            .expect("finish")
            .commit()
            .expect("commit")
    }

    #[test]
    fn a_batch_of_states_is_saved_and_a_batch_of_messages_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path().join("spool")).expect("open");
        let ids: Vec<QueueId> = (0..3).map(|_| queue_one(&spool)).collect();
        let mut state = DeliveryState::all_pending(2);
        state.recipients[0].status = crate::Status::Delivered;
        state.recipients[1].attempts = 1;
        let saved = spool.save_state_batch(&[(ids[0], state.clone()), (ids[2], state.clone())]);
        assert!(saved.iter().all(Result::is_ok), "{saved:?}");
        assert_eq!(spool.load(&ids[0]).expect("load").state, state);
        assert_eq!(
            spool.load(&ids[1]).expect("load").state,
            DeliveryState::all_pending(2)
        );
        assert_eq!(spool.load(&ids[2]).expect("load").state, state);

        // Two of three, and one already gone: all fine, and only the third stays.
        let gone = ids[0];
        assert!(spool.remove_batch(&[gone]).iter().all(Result::is_ok));
        let removed = spool.remove_batch(&[ids[0], ids[1], gone]);
        assert_eq!(removed.len(), 3);
        assert!(removed.iter().all(Result::is_ok), "{removed:?}");
        assert_eq!(spool.list().expect("list"), vec![ids[2]]);
        let states: Vec<_> = std::fs::read_dir(dir.path().join("spool/state"))
            .expect("state dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(states, vec![std::ffi::OsString::from(ids[2].to_string())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A spool whose directory fsync `n` (1-based) fails with EIO.
    fn failing_spool(root: &Path, n: u64) -> Spool {
        let (spool, _) = Spool::open(root).expect("open");
        let Ok(inner) = Arc::try_unwrap(spool.inner) else {
            panic!("a fresh spool has one owner")
        };
        let calls = AtomicU64::new(0);
        let intake = Intake::new(&inner.dirs, inner._lock.clone()).expect("intake");
        let committer = Committer::with_sync_storing(inner.dirs.queue.clone(), intake, move || {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 == n {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        Spool {
            inner: Arc::new(Inner { committer, ..inner }),
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            arrival: std::time::SystemTime::now(),
            client_addr: "192.0.2.7:4711".into(),
            client_host: String::new(),
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec()],
        }
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("read_dir").count()
    }

    #[test]
    fn a_refused_commit_leaves_nothing_in_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("spool");
        let spool = failing_spool(&root, 2);
        let committer = spool.committer();
        let receive = |body: &[u8]| {
            let mut incoming = spool.receive().expect("receive");
            incoming.write(body).expect("write");
            incoming
        };

        let a = receive(b"a").finish(&envelope()).expect("finish a");
        let a_id = *a.id();
        assert!(committer.is_uncommitted(&a_id));
        assert_eq!(a.commit().ok(), Some(a_id), "fsync 1 succeeds");
        assert!(!committer.is_uncommitted(&a_id));

        // Still receiving when the commit fails: it must not reach queue/.
        let mid_receive = receive(b"mid");
        let b = receive(b"b").finish(&envelope()).expect("finish b");
        let c = receive(b"c").finish(&envelope()).expect("finish c");
        let (b_id, c_id) = (*b.id(), *c.id());
        assert_eq!(count(&root.join("queue")), 3);

        // Fsync 2 fails: b's batch. c renamed before it too, but commits after: refused.
        let e = b.commit().err();
        assert!(
            matches!(&e, Some(e) if e.step() == Step::DirFsync && !e.is_poisoned()),
            "{e:?}"
        );
        assert!(committer.is_poisoned());
        let e = c.commit().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        assert!(!committer.is_uncommitted(&b_id) && !committer.is_uncommitted(&c_id));
        assert_eq!(
            spool.list().expect("list"),
            vec![a_id],
            "only the K'd one stays"
        );

        let e = mid_receive.finish(&envelope()).err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        let e = spool.receive().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        assert_eq!(
            count(&root.join("tmp")),
            0,
            "nothing received after the failure"
        );
        assert_eq!(spool.list().expect("list"), vec![a_id]);
        assert_eq!(
            committer.stats(),
            (2, 1),
            "no fsync is tried after the failure"
        );
    }

    /// The committer thread panics after it wrote and renamed a stored message (found by a
    /// red-team review): the caller is refused (`Z`) and the file must not stay queued.
    #[test]
    fn a_store_refused_because_the_thread_panicked_leaves_nothing_in_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("spool");
        let (spool, _) = Spool::open(&root).expect("open");
        let Ok(inner) = Arc::try_unwrap(spool.inner) else {
            panic!("a fresh spool has one owner")
        };
        let intake = Intake::new(&inner.dirs, inner._lock.clone()).expect("intake");
        let committer = Committer::with_sync_storing(inner.dirs.queue.clone(), intake, || {
            panic!("the flush panicked (a test)")
        });
        let spool = Spool {
            inner: Arc::new(Inner { committer, ..inner }),
        };
        let e = spool
            .store(b"Subject: z\n\nz\n".to_vec(), envelope())
            .wait()
            .err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        let left = spool.list().expect("list");
        assert_eq!(
            left,
            Vec::<QueueId>::new(),
            "answered Z, yet queued: {left:?}"
        );
        // Poisoned from then on, and nothing hangs.
        let e = spool.store(b"again".to_vec(), envelope()).wait().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
    }

    #[test]
    fn a_stored_message_is_refused_with_its_batch_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("spool");
        let spool = failing_spool(&root, 2);
        let a = spool
            .store(b"Subject: a\n\na\n".to_vec(), envelope())
            .wait();
        let a = a.expect("flush 1 succeeds");
        assert_eq!(spool.list().expect("list"), vec![a]);
        let e = spool.store(b"b".to_vec(), envelope()).wait().err();
        assert!(
            matches!(&e, Some(e) if e.step() == Step::DirFsync && !e.is_poisoned()),
            "{e:?}"
        );
        let e = spool.store(b"c".to_vec(), envelope()).wait().err();
        assert!(matches!(&e, Some(e) if e.is_poisoned()), "{e:?}");
        // Only the first is queued; the refused ones were unlinked (or never written).
        assert_eq!(spool.list().expect("list"), vec![a]);
        assert_eq!(count(&root.join("tmp")), 0);
        assert!(!spool.committer().is_uncommitted(&a));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_stored_message_is_whole_and_unmarked_from_the_owner_and_from_an_attached_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("spool");
        let (spool, _) = Spool::open(&root).expect("open");
        let body = b"Subject: born\n\nin queue/\n".to_vec();
        let id = spool.store(body.clone(), envelope()).wait().expect("store");
        assert_eq!(mode(&spool.queue_path(&id)), 0o600, "the mark is cleared");
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut spool.message(&id).expect("message"), &mut read)
            .expect("read");
        assert_eq!(read, body);
        let loaded = spool.load(&id).expect("load").envelope;
        assert_eq!(
            (loaded.sender, loaded.recipients),
            (b"a@b".to_vec(), vec![b"c@d".to_vec()])
        );
        // A process that only attached (a `nullq qmqpd`) still writes in tmp/ and renames:
        // its files are whole before they are in queue/, whoever cleans up meanwhile.
        let attached = Spool::attach(&root).expect("attach");
        let other = attached
            .store(body.clone(), envelope())
            .wait()
            .expect("store");
        assert_eq!(mode(&attached.queue_path(&other)), 0o600);
        assert_eq!(count(&root.join("tmp")), 0);
        assert_eq!(spool.list().expect("list").len(), 2);
    }

    /// What a committer stopped mid-write leaves (a crash, `kill -9`): `queue/ID` still marked
    /// as being written, torn or even whole. It was never acknowledged: no reader takes it, and
    /// the next open deletes it (and nothing else).
    #[test]
    fn a_queue_file_left_being_written_is_never_read_and_is_deleted_at_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("spool");
        let (spool, _) = Spool::open(&root).expect("open");
        let kept = spool
            .store(b"kept".to_vec(), envelope())
            .wait()
            .expect("store");
        let whole = spool
            .store(b"whole".to_vec(), envelope())
            .wait()
            .expect("store");
        drop(spool);
        let mark = |path: &Path| {
            std::fs::set_permissions(
                path,
                std::fs::Permissions::from_mode(0o600 | crate::writer::BEING_WRITTEN),
            )
            .expect("chmod")
        };
        // One whole but still marked (stopped between its write and its mode), one torn.
        let whole_path = root.join("queue").join(whole.to_string());
        mark(&whole_path);
        let torn = QueueId::generate();
        let torn_path = root.join("queue").join(torn.to_string());
        std::fs::write(&torn_path, &crate::format::HEADER[..5]).expect("plant");
        mark(&torn_path);

        let attached = Spool::attach(&root).expect("attach");
        for id in [whole, torn] {
            let e = attached.load(&id).err();
            assert!(matches!(&e, Some(e) if e.is_not_found()), "{id}: {e:?}");
            let e = attached.message(&id).err();
            assert!(matches!(&e, Some(e) if e.is_not_found()), "{id}: {e:?}");
        }
        drop(attached);

        let (spool, report) = Spool::open(&root).expect("open");
        let mut removed = report.unfinished_removed.clone();
        removed.sort();
        let mut expected = vec![whole_path, torn_path];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
        assert!(
            report
                .to_string()
                .contains("removed 2 unfinished files from queue/"),
            "{report}"
        );
        assert_eq!(spool.list().expect("list"), vec![kept]);
        assert_eq!(count(&root.join("corrupt")), 0);
    }
}
