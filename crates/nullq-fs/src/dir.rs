//! Directories others may write: opened without following a symlink, fsynced, and their
//! creation lock (see the crate docs), under which a new file is created and locked.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, CWD};

use crate::error::{Error, Step};

/// Open `dir` as a directory (for `create_in` and its relatives), never through a symlink.
pub fn open_dir(dir: &Path) -> Result<OwnedFd, Error> {
    rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new(Step::OpenDir, dir, e))
}

/// `fsync` the directory `dir`, so renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    let fd = open_dir(dir)?;
    rustix::fs::fsync(&fd).map_err(|e| Error::new(Step::SyncDir, dir, e))
}

/// How long a writer waits for a clean-up's scan of the directory to end (a clean-up for
/// writers in their create step) before giving up: either takes milliseconds, so only a
/// stopped or stuck process reaches this.
pub(crate) const DIR_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The creation lock of directory `dirfd` (see the crate docs), shared for a writer and
/// exclusive for a clean-up, held until the returned descriptor is dropped. It is taken on a
/// descriptor of its own: a `flock` belongs to the open file description, and two threads
/// sharing one would release each other's lock.
pub(crate) fn lock_dir(dirfd: &OwnedFd, dir: &Path, exclusive: bool) -> Result<OwnedFd, Error> {
    let own = rustix::fs::openat(
        dirfd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new(Step::OpenDir, dir, e))?;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    // Polled rather than blocking, so that a process that stopped while holding it delays
    // us by DIR_LOCK_WAIT instead of forever.
    let deadline = Instant::now() + DIR_LOCK_WAIT;
    loop {
        match rustix::fs::flock(&own, op) {
            Ok(()) => return Ok(own),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let why = io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "its creation lock is held by another process for over {}s",
                        DIR_LOCK_WAIT.as_secs()
                    ),
                );
                return Err(Error::new(Step::Lock, dir, why));
            }
            Err(e) => return Err(Error::new(Step::Lock, dir, e)),
        }
    }
}

/// `openat(O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW)`: a new file, never a planted name.
pub(crate) fn create_exclusive(
    dirfd: &OwnedFd,
    path: &Path,
    name: &str,
    mode: Mode,
) -> Result<OwnedFd, Error> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dirfd, name, flags, mode).map_err(|e| {
        // EEXIST here means someone planted the name (or took it) before our open.
        let step = if e == rustix::io::Errno::EXIST {
            Step::Planted
        } else {
            Step::Create
        };
        Error::new(step, path, e)
    })
}

/// Create `dir/name` (the directory open as `dirfd`) with `O_CREAT|O_EXCL|O_NOFOLLOW` and
/// `mode` (less the umask), unlocked: for a directory that no clean-up of another process can
/// scan while the file is there (the caller holds what keeps clean-ups out).
pub fn create_new(dirfd: &OwnedFd, dir: &Path, name: &str, mode: u32) -> Result<File, Error> {
    let path = dir.join(name);
    let fd = create_exclusive(dirfd, &path, name, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(File::from(fd))
}

/// Create `dir/name` (the directory open as `dirfd`) with `O_CREAT|O_EXCL|O_NOFOLLOW` and
/// `mode` (less the umask), holding an exclusive `flock` on it before any clean-up can see it
/// (the directory's creation lock is held shared across the open and the `flock`). The file
/// stays locked while the returned descriptor, or a clone of it, is open: a clean-up of `dir`
/// (`Cleaning::remove_if_unlocked`) leaves it alone until then.
///
/// Without the creation lock (a `tmp/` this process may write and search but not read, as a
/// drop-box Maildir's; or a lock someone else holds past the wait) the file is still created
/// and locked: the only risk is a clean-up running in the instant between the two, which
/// removes the new file, and then the writer's rename fails and it tries again later. Nothing
/// written is lost that way, and a reader of `tmp/` cannot stop deliveries by holding its lock.
pub fn create_locked(dirfd: &OwnedFd, dir: &Path, name: &str, mode: u32) -> Result<File, Error> {
    let path = dir.join(name);
    let creating = lock_dir(dirfd, dir, false).ok();
    let fd = create_exclusive(dirfd, &path, name, Mode::from_raw_mode(mode & 0o7777))?;
    // New and ours alone: only a process that opened it meanwhile, outside the protocol,
    // could hold its lock.
    if let Err(e) = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        drop(fd);
        let _ = rustix::fs::unlinkat(dirfd, name, AtFlags::empty());
        return Err(Error::new(Step::Lock, &path, e));
    }
    drop(creating);
    Ok(File::from(fd))
}
