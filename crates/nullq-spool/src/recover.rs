//! What [`crate::Spool::open`] does before accepting anything: clean `tmp/` (by lock: files
//! whose writer still holds them stay), check `queue/`, match `state/` to `queue/`. Nothing is
//! deleted that might hold an acknowledged message: `tmp/` never does (no `K` is sent before
//! the rename), nor a queue file still marked as being written (no `K` is sent before its mark
//! is cleared), and bad queue files go to `corrupt/`.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::FileType;
use std::path::{Path, PathBuf};

use crate::error::{Result, SpoolError, Step};
use crate::id::QueueId;
use crate::layout::Dirs;
use crate::reader::{read_state_file, MessageFile, ReadError};
use crate::state::DeliveryState;
use crate::sys;
use nullq_fs::Leftover;

/// What [`crate::Spool::open`] found and did. `Display` gives one line for the log; log each
/// of [`RecoveryReport::corrupt`] too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Files deleted from `tmp/`: messages being received (never acknowledged) and unfinished
    /// state updates.
    pub tmp_removed: Vec<PathBuf>,
    /// Files in `tmp/` left alone because their writer holds their lock: a running process is
    /// still receiving them (or writing a state update).
    pub tmp_in_use: Vec<PathBuf>,
    /// Files in `queue/` that the last owner's committer was still writing when it stopped
    /// (marked `BEING_WRITTEN`: never acknowledged), deleted.
    pub unfinished_removed: Vec<PathBuf>,
    /// Files moved out of `queue/` and `state/` into `corrupt/` (their old paths).
    pub corrupt_moved: Vec<PathBuf>,
    /// The same moves with destination and reason, one log line each.
    pub corrupt: Vec<CorruptFile>,
    /// `state/ID` files whose message was gone (a removal cut short by a crash), deleted.
    pub orphan_states_removed: Vec<PathBuf>,
    /// Files in `queue/` and `state/` this process may not read (owned by another user, e.g.
    /// written by root): left where they are, and their message is not delivered until the
    /// operator gives them back to the spool's owner. Log each as an error.
    pub unreadable: Vec<UnreadableFile>,
    /// Whole messages in `queue/`.
    pub queued: usize,
}

/// A file moved to `corrupt/`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptFile {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now, in `corrupt/`.
    pub to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for CorruptFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spool: moved {} to {}: {}",
            self.from.display(),
            self.to.display(),
            self.reason
        )
    }
}

/// A file [`crate::Spool::open`] was not allowed to read, left in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableFile {
    /// The file.
    pub path: PathBuf,
    /// The system's error.
    pub reason: String,
}

impl fmt::Display for UnreadableFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spool: cannot read {}: {}; left in place, its message waits until the file belongs to the spool's owner",
            self.path.display(),
            self.reason
        )
    }
}

/// Whether `e` says this process may not read the file (rather than that reading failed).
fn is_denied(e: &SpoolError) -> bool {
    matches!(
        e.io_error().and_then(std::io::Error::raw_os_error),
        Some(libc::EACCES | libc::EPERM)
    )
}

impl RecoveryReport {
    fn push(&mut self, moved: CorruptFile) {
        self.corrupt_moved.push(moved.from.clone());
        self.corrupt.push(moved);
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spool: {} messages queued; removed {} unfinished files from tmp/; moved {} corrupt files to corrupt/; removed {} orphan state files",
            self.queued,
            self.tmp_removed.len(),
            self.corrupt.len(),
            self.orphan_states_removed.len()
        )?;
        if !self.unfinished_removed.is_empty() {
            write!(
                f,
                "; removed {} unfinished files from queue/",
                self.unfinished_removed.len()
            )?;
        }
        if !self.unreadable.is_empty() {
            write!(
                f,
                "; left {} files it may not read in place",
                self.unreadable.len()
            )?;
        }
        if !self.tmp_in_use.is_empty() {
            write!(
                f,
                "; left {} files in tmp/ that running processes hold locked",
                self.tmp_in_use.len()
            )?;
        }
        Ok(())
    }
}

pub(crate) fn recover(d: &Dirs) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    clean_tmp(d, &mut report)?;

    // Recipient count of every whole message, to check state files against.
    let mut good: HashMap<QueueId, usize> = HashMap::new();
    // Messages whose file may not be read: present, so their state files are not orphans.
    let mut unchecked: HashSet<QueueId> = HashSet::new();
    // Messages moved to corrupt/: their state files follow them.
    let mut moved: HashSet<QueueId> = HashSet::new();
    let mut queue_changed = false;
    for (path, name, kind) in entries(&d.queue)? {
        let bad = match name.to_str().and_then(|n| n.parse::<QueueId>().ok()) {
            None => Some("the name is not a queue id".to_string()),
            Some(_) if !kind.is_file() => Some("not a regular file".to_string()),
            // Its writer stopped before the file was whole, so before any `K` for it.
            Some(_) if crate::writer::left_being_written(&path) => {
                if sys::unlink(&path)? {
                    report.unfinished_removed.push(path);
                    queue_changed = true;
                }
                continue;
            }
            Some(id) => match check_message(&path) {
                Ok(recipients) => {
                    good.insert(id, recipients);
                    None
                }
                Err(ReadError::Bad(why)) => Some(why),
                Err(ReadError::Io(e)) if is_denied(&e) => {
                    unchecked.insert(id);
                    report.unreadable.push(UnreadableFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                    None
                }
                Err(ReadError::Io(e)) => return Err(e),
            },
        };
        if let Some(reason) = bad {
            report.push(move_to_corrupt(d, &path, &name, "", reason)?);
            if let Some(id) = name.to_str().and_then(|n| n.parse::<QueueId>().ok()) {
                moved.insert(id);
            }
            queue_changed = true;
        }
    }
    report.queued = good.len();

    let mut state_changed = false;
    for (path, name, kind) in entries(&d.state)? {
        let id = name.to_str().and_then(|n| n.parse::<QueueId>().ok());
        if id.is_some_and(|id| unchecked.contains(&id)) {
            continue;
        }
        let bad = match id.map(|id| good.get(&id)) {
            None => Some("the name is not a queue id".to_string()),
            Some(None) if id.is_some_and(|id| moved.contains(&id)) => {
                Some("its message was moved to corrupt/".to_string())
            }
            Some(None) => {
                sys::unlink(&path)?;
                report.orphan_states_removed.push(path);
                state_changed = true;
                continue;
            }
            Some(Some(_)) if !kind.is_file() => Some("not a regular file".to_string()),
            Some(Some(&recipients)) => match read_state_file(&path, recipients) {
                // Gone since the listing: nothing to check.
                Ok(None) => continue,
                // Set aside, the message is all pending again: it repeats deliveries, loses none.
                Ok(Some(bytes)) => check_state(&bytes, recipients).err(),
                Err(ReadError::Bad(why)) => Some(why),
                Err(ReadError::Io(e)) => {
                    if !is_denied(&e) {
                        return Err(e);
                    }
                    // Left as it is: setting it aside would make every recipient pending
                    // again (repeating deliveries) for what is only a wrong owner.
                    report.unreadable.push(UnreadableFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            },
        };
        if let Some(reason) = bad {
            report.push(move_to_corrupt(d, &path, &name, ".state", reason)?);
            state_changed = true;
        }
    }

    // corrupt/ first, so a moved file is durable in its new place before it leaves the old.
    if !report.corrupt.is_empty() {
        sys::fsync_dir(&d.corrupt)?;
    }
    if queue_changed {
        sys::fsync_dir(&d.queue)?;
    }
    if state_changed {
        sys::fsync_dir(&d.state)?;
    }
    Ok(report)
}

/// Removes the leftovers in `tmp/`: every file whose lock nobody holds, and anything that is
/// not a regular file (the spool writes only regular files there). `nullq qmqpd` sessions (one
/// process each, under tcpserver) and `nullq queue` tools write into the same tmp/ while a
/// `nullq deliver` starts: their files are locked by their writers (see `incoming.rs`) and are
/// left alone. Judged by lock, not by the pid in the name: a pid may belong to another process
/// after a reboot, or to none in another pid namespace; a lock is released by the kernel when
/// its writer dies. The scan holds tmp/'s creation lock, so no writer is between creating its
/// file and locking it meanwhile: an unlocked file is abandoned.
fn clean_tmp(d: &Dirs, report: &mut RecoveryReport) -> Result<()> {
    let cleaning = nullq_fs::Cleaning::start(&d.tmp).map_err(sys::from_fs)?;
    for (path, name, kind) in entries(&d.tmp)? {
        if kind.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| SpoolError::io(Step::Unlink, &path, e))?;
            report.tmp_removed.push(path);
            continue;
        }
        match cleaning.remove_if_unlocked(&name) {
            Ok(Leftover::Removed) => report.tmp_removed.push(path),
            Ok(Leftover::InUse) => report.tmp_in_use.push(path),
            // Renamed into queue/ by a receiver that just finished, or removed by its writer.
            Ok(Leftover::Gone) => {}
            // A symlink, a FIFO: never opened, removed as the entry it is.
            Ok(Leftover::NotRegular(_)) => {
                if sys::unlink(&path)? {
                    report.tmp_removed.push(path);
                }
            }
            // The spool's processes all run as its owner: a file its owner may not even open
            // was not written by one of them, and holds no lock of theirs.
            Err(e) if matches!(e.source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                if sys::unlink(&path)? {
                    report.tmp_removed.push(path);
                }
            }
            // Its lock could not be tested (ENOLCK, or flock emulated on NFS): keep it, as
            // if in use; a start-up that fails here would leave the server down after a crash.
            Err(_) => report.tmp_in_use.push(path),
        }
    }
    Ok(())
}

/// Checks a message file completely (lengths, magic, checksum, envelope); returns its number of
/// recipients.
pub(crate) fn check_message(path: &Path) -> Result<usize, ReadError> {
    let file = MessageFile::open(path)?;
    file.check_crc()?;
    Ok(file.envelope()?.recipients.len())
}

/// Parses a state file and checks it has one entry per recipient of its message.
pub(crate) fn check_state(bytes: &[u8], recipients: usize) -> Result<DeliveryState, String> {
    let state = DeliveryState::decode(bytes)?;
    if state.recipients.len() != recipients {
        return Err(format!(
            "state for {} recipients, the message has {recipients}",
            state.recipients.len()
        ));
    }
    Ok(state)
}

/// The entries of `dir`: path, name, and type (not following symlinks).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, OsString, FileType)>> {
    let read = |e| SpoolError::io(Step::Read, dir, e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        out.push((
            entry.path(),
            entry.file_name(),
            entry.file_type().map_err(read)?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Moves `from` to `corrupt/NAME{suffix}`, adding `.1`, `.2`, ... rather than replacing a file
/// already there. No directory fsync: the caller makes the batch durable (`corrupt/` first). The
/// one move to `corrupt/`, for recovery at open and for [`crate::Spool::set_aside`] at run time.
pub(crate) fn move_to_corrupt(
    d: &Dirs,
    from: &Path,
    name: &OsStr,
    suffix: &str,
    reason: String,
) -> Result<CorruptFile> {
    for n in 0..1000 {
        let mut to_name = name.to_owned();
        to_name.push(suffix);
        if n > 0 {
            to_name.push(format!(".{n}"));
        }
        let to = d.corrupt.join(to_name);
        match sys::rename_noreplace(from, &to) {
            Ok(()) => {
                return Ok(CorruptFile {
                    from: from.to_owned(),
                    to,
                    reason,
                })
            }
            Err(e) if e.io_error().and_then(std::io::Error::raw_os_error) == Some(libc::EEXIST) => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    let why = std::io::Error::other("1000 files of that name already in corrupt/");
    Err(SpoolError::io(Step::Rename, from, why))
}
