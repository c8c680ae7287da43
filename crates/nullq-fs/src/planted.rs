//! Opening a file someone else may have planted: never through a symlink, never blocking on a
//! FIFO, and only a regular file of the expected owner.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

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

/// How an entry of this type is named in messages.
pub(crate) fn describe(kind: FileType) -> &'static str {
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
