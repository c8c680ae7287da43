//! The error of every step of a durable write: which step, on which path, the system's error.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
    pub(crate) fn new(step: Step, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
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
