//! The durable write (the crate docs list its steps): create a temporary, fill, fsync, close,
//! rename without replacing, fsync the directory; and the moves and renames built from it.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, RenameFlags, CWD};
use rustix::process::{Gid, Uid};

use crate::dir::{create_exclusive, create_locked, open_dir};
use crate::error::{Error, Step};
use crate::planted::describe;

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
    /// ([`Cleaning::remove_if_unlocked`](crate::Cleaning::remove_if_unlocked)) leaves it alone. Default: no.
    pub lock: bool,
    /// Whether [`publish_to`] fsyncs the final directory after the rename. Default: yes. `false`
    /// is for a caller that makes many renames in that directory durable with one fsync of its
    /// own (a group commit): the file is then at its final name but its name is not yet
    /// durable when `publish_to` returns.
    pub sync_dir: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: 0o600,
            owner: None,
            replace: false,
            lock: false,
            sync_dir: true,
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
            if !options.sync_dir {
                return Ok(());
            }
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
pub(crate) fn rename_between<F, T, N>(
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
