//! The one error type of the crate.
//!
//! Every spool error is a temporary failure for whoever caused it (QMQP `Z`, qmail exit 71..81):
//! the message was not accepted, or the state change did not happen, and trying again later is
//! right. So the type does not sort errors into permanent and temporary; it says *where* it
//! happened (the step and the path, for the operator's log line) and whether the disk is full
//! ([`SpoolError::is_full`]), the one cause a server may want to report differently.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The step of a spool operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Taking a lock: the `flock` on `ROOT/lock` (another process holds the spool), or the
    /// creation lock of `tmp/` (held for a moment by receivers, for a scan by recovery).
    Lock,
    /// Creating a spool directory.
    Mkdir,
    /// Creating a file (`O_CREAT|O_EXCL`).
    Create,
    /// Writing to a file (including a short write).
    Write,
    /// `fdatasync` of a file.
    Fdatasync,
    /// `fsync` of a file or directory made durable with a batch for someone else (a delivery).
    Fsync,
    /// `close` of a file after writing it.
    Close,
    /// Renaming a file into place.
    Rename,
    /// `fsync` of a directory (or a commit refused because an earlier one failed).
    DirFsync,
    /// Opening a file or directory for reading.
    Open,
    /// Reading a file or listing a directory.
    Read,
    /// A file's content is not what the spool writes.
    Parse,
    /// Unlinking a file.
    Unlink,
    /// Setting a file's mode (a message file made whole, `writer.rs`).
    Chmod,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Lock => "lock",
            Step::Mkdir => "mkdir",
            Step::Create => "create",
            Step::Write => "write",
            Step::Fdatasync => "fdatasync",
            Step::Fsync => "fsync",
            Step::Close => "close",
            Step::Rename => "rename",
            Step::DirFsync => "directory fsync",
            Step::Open => "open",
            Step::Read => "read",
            Step::Parse => "parse",
            Step::Unlink => "unlink",
            Step::Chmod => "chmod",
        })
    }
}

/// A failed spool operation: which step, on which path, and why.
///
/// Display gives one log line, e.g.
/// `spool: fdatasync /var/nullq/tmp/000…: No space left on device (os error 28)`.
#[derive(Debug)]
pub struct SpoolError {
    step: Step,
    path: PathBuf,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Io(io::Error),
    /// The file is not in the format the spool writes.
    Invalid(String),
    /// The committer stopped after a failed directory fsync; the carried error is that one.
    Poisoned(io::Error),
}

impl SpoolError {
    pub(crate) fn io(step: Step, path: impl Into<PathBuf>, err: io::Error) -> Self {
        SpoolError {
            step,
            path: path.into(),
            cause: Cause::Io(err),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        SpoolError {
            step: Step::Parse,
            path: path.into(),
            cause: Cause::Invalid(why.into()),
        }
    }

    pub(crate) fn poisoned(path: impl Into<PathBuf>, first: &io::Error) -> Self {
        SpoolError {
            step: Step::DirFsync,
            path: path.into(),
            cause: Cause::Poisoned(copy_io(first)),
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The file or directory the step was working on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The operating system's error, if the cause was one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.cause {
            Cause::Io(e) | Cause::Poisoned(e) => Some(e),
            Cause::Invalid(_) => None,
        }
    }

    /// The disk (or the user's quota, or the file size limit) is full: ENOSPC, EDQUOT or EFBIG.
    pub fn is_full(&self) -> bool {
        let code = self.io_error().and_then(io::Error::raw_os_error);
        matches!(
            code,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        )
    }

    /// The file or directory does not exist (e.g. [`crate::Spool::load`] of a removed id).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.cause, Cause::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// The file's content is not what the spool writes (torn, a bad checksum, a bad envelope or
    /// state): trying again cannot help, the file belongs in `corrupt/`
    /// ([`crate::Spool::set_aside`]). Every other error is the system's (EIO, EMFILE, EACCES),
    /// and may pass.
    pub fn is_corrupt(&self) -> bool {
        matches!(self.cause, Cause::Invalid(_))
    }

    /// What is wrong with the file's content, for an error with [`SpoolError::is_corrupt`].
    pub(crate) fn invalid_reason(&self) -> Option<&str> {
        match &self.cause {
            Cause::Invalid(why) => Some(why),
            _ => None,
        }
    }

    /// The [`crate::Committer`] refuses all commits since a directory fsync failed; only a
    /// restart (which re-checks the queue) clears it.
    pub fn is_poisoned(&self) -> bool {
        matches!(self.cause, Cause::Poisoned(_))
    }
}

/// `io::Error` is not `Clone`; a failed batch fsync must be reported to every waiter.
pub(crate) fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spool: {} {}: ", self.step, self.path.display())?;
        match &self.cause {
            Cause::Io(e) => write!(f, "{e}"),
            Cause::Invalid(why) => f.write_str(why),
            Cause::Poisoned(e) => write!(
                f,
                "refusing to commit since an earlier directory fsync failed ({e}); restart after checking the disk"
            ),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) | Cause::Poisoned(e) => Some(e),
            Cause::Invalid(_) => None,
        }
    }
}

/// Shorthand for the crate's results.
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_codes_are_full() {
        for code in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG] {
            let e = SpoolError::io(Step::Write, "/x", io::Error::from_raw_os_error(code));
            assert!(e.is_full(), "{e}");
        }
        let e = SpoolError::io(Step::Write, "/x", io::Error::from_raw_os_error(libc::EIO));
        assert!(!e.is_full());
        assert!(!SpoolError::invalid("/x", "bad").is_full());
    }

    #[test]
    fn display_names_step_and_path() {
        let e = SpoolError::io(
            Step::Fdatasync,
            "/s/tmp/a",
            io::Error::from_raw_os_error(libc::EIO),
        );
        let s = e.to_string();
        assert!(s.starts_with("spool: fdatasync /s/tmp/a: "), "{s}");
        let p = SpoolError::poisoned("/s/queue", &io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(p.is_poisoned() && p.is_full() && p.step() == Step::DirFsync);
    }
}
