//! `nullq-fs`: the one way nullq writes a file that must survive a power cut into a directory
//! that other users may be able to write (a CommuniGate Pro Submitted folder, a Maildir, the
//! client's fallback queue), and the one way it opens a file that someone else may have
//! planted there. Every other crate on the data path (client → QMQP → spool → delivery) calls
//! these instead of writing its own copy.
//!
//! [`publish`] is the durable write, step by step:
//! 1. a stale temporary of ours under the same name (a regular file owned by us, left by a
//!    killed writer) is removed; anything else there (a symlink, a FIFO, someone else's file)
//!    is refused, never followed;
//! 2. the temporary is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so no planted name is ever
//!    opened, and its mode (and owner, if asked) is set on the descriptor, not on a path;
//! 3. the caller fills it; then `fsync`, then `close`, each checked (after a failed `fsync` the
//!    file is deleted, never fsynced again and believed);
//! 4. it is renamed to its final name, without replacing one that exists unless asked
//!    (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks it);
//! 5. the directory is fsynced, so the rename itself is durable.
//!
//! Every error names its step and path ([`Error`]). On any error the temporary is removed.
//! [`publish_to`] is the same with the temporary in another directory (`tmp/` → `new/`), and
//! [`move_to`] moves a file between such directories without ever replacing a name.
//!
//! [`open_planted`] opens a file for reading with `O_NOFOLLOW|O_NONBLOCK` (a symlink or a FIFO
//! can neither redirect nor block the reader), then checks with `fstat` that it is a regular
//! file owned by the expected user.
//!
//! [`host`] holds the one fact about the machine that client and server share (its host name).
//!
//! # Temporaries judged by their lock
//! A file being written in a `tmp/` directory is alive exactly as long as its writer holds an
//! exclusive `flock` on it ([`Options::lock`], [`create_locked`]); a clean-up removes only a
//! temporary whose lock it can take ([`Cleaning::remove_if_unlocked`]). Not the pid in its
//! name: pids repeat after a reboot and differ between pid namespaces, a lock dies with its
//! writer. `flock` rather than an OFD lock (`F_OFD_SETLK`): both belong to the open file
//! description, so both survive the writer's own threads and die with its last descriptor;
//! `flock` needs no byte range and is what `flock(1)` takes, so an operator (and a test) can
//! hold or probe one from the shell.
//!
//! The one gap such a scheme has is between `open(O_CREAT|O_EXCL)` and `flock`: a clean-up
//! looking at that moment would find a new, unlocked file. It is closed with a second lock, on
//! the directory itself: a writer holds it shared from before the `open` until after its
//! `flock`, a clean-up holds it exclusively for its whole scan. Every temporary a clean-up sees
//! is therefore either locked by a live writer or abandoned. (Writers that do not know this
//! protocol, e.g. another MDA in a shared Maildir, are not judged by lock at all.)

#![deny(missing_docs)]

pub mod host;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::process::{Gid, Uid};

/// The step of a durable write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening the directory.
    OpenDir,
    /// A name that had to be ours or absent holds something else (a symlink, a FIFO, a file of
    /// another user).
    Planted,
    /// Removing our own stale temporary.
    RemoveStale,
    /// Creating the temporary file.
    Create,
    /// Setting its mode or owner.
    Permissions,
    /// Writing it (the caller's fill).
    Write,
    /// `fsync` of the file.
    Sync,
    /// `close` of the file.
    Close,
    /// Renaming it to its final name (`EEXIST`: the final name is taken).
    Rename,
    /// `fsync` of the directory.
    SyncDir,
    /// Taking a lock: the directory's creation lock, or a temporary's own.
    Lock,
    /// Removing a leftover temporary (after taking its lock).
    Remove,
}

impl Step {
    fn word(self) -> &'static str {
        match self {
            Step::OpenDir => "open directory",
            Step::Planted => "refuse planted",
            Step::RemoveStale => "remove stale",
            Step::Create => "create",
            Step::Permissions => "set permissions of",
            Step::Write => "write",
            Step::Sync => "fsync",
            Step::Close => "close",
            Step::Rename => "rename to",
            Step::SyncDir => "fsync directory",
            Step::Lock => "lock",
            Step::Remove => "remove leftover",
        }
    }
}

/// A failed file operation: which step, on which path, and the system's error.
#[derive(Debug)]
pub struct Error {
    /// The step that failed.
    pub step: Step,
    /// The path it acted on.
    pub path: PathBuf,
    /// The system's error.
    pub source: io::Error,
}

impl Error {
    fn new(step: Step, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
        Error {
            step,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The system's error kind (for `ENOSPC`-like decisions: [`io::Error::raw_os_error`] on
    /// [`Error::source`] gives the errno).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.step.word(),
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// How [`publish`] creates and places the file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The file's mode, set on the descriptor (the umask does not apply). Default 0600.
    pub mode: u32,
    /// Owner and group to give the file (`fchown`), when not the writer's own.
    pub owner: Option<(u32, u32)>,
    /// Whether an existing file under the final name may be replaced. Default: no, the rename
    /// fails with `EEXIST` instead.
    pub replace: bool,
    /// Whether the temporary is created already locked ([`create_locked`]) and kept locked
    /// until it has its final name, so that a clean-up of its directory
    /// ([`Cleaning::remove_if_unlocked`]) leaves it alone. Default: no.
    pub lock: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: 0o600,
            owner: None,
            replace: false,
            lock: false,
        }
    }
}

/// Write a file durably into `dir`: create `dir/tmp_name` (never through a planted name), let
/// `fill` write it, fsync, close, rename it to `dir/final_name`, fsync `dir`. See the crate
/// docs for each step. Both names are plain file names in `dir` (no `/`).
pub fn publish(
    dir: &Path,
    tmp_name: &str,
    final_name: &str,
    options: &Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    publish_to(dir, tmp_name, dir, final_name, options, fill)
}

/// [`publish`] with the temporary in one directory and the final name in another on the same
/// filesystem (qmail's and Maildir's `tmp/` → `new/`): `final_dir` is fsynced after the
/// rename. On an error with [`Step::SyncDir`] the file is already at its final name (the
/// caller decides whether to take it back); on any other error nothing is left behind.
pub fn publish_to(
    tmp_dir: &Path,
    tmp_name: &str,
    final_dir: &Path,
    final_name: &str,
    options: &Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let tmp_fd = open_dir(tmp_dir)?;
    let final_fd = if final_dir == tmp_dir {
        None
    } else {
        Some(open_dir(final_dir)?)
    };
    let final_ref = final_fd.as_ref().unwrap_or(&tmp_fd);
    let tmp = tmp_dir.join(tmp_name);
    let file = create_in(&tmp_fd, tmp_dir, tmp_name, options)?;
    // The lock belongs to the open file description, so a second descriptor on it keeps the
    // temporary locked after the checked close, until the rename has taken it out of tmp/.
    let held = if options.lock {
        match file.try_clone() {
            Ok(held) => Some(held),
            Err(e) => {
                drop(file);
                let _ = rustix::fs::unlinkat(&tmp_fd, tmp_name, AtFlags::empty());
                return Err(Error::new(Step::Lock, &tmp, e));
            }
        }
    } else {
        None
    };
    let result = fill_and_close(file, &tmp, fill)
        .and_then(|()| {
            rename_between(
                (&tmp_fd, tmp_dir, tmp_name),
                (final_ref, final_dir, final_name),
                options.replace,
            )
        })
        .and_then(|()| {
            drop(held);
            rustix::fs::fsync(final_ref).map_err(|e| Error::new(Step::SyncDir, final_dir, e))
        });
    if let Err(e) = &result {
        // The rename may have happened before the directory fsync failed: then the file is in
        // place (a duplicate is acceptable, a loss is not) and the temporary is already gone.
        if e.step != Step::SyncDir {
            let _ = rustix::fs::unlinkat(&tmp_fd, tmp_name, AtFlags::empty());
        }
    }
    result
}

/// Move `from_dir/from` to `to_dir/to` (same filesystem) without replacing anything already
/// called `to` (`EEXIST` then, step [`Step::Rename`]), never following a symlink (a rename
/// acts on names), then fsync both directories. For moving a file between queue directories
/// that other users can write.
pub fn move_to(from_dir: &Path, from: &str, to_dir: &Path, to: &str) -> Result<(), Error> {
    let from_fd = open_dir(from_dir)?;
    let to_fd = open_dir(to_dir)?;
    rename_between((&from_fd, from_dir, from), (&to_fd, to_dir, to), false)?;
    rustix::fs::fsync(&to_fd).map_err(|e| Error::new(Step::SyncDir, to_dir, e))?;
    rustix::fs::fsync(&from_fd).map_err(|e| Error::new(Step::SyncDir, from_dir, e))
}

/// Create `name` in the directory `dirfd` (path `dir`, for messages) for writing, with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, after removing a stale regular file of ours under that name
/// (with [`Options::lock`]: created locked instead, and nothing is removed). Mode and owner are
/// set on the descriptor. For callers that fill and place the file
/// themselves; [`publish`] is this plus the rest.
pub fn create_in(
    dirfd: &OwnedFd,
    dir: &Path,
    name: &str,
    options: &Options,
) -> Result<File, Error> {
    let path = dir.join(name);
    let mode = Mode::from_raw_mode(options.mode & 0o7777);
    let fd = if options.lock {
        // A locking writer's names are unique: a file in the way may be another writer's, in
        // use, and only a clean-up that takes its lock may remove it.
        create_locked(dirfd, dir, name, options.mode)?.into()
    } else {
        remove_own_stale(dirfd, dir, name)?;
        create_exclusive(dirfd, &path, name, mode)?
    };
    let set = || -> rustix::io::Result<()> {
        rustix::fs::fchmod(&fd, mode)?;
        if let Some((uid, gid)) = options.owner {
            rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    };
    if let Err(e) = set() {
        let _ = rustix::fs::unlinkat(dirfd, name, AtFlags::empty());
        return Err(Error::new(Step::Permissions, &path, e));
    }
    Ok(File::from(fd))
}

/// `openat(O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW)`: a new file, never a planted name.
fn create_exclusive(
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

/// How long a writer waits for a clean-up's scan of the directory to end (a clean-up for
/// writers in their create step) before giving up: either takes milliseconds, so only a
/// stopped or stuck process reaches this.
const DIR_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The creation lock of directory `dirfd` (see the crate docs), shared for a writer and
/// exclusive for a clean-up, held until the returned descriptor is dropped. It is taken on a
/// descriptor of its own: a `flock` belongs to the open file description, and two threads
/// sharing one would release each other's lock.
fn lock_dir(dirfd: &OwnedFd, dir: &Path, exclusive: bool) -> Result<OwnedFd, Error> {
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

/// Create `dir/name` (the directory open as `dirfd`) with `O_CREAT|O_EXCL|O_NOFOLLOW` and
/// `mode` (less the umask), holding an exclusive `flock` on it before any clean-up can see it
/// (the directory's creation lock is held shared across the open and the `flock`). The file
/// stays locked while the returned descriptor, or a clone of it, is open: a clean-up of `dir`
/// ([`Cleaning::remove_if_unlocked`]) leaves it alone until then.
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

/// Open `dir` as a directory (for [`create_in`] and its relatives), never through a symlink.
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

/// Remove `dir/name` if it is a regular file owned by us (a temporary a killed writer of ours
/// left); refuse anything else that holds the name; an absent name is fine.
fn remove_own_stale(dirfd: &OwnedFd, dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::new(Step::Planted, &path, e)),
        Ok(st) => {
            let ours = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_uid == rustix::process::geteuid().as_raw();
            if !ours {
                return Err(Error::new(
                    Step::Planted,
                    &path,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} owned by uid {} is in the way",
                            describe(FileType::from_raw_mode(st.st_mode)),
                            st.st_uid
                        ),
                    ),
                ));
            }
            rustix::fs::unlinkat(dirfd, name, AtFlags::empty())
                .map_err(|e| Error::new(Step::RemoveStale, &path, e))
        }
    }
}

fn fill_and_close(
    mut file: File,
    tmp: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    fill(&mut file).map_err(|e| Error::new(Step::Write, tmp, e))?;
    rustix::fs::fsync(&file).map_err(|e| Error::new(Step::Sync, tmp, e))?;
    close(file).map_err(|e| Error::new(Step::Close, tmp, e))
}

/// Close `file` and report the error that a plain drop would ignore.
pub fn close(file: File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so we own it and nothing else closes it; close(2)
    // is not retried (Linux releases the descriptor even when it reports an error).
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Rename `from` (directory fd, its path for messages, name) to `to`, replacing an existing
/// `to` only when asked.
fn rename_between<F, T, N>(
    from: (F, &Path, N),
    to: (T, &Path, N),
    replace: bool,
) -> Result<(), Error>
where
    F: std::os::fd::AsFd,
    T: std::os::fd::AsFd,
    N: rustix::path::Arg + AsRef<Path> + Copy,
{
    let (from_fd, from_dir, from_name) = from;
    let (to_fd, to_dir, to_name) = to;
    let target = to_dir.join(to_name);
    if replace {
        return rustix::fs::renameat(&from_fd, from_name, &to_fd, to_name)
            .map_err(|e| Error::new(Step::Rename, &target, e));
    }
    match rustix::fs::renameat_with(&from_fd, from_name, &to_fd, to_name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: link(2) fails if the name exists, as qmail
        // relies on.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::linkat(&from_fd, from_name, &to_fd, to_name, AtFlags::empty())
                .map_err(|e| Error::new(Step::Rename, &target, e))?;
            rustix::fs::unlinkat(&from_fd, from_name, AtFlags::empty())
                .map_err(|e| Error::new(Step::Rename, from_dir.join(from_name), e))
        }
        Err(e) => Err(Error::new(Step::Rename, &target, e)),
    }
}

/// Rename the path `from` to `to` without replacing anything called `to` (`EEXIST` then, step
/// [`Step::Rename`]), and without fsyncing a directory: for a caller that makes many renames
/// durable with one directory fsync of its own (the spool's group commit).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<(), Error> {
    let none = Path::new("");
    rename_between((CWD, none, from), (CWD, none, to), false)
}

/// Why [`open_planted`] did not open a file.
#[derive(Debug)]
pub enum Refused {
    /// The name is a symlink (never followed).
    Symlink,
    /// Not a regular file: a FIFO, a device, a directory, a socket.
    NotRegular(&'static str),
    /// A regular file, but owned by another user.
    Owner {
        /// Its owner.
        uid: u32,
    },
    /// The system's error (`ENOENT` included: it went away).
    Io(io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Symlink => f.write_str("a symlink (not followed)"),
            Refused::NotRegular(kind) => write!(f, "not a regular file but {kind}"),
            Refused::Owner { uid } => write!(f, "owned by uid {uid}, not by the expected user"),
            Refused::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Open `path` for reading, never following a symlink and never blocking on a FIFO, and only
/// if it is a regular file owned by `owner` (any owner when `None`). The file is returned in
/// blocking mode.
pub fn open_planted(path: &Path, owner: Option<u32>) -> Result<File, Refused> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(Refused::Symlink),
        Err(e) => return Err(Refused::Io(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Refused::Io(e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(Refused::NotRegular(describe(kind)));
    }
    if let Some(want) = owner {
        if st.st_uid != want {
            return Err(Refused::Owner { uid: st.st_uid });
        }
    }
    let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| Refused::Io(e.into()))?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(|e| Refused::Io(e.into()))?;
    Ok(File::from(fd))
}

/// What kind of entry `path` is, without following a symlink (`None` if it does not exist).
pub fn entry_kind(path: &Path) -> io::Result<Option<&'static str>> {
    match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(describe(FileType::from_raw_mode(st.st_mode)))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "an entry of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn publishes_a_whole_file_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            mode: 0o644,
            ..Options::default()
        };
        publish(d.path(), "a.tmp", "a.sub", &opts, |f| f.write_all(b"hello")).unwrap();
        assert_eq!(std::fs::read(d.path().join("a.sub")).unwrap(), b"hello");
        assert!(!d.path().join("a.tmp").exists());
        let mode = std::fs::metadata(d.path().join("a.sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("a.tmp")).unwrap();
        let e = publish(d.path(), "a.tmp", "a.sub", &Options::default(), |f| {
            f.write_all(b"evil")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Planted, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert!(!d.path().join("a.sub").exists());
    }

    #[test]
    fn an_existing_final_name_is_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("a.sub")).unwrap();
        let e = publish(d.path(), "a.tmp", "a.sub", &Options::default(), |f| {
            f.write_all(b"x")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!d.path().join("a.tmp").exists(), "temporary removed");
    }

    #[test]
    fn publish_to_moves_between_directories_and_refuses_a_planted_final_name() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, new) = (d.path().join("tmp"), d.path().join("new"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&new).unwrap();
        publish_to(&tmp, "m", &new, "m", &Options::default(), |f| {
            f.write_all(b"mail")
        })
        .unwrap();
        assert_eq!(std::fs::read(new.join("m")).unwrap(), b"mail");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, new.join("n")).unwrap();
        let e = publish_to(&tmp, "n", &new, "n", &Options::default(), |f| {
            f.write_all(b"evil")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "temporary removed"
        );
    }

    #[test]
    fn a_stale_temporary_of_ours_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.tmp"), b"half").unwrap();
        publish(d.path(), "a.tmp", "a", &Options::default(), |f| {
            f.write_all(b"whole")
        })
        .unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"whole");
    }

    #[test]
    fn a_failed_fill_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let e = publish(d.path(), "a.tmp", "a", &Options::default(), |_| {
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Write);
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn move_to_never_replaces_a_planted_name() {
        let d = tempfile::tempdir().unwrap();
        let (new, failed) = (d.path().join("new"), d.path().join("failed"));
        std::fs::create_dir(&new).unwrap();
        std::fs::create_dir(&failed).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::write(new.join("a"), b"msg a").unwrap();
        std::fs::write(new.join("b"), b"msg b").unwrap();
        std::os::unix::fs::symlink(&victim, failed.join("b")).unwrap();
        move_to(&new, "a", &failed, "a").unwrap();
        assert_eq!(std::fs::read(failed.join("a")).unwrap(), b"msg a");
        assert!(!new.join("a").exists());
        let e = move_to(&new, "b", &failed, "b").unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(std::fs::symlink_metadata(failed.join("b"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(new.join("b")).unwrap(), b"msg b");
    }

    #[test]
    fn a_clean_up_removes_unlocked_temporaries_and_keeps_locked_ones() {
        let d = tempfile::tempdir().unwrap();
        let dirfd = open_dir(d.path()).unwrap();
        let writing = create_locked(&dirfd, d.path(), "writing", 0o600).unwrap();
        // A file of a writer that is gone: nothing holds its lock.
        std::fs::write(d.path().join("abandoned"), b"half").unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep me").unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("link")).unwrap();

        let cleaning = Cleaning::start(d.path()).unwrap();
        let judge = |name: &str| cleaning.remove_if_unlocked(name.as_ref()).unwrap();
        assert_eq!(judge("writing"), Leftover::InUse);
        assert_eq!(judge("abandoned"), Leftover::Removed);
        assert_eq!(judge("link"), Leftover::NotRegular("a symlink"));
        assert_eq!(judge("none"), Leftover::Gone);
        drop(cleaning);
        assert!(d.path().join("writing").exists());
        assert!(!d.path().join("abandoned").exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");

        // The lock goes with the writer's descriptor.
        drop(writing);
        let cleaning = Cleaning::start(d.path()).unwrap();
        assert_eq!(
            cleaning.remove_if_unlocked("writing".as_ref()).unwrap(),
            Leftover::Removed
        );
    }

    #[test]
    fn a_held_creation_lock_delays_a_writer_but_does_not_stop_it() {
        // Someone who may read tmp/ holds its lock (as a clean-up would, but for ever): the
        // writer waits DIR_LOCK_WAIT, then creates and locks its file all the same.
        let d = tempfile::tempdir().unwrap();
        let dirfd = open_dir(d.path()).unwrap();
        let _held = Cleaning::start(d.path()).unwrap();
        let started = Instant::now();
        let file = create_locked(&dirfd, d.path(), "mine", 0o600).unwrap();
        assert!(started.elapsed() >= DIR_LOCK_WAIT);
        assert!(d.path().join("mine").exists());
        // And it is locked: another descriptor cannot take the lock.
        let other = std::fs::File::open(d.path().join("mine")).unwrap();
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(file);
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_ok());
    }

    #[test]
    fn a_locked_publish_holds_its_temporary_locked_and_releases_it_after() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, new) = (d.path().join("tmp"), d.path().join("new"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&new).unwrap();
        let opts = Options {
            lock: true,
            ..Options::default()
        };
        publish_to(&tmp, "m", &new, "m", &opts, |f| {
            // Anyone probing the lock now (a clean-up in another process) finds it held.
            let other = open_dir(&tmp).unwrap();
            let probe = rustix::fs::openat(&other, "m", OFlags::RDONLY, Mode::empty()).unwrap();
            assert_eq!(
                rustix::fs::flock(&probe, FlockOperation::NonBlockingLockExclusive),
                Err(rustix::io::Errno::WOULDBLOCK)
            );
            f.write_all(b"mail")
        })
        .unwrap();
        assert_eq!(std::fs::read(new.join("m")).unwrap(), b"mail");
        // The delivered file is not left locked.
        let done = std::fs::File::open(new.join("m")).unwrap();
        rustix::fs::flock(&done, FlockOperation::NonBlockingLockExclusive).unwrap();
    }

    #[test]
    fn open_planted_refuses_symlinks_fifos_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let me = rustix::process::geteuid().as_raw();
        let mut s = String::new();
        open_planted(&file, Some(me))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "data");
        let meta = std::fs::metadata(&file).unwrap();
        assert!(matches!(
            open_planted(&file, Some(meta.uid() + 1)),
            Err(Refused::Owner { .. })
        ));
        std::os::unix::fs::symlink(&file, d.path().join("l")).unwrap();
        assert!(matches!(
            open_planted(&d.path().join("l"), None),
            Err(Refused::Symlink)
        ));
        let fifo = d.path().join("p");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(
            open_planted(&fifo, None),
            Err(Refused::NotRegular("a FIFO"))
        ));
        assert_eq!(entry_kind(&fifo).unwrap(), Some("a FIFO"));
        assert_eq!(entry_kind(&d.path().join("none")).unwrap(), None);
    }
}
