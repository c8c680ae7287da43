//! Writing one message file: created in `tmp/`, written, sealed with its envelope and trailer,
//! then renamed into `queue/` (not synced: the committer syncs it with its batch). Used by an
//! [`crate::Incoming`] for a message written as it arrives, and by the committer thread for one
//! whole in memory ([`crate::Spool::store`]): [`Intake`] is where new files are made,
//! [`MessageWriter`] the one place that writes them.

use std::fs::File;
use std::io::{self, BufWriter, IoSlice, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Result, SpoolError, Step};
use crate::format::{Envelope, Trailer, HEADER};
use crate::id::QueueId;
use crate::layout::Dirs;
use crate::ledger::Ledger;
use crate::sys;

/// Writes are gathered to this size: the QMQP decoder hands over whatever the socket gave.
const BUF_SIZE: usize = 64 * 1024;

/// Where new message files are made: `tmp/`, open for the spool's life (not once per message),
/// and `queue/`, where they are renamed to.
#[derive(Debug)]
pub(crate) struct Intake {
    tmp_fd: OwnedFd,
    /// `queue/`, where the owner's committer makes small messages' files itself.
    queue_fd: OwnedFd,
    tmp: PathBuf,
    queue: PathBuf,
    /// This process opened the spool and holds its lock: no other process cleans `tmp/` while
    /// it lives (only [`crate::Spool::open`] does, under that lock), so its files need neither
    /// `tmp/`'s creation lock nor a lock of their own. A spool only attached to (`nullq qmqpd`
    /// beside a `nullq deliver` that may start and clean `tmp/`) locks each file.
    owner: bool,
    /// The owner's hold on `ROOT/lock`, kept as long as this intake can make files, so that the
    /// lock lasts while any of them is written even if the `Spool` is dropped first.
    _lock: Option<Arc<File>>,
}

impl Intake {
    /// An intake for the spool in `dirs`; `lock` is the opener's hold on `ROOT/lock` (its files
    /// then go unlocked), `None` for a spool only attached to.
    pub(crate) fn new(dirs: &Dirs, lock: Option<Arc<File>>) -> Result<Intake> {
        let tmp_fd = nullq_fs::open_dir(&dirs.tmp).map_err(sys::from_fs)?;
        let queue_fd = nullq_fs::open_dir(&dirs.queue).map_err(sys::from_fs)?;
        Ok(Intake {
            tmp_fd,
            queue_fd,
            tmp: dirs.tmp.clone(),
            queue: dirs.queue.clone(),
            owner: lock.is_some(),
            _lock: lock,
        })
    }

    /// A new file `tmp/ID` (`O_CREAT|O_EXCL`, mode 0600), locked unless this process owns the
    /// spool. Ids are unique by construction; `O_EXCL` still refuses to share a file, so on
    /// `EEXIST` (a restored backup, a clock gone wild) just take the next id.
    fn create(&self) -> Result<(QueueId, PathBuf, File)> {
        let mut tries = 0;
        loop {
            let id = QueueId::generate();
            let name = id.to_string();
            let created = if self.owner {
                nullq_fs::create_new(&self.tmp_fd, &self.tmp, &name, 0o600)
            } else {
                // Locked until the file has left tmp/ (renamed, then closed; or unlinked): a
                // `Spool::open` in another process removes a tmp/ file only if it can take that
                // lock, so a file is judged by whether its writer still has it open, not by the
                // pid in its name. Created under tmp/'s creation lock, so no clean-up ever sees
                // it unlocked in between.
                nullq_fs::create_locked(&self.tmp_fd, &self.tmp, &name, 0o600)
            };
            match created {
                Ok(file) => return Ok((id, self.tmp.join(name), file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 3 => tries += 1,
                Err(e) => return Err(sys::from_fs(e)),
            }
        }
    }
}

/// One message file being written in `tmp/ID`. Dropped before [`MessageWriter::finish`] (or
/// after a failed one), it unlinks the file: nothing half-written stays.
#[derive(Debug)]
pub(crate) struct MessageWriter {
    id: QueueId,
    path: PathBuf,
    queue_path: PathBuf,
    /// `None` once a write failed (the file's content is unknown from then on) or finished.
    out: Option<BufWriter<File>>,
    crc: crc32fast::Hasher,
    written: u64,
    /// Set once the file is in `queue/`, so that drop leaves it alone.
    renamed: bool,
}

impl MessageWriter {
    /// Creates `tmp/ID` and writes the header (buffered).
    pub(crate) fn create(intake: &Intake) -> Result<MessageWriter> {
        let mut writer = MessageWriter::open(intake, BUF_SIZE)?;
        writer.put(HEADER)?;
        Ok(writer)
    }

    /// Creates `tmp/ID`, its writes gathered in a buffer of `capacity` bytes.
    fn open(intake: &Intake, capacity: usize) -> Result<MessageWriter> {
        let (id, path, file) = intake.create()?;
        Ok(MessageWriter {
            queue_path: intake.queue.join(id.to_string()),
            id,
            path,
            out: Some(BufWriter::with_capacity(capacity, file)),
            crc: crc32fast::Hasher::new(),
            written: 0,
            renamed: false,
        })
    }

    /// Writes a message held whole in memory ([`crate::Spool::store`]) as its file in
    /// `queue/`: header, message, envelope and trailer in one vectored write from where they
    /// are, with no buffer to fill. The committer of the process that opened the spool writes
    /// it in `queue/` itself, marked [`BEING_WRITTEN`] until it is whole ([`born_in_queue`]);
    /// one that only attached writes it in `tmp/` and renames it, as [`MessageWriter::finish`]
    /// does (a `nullq deliver` beside it may clean up at any time, and judges only `tmp/`'s
    /// files by their locks).
    pub(crate) fn store(
        intake: &Intake,
        message: &[u8],
        envelope: &Envelope,
        ledger: &Ledger,
    ) -> Result<(QueueId, File)> {
        let env = envelope.encode();
        let mut crc = crc32fast::Hasher::new();
        for part in [HEADER, message, &env] {
            crc.update(part);
        }
        let trailer = Trailer {
            msg_len: message.len() as u64,
            env_len: env.len() as u64,
            crc: crc.finalize(),
        }
        .encode();
        let mut parts = [
            IoSlice::new(HEADER),
            IoSlice::new(message),
            IoSlice::new(&env),
            IoSlice::new(&trailer),
        ];
        if intake.owner {
            return born_in_queue(intake, &mut parts, ledger);
        }
        let mut writer = MessageWriter::open(intake, 0)?;
        let out = writer.out.take().ok_or_else(|| abandoned(&writer.path))?;
        let (mut file, _) = out.into_parts();
        write_all_vectored(&mut file, &mut parts)
            .map_err(|e| SpoolError::io(Step::Write, &writer.path, e))?;
        writer.rename(file, ledger)
    }

    pub(crate) fn id(&self) -> &QueueId {
        &self.id
    }

    /// Message bytes written so far (not counting the header).
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Appends message bytes. After an error the message is abandoned.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.put(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Appends the envelope and trailer and renames `tmp/ID` to `queue/ID` without replacing
    /// anything, registering the id with the committer's `ledger` as uncommitted first. The file
    /// is whole before it is renamed, so nothing partial is ever visible in `queue/`; it is not
    /// synced: the committer syncs it with its batch, and no `K` is sent until it has. Returns
    /// the id and the open file. Once the committer is poisoned nothing is renamed.
    pub(crate) fn finish(
        mut self,
        envelope: &Envelope,
        ledger: &Ledger,
    ) -> Result<(QueueId, File)> {
        let env = envelope.encode();
        self.put(&env)?;
        let trailer = Trailer {
            msg_len: self.written,
            env_len: env.len() as u64,
            crc: self.crc.clone().finalize(),
        };
        // The trailer is not part of its own checksum, so it does not go through `put`.
        let mut out = self.out.take().ok_or_else(|| abandoned(&self.path))?;
        let file = out
            .write_all(&trailer.encode())
            .and_then(|()| out.into_inner().map_err(io::IntoInnerError::into_error))
            .map_err(|e| SpoolError::io(Step::Write, &self.path, e))?;
        self.rename(file, ledger)
    }

    /// Renames the whole file `tmp/ID` to `queue/ID` (see [`MessageWriter::finish`]).
    fn rename(mut self, file: File, ledger: &Ledger) -> Result<(QueueId, File)> {
        if let Some(e) = ledger.refusal() {
            return Err(e); // Drop deletes tmp/ID
        }
        ledger.renaming(self.id);
        if let Err(e) = sys::rename_noreplace(&self.path, &self.queue_path) {
            ledger.settled(&self.id);
            return Err(e); // Drop deletes tmp/ID
        }
        self.renamed = true;
        Ok((self.id, file))
    }

    /// Writes bytes that count towards the checksum.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| abandoned(&self.path))?;
        // write_all loops over short writes and turns a zero-length write into an error.
        if let Err(e) = out.write_all(bytes) {
            self.discard();
            return Err(SpoolError::io(Step::Write, &self.path, e));
        }
        self.crc.update(bytes);
        Ok(())
    }

    /// Closes the file without flushing what is buffered: it is about to be unlinked.
    fn discard(&mut self) {
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
        }
    }
}

/// The mark of a file in `queue/` that the committer is still writing: the sticky bit, which
/// means nothing on a regular file and which nothing else in the spool sets. Such a file is not
/// a message yet: readers take it as not there ([`crate::reader`]), and [`crate::Spool::open`]
/// deletes it (its writer is gone, and no `K` was sent for it: the mark is cleared before the
/// batch's flush, which comes before `K`).
pub(crate) const BEING_WRITTEN: u32 = 0o1000;

/// Whether `meta` (a `queue/ID` file's) says the file is still being written by the committer
/// of the process that opened the spool: not a message yet, never acknowledged; take it as not
/// there. For a tool that opens `queue/ID` itself (the delivery's message lock).
pub fn is_being_written(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & BEING_WRITTEN != 0
}

/// Whether `path` is a queue file left marked [`BEING_WRITTEN`] (not following a symlink).
pub(crate) fn left_being_written(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && is_being_written(&m))
}

/// The owner's way to store a small message: `queue/ID` created (`O_EXCL`, mode 0600 and
/// [`BEING_WRITTEN`]) and written, then its mode set to 0600: a whole message, made durable by
/// the batch's flush (its `syncfs`, or its `fsync`, which covers the mode). No file in `tmp/`
/// and no rename: those cost the committer a fifth of its CPU a message (BENCHMARKS.md, "Fewer
/// copies, a faster allocator, and messages born in `queue/`"). The id is uncommitted in `ledger` before the file exists, so the runner never
/// takes it; a write or mode that fails unlinks it again.
fn born_in_queue(
    intake: &Intake,
    parts: &mut [IoSlice<'_>],
    ledger: &Ledger,
) -> Result<(QueueId, File)> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(e) = ledger.refusal() {
        return Err(e);
    }
    let mut tries = 0;
    let (id, name, mut file) = loop {
        let id = QueueId::generate();
        let name = id.to_string();
        ledger.renaming(id);
        match nullq_fs::create_new(
            &intake.queue_fd,
            &intake.queue,
            &name,
            0o600 | BEING_WRITTEN,
        ) {
            Ok(file) => break (id, name, file),
            Err(e) => {
                ledger.settled(&id);
                if e.kind() != io::ErrorKind::AlreadyExists || tries >= 3 {
                    return Err(sys::from_fs(e));
                }
                tries += 1;
            }
        }
    };
    let path = intake.queue.join(&name);
    let written = write_all_vectored(&mut file, parts)
        .map_err(|e| SpoolError::io(Step::Write, &path, e))
        .and_then(|()| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| SpoolError::io(Step::Chmod, &path, e))
        });
    if let Err(e) = written {
        drop(file);
        // Best effort: if this fails, the next open deletes it (it is still marked).
        let _ = std::fs::remove_file(&path);
        ledger.settled(&id);
        return Err(e);
    }
    Ok((id, file))
}

/// Writes every byte of `parts` with as few `writev`s as the file takes (one, for a regular
/// file), going on after a short write; a write of nothing is an error, as `write_all`'s.
fn write_all_vectored(file: &mut File, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match file.write_vectored(parts) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn abandoned(path: &std::path::Path) -> SpoolError {
    SpoolError::io(
        Step::Write,
        path,
        io::Error::other("an earlier write failed; the message was abandoned"),
    )
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if !self.renamed {
            self.discard();
            // Best effort: if this fails, the next start removes it (nothing in tmp/ was acknowledged).
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
