//! The few system calls the spool's promises rest on, each returning a [`SpoolError`] that names
//! its step and path. The careful ones (directory fsync, checked close, no-replace rename) are
//! `nullq-fs`'s, the project's one copy; this module maps their errors to the spool's steps.
//! Everything else is `std::fs`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Result, SpoolError, Step};

/// Creates `path` (mode 0700) unless it exists; true if it was created.
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(SpoolError::io(Step::Mkdir, path, e)),
    }
}

/// Opens a directory so that it can be fsynced.
pub(crate) fn open_dir(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| SpoolError::io(Step::Open, path, e))
}

/// `fsync` of a directory: makes the creations, renames and unlinks in it durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    nullq_fs::sync_dir(path).map_err(from_fs)
}

/// A `nullq-fs` error as the spool's: the same path and cause, the step in the spool's words.
pub(crate) fn from_fs(e: nullq_fs::Error) -> SpoolError {
    use nullq_fs::Step as F;
    let step = match e.step {
        F::OpenDir => Step::Open,
        F::Write => Step::Write,
        F::Sync => Step::Fdatasync,
        F::Close => Step::Close,
        F::Rename => Step::Rename,
        F::SyncDir => Step::DirFsync,
        F::Lock => Step::Lock,
        F::Remove => Step::Unlink,
        _ => Step::Create,
    };
    SpoolError::io(step, e.path, e.source)
}

/// `fsync` then `close`, checking both: the inode's every change with the data (a message file,
/// whose mode says it is whole; a delivery's file, whose mode was set on its descriptor; a
/// directory). On error the descriptor is gone and the caller must treat the file's content as
/// lost: after a failed fsync Linux may have dropped the dirty pages, so a retry would
/// "succeed" on nothing.
pub(crate) fn fsync_and_close(file: File, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| SpoolError::io(Step::Fsync, path, e))?;
    nullq_fs::close(file).map_err(|e| SpoolError::io(Step::Close, path, e))
}

/// `syncfs(2)` of the filesystem holding `fd`: writes back every dirty file of it and commits
/// its journal. Reports (once per descriptor) any writeback error on that filesystem since the
/// last call (Linux 5.8 and later).
pub(crate) fn syncfs(fd: &File) -> io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `fd` keeps open for the call.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts writing `file`'s dirty pages back without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): a hint, so errors are ignored; the `fdatasync` that follows
/// reports them.
pub(crate) fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only acts on the descriptor, which `file` keeps open.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Renames `from` to `to`, failing with `EEXIST` rather than replacing `to` (no directory
/// fsync: the committer makes a batch of renames durable at once).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    nullq_fs::rename_noreplace(from, to).map_err(from_fs)
}

/// Unlinks `path`; true if it existed.
pub(crate) fn unlink(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpoolError::io(Step::Unlink, path, e)),
    }
}

/// Opens (creating) `path` and takes an exclusive `flock` on it, waiting at most two seconds.
/// The lock lasts as long as the returned file is open.
pub(crate) fn lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| SpoolError::io(Step::Lock, path, e))?;
    // A lock held only for a moment is waited for, briefly: the previous server still exiting,
    // or a process forked from ours that has not yet reached exec (the descriptor is O_CLOEXEC,
    // but until exec the child shares the lock).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let e = loop {
        // SAFETY: flock only acts on the descriptor, which `file` keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || std::time::Instant::now() >= deadline {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let e = if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        io::Error::new(
            e.kind(),
            "the spool is in use by another process (or another Spool in this one)",
        )
    } else {
        e
    };
    Err(SpoolError::io(Step::Lock, path, e))
}
