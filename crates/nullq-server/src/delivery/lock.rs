//! One message at a time: the runner and the `nullq queue` tools take an exclusive `flock` on
//! `queue/ID` before they change a message's state, so a `queue delete` never races a delivery
//! and two writers never replace `state/ID` from under each other. The lock goes with the
//! descriptor: a process that dies releases it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nullq_spool::QueueId;

/// An exclusive lock on one queued message, held until dropped.
#[derive(Debug)]
pub struct MessageLock {
    file: File,
    len: u64,
}

/// Why a lock was not had.
#[derive(Debug)]
pub enum LockError {
    /// The message is not (or no longer) in the queue.
    Gone,
    /// Another process or task holds it (a delivery in progress).
    Busy,
    /// What is at `queue/ID` is not a message file but a symlink (never followed) or a socket,
    /// which cannot be opened to be locked; other kinds of file are found out by the load.
    NotRegular(&'static str),
    /// Anything else.
    Io(io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Gone => f.write_str("no such message in the queue"),
            LockError::Busy => f.write_str("the message is being delivered right now"),
            LockError::NotRegular(kind) => write!(f, "not a regular file but {kind}"),
            LockError::Io(e) => write!(f, "cannot lock the message: {e}"),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io(e) => Some(e),
            LockError::Gone | LockError::Busy | LockError::NotRegular(_) => None,
        }
    }
}

impl MessageLock {
    /// Try to lock message `id` of the spool at `root`, without waiting.
    pub fn try_lock(root: &Path, id: &QueueId) -> Result<MessageLock, LockError> {
        let path = root.join("queue").join(id.to_string());
        // Without waiting and without following a symlink: a FIFO in queue/ would block an
        // open for reading until someone writes to it (a loader thread gone for good). What is
        // not a regular file is refused by the load that follows (nullq-spool), as corrupt.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LockError::Gone),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(LockError::NotRegular("a symlink"))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Err(LockError::NotRegular("a socket"))
            }
            Err(e) => return Err(LockError::Io(e)),
        };
        let meta = file.metadata().map_err(LockError::Io)?;
        // Still being written by the committer (born in queue/, not acknowledged yet): not in
        // the queue, for a delivery as for `nullq queue delete`, which would otherwise unlink a
        // message its client is about to be told `K` for.
        if nullq_spool::is_being_written(&meta) {
            return Err(LockError::Gone);
        }
        // SAFETY: flock on a descriptor we own and keep open for the call's duration.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Busy
            } else {
                LockError::Io(e)
            });
        }
        // Locked a file that was unlinked meanwhile (a `queue delete` that just finished)?
        if !path.exists() {
            return Err(LockError::Gone);
        }
        Ok(MessageLock {
            file,
            len: meta.len(),
        })
    }

    /// The locked queue file, open for reading: an attempt loads the message through it
    /// ([`nullq_spool::Spool::load_open`]) instead of opening the file again.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The queue file's length when it was locked.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Lock, waiting up to `limit` for a delivery in progress to finish.
    pub fn lock_within(
        root: &Path,
        id: &QueueId,
        limit: std::time::Duration,
    ) -> Result<MessageLock, LockError> {
        let start = std::time::Instant::now();
        loop {
            match MessageLock::try_lock(root, id) {
                Err(LockError::Busy) if start.elapsed() < limit => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
}
