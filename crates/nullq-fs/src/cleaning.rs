//! The clean-up of a `tmp/` directory: a temporary is removed only when its lock can be taken.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

use crate::dir::{lock_dir, open_dir};
use crate::error::{Error, Step};
use crate::planted::describe;

/// A clean-up of one `tmp/` directory in progress: while it lives, no writer is between
/// creating a temporary and locking it (it holds the directory's creation lock
/// exclusively), so a temporary it finds unlocked is abandoned.
#[derive(Debug)]
pub struct Cleaning {
    dirfd: OwnedFd,
    dir: PathBuf,
    _creations: OwnedFd,
}

/// What [`Cleaning::remove_if_unlocked`] did with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Nobody held its lock: removed.
    Removed,
    /// Its writer holds its lock: left alone.
    InUse,
    /// Gone meanwhile (renamed to its final name, removed), or replaced by another file.
    Gone,
    /// Not a regular file (it says what it is): never opened, left to the caller.
    NotRegular(&'static str),
}

impl Cleaning {
    /// Start cleaning `dir`: open it (never through a symlink) and take its creation lock
    /// exclusively, waiting a few seconds at most for writers in their create step.
    pub fn start(dir: &Path) -> Result<Cleaning, Error> {
        let dirfd = open_dir(dir)?;
        let creations = lock_dir(&dirfd, dir, true)?;
        Ok(Cleaning {
            dirfd,
            dir: dir.to_owned(),
            _creations: creations,
        })
    }

    /// Remove the regular file `name` if its lock can be taken at once (its writer is gone, or
    /// never locked it); leave it if the lock is held. Never follows a symlink and never opens
    /// anything but a regular file (a FIFO or a device is reported, not touched). The removal
    /// happens while holding the file's lock, and only if the name still is the file locked.
    pub fn remove_if_unlocked(&self, name: &std::ffi::OsStr) -> Result<Leftover, Error> {
        let path = self.dir.join(name);
        let before = match rustix::fs::statat(&self.dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(Leftover::Gone),
            Err(e) => return Err(Error::new(Step::Lock, &path, e)),
        };
        let kind = FileType::from_raw_mode(before.st_mode);
        if kind != FileType::RegularFile {
            return Ok(Leftover::NotRegular(describe(kind)));
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.dirfd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Renamed away, or replaced by a symlink, since the stat.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(Leftover::Gone),
            Err(e) => return Err(Error::new(Step::Lock, &path, e)),
        };
        let same = |st: &rustix::fs::Stat| st.st_dev == before.st_dev && st.st_ino == before.st_ino;
        let opened = rustix::fs::fstat(&fd).map_err(|e| Error::new(Step::Lock, &path, e))?;
        if !same(&opened) {
            return Ok(Leftover::Gone);
        }
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(Leftover::InUse),
            Err(e) => return Err(Error::new(Step::Lock, &path, e)),
        }
        // Still the file we locked? A writer renames its temporary only while holding the lock
        // we now hold, so a change here is a name reused by someone else: leave it.
        match rustix::fs::statat(&self.dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if same(&st) => {}
            Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(Leftover::Gone),
            Err(e) => return Err(Error::new(Step::Remove, &path, e)),
        }
        match rustix::fs::unlinkat(&self.dirfd, name, AtFlags::empty()) {
            Ok(()) => Ok(Leftover::Removed),
            Err(rustix::io::Errno::NOENT) => Ok(Leftover::Gone),
            Err(e) => Err(Error::new(Step::Remove, &path, e)),
        }
    }
}
