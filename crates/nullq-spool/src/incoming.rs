//! Receiving one message into `tmp/ID` (locked while it is written), then renaming it into
//! `queue/ID`: the [`Incoming`] that ends as a [`Renamed`], which `commit.rs` takes from there.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::commit::{Committer, Renamed};
use crate::error::{Result, SpoolError, Step};
use crate::format::{Envelope, Trailer, HEADER};
use crate::id::QueueId;
use crate::layout::Dirs;
use crate::sys;

/// Writes are gathered to this size: the QMQP decoder hands over whatever the socket gave.
const BUF_SIZE: usize = 64 * 1024;

/// A message being received into `tmp/ID` (state *receiving*).
///
/// Dropping it without [`Incoming::finish`], or a failed `finish`, unlinks the file: a
/// half-received message never stays, and the client, not having had `K`, sends it again.
#[derive(Debug)]
pub struct Incoming {
    id: QueueId,
    path: PathBuf,
    queue_path: PathBuf,
    committer: Committer,
    /// `None` once a write failed (the file's content is unknown from then on) or finished.
    out: Option<BufWriter<File>>,
    crc: crc32fast::Hasher,
    written: u64,
    /// Set once the file is in `queue/`, so that drop leaves it alone.
    renamed: bool,
}

impl Incoming {
    /// Creates `tmp/ID` and writes the header. Called by [`crate::Spool::receive`].
    pub(crate) fn create(dirs: &Dirs, committer: Committer) -> Result<Incoming> {
        let tmp_dir = &dirs.tmp;
        // Created locked, and locked until the file has left tmp/ (renamed, then closed, in
        // `finish`; or unlinked by Drop): a `Spool::open` in another process (`nullq deliver`
        // starting beside `nullq qmqpd` sessions) removes a tmp/ file only if it can take that
        // lock, so a file is judged by whether its writer still has it open, not by the pid in
        // its name (pids repeat after a reboot and differ between namespaces). nullq-fs creates
        // it under tmp/'s creation lock, so no clean-up ever sees it unlocked in between.
        let tmp_fd = nullq_fs::open_dir(tmp_dir).map_err(sys::from_fs)?;
        // Ids are unique by construction; O_EXCL still refuses to share a file, so on EEXIST
        // (a restored backup, a clock gone wild) just take the next id.
        let mut tries = 0;
        let (id, path, file) = loop {
            let id = QueueId::generate();
            let name = id.to_string();
            match nullq_fs::create_locked(&tmp_fd, tmp_dir, &name, 0o600) {
                Ok(file) => break (id, tmp_dir.join(name), file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 3 => tries += 1,
                Err(e) => return Err(sys::from_fs(e)),
            }
        };
        let mut incoming = Incoming {
            queue_path: dirs.queue_file(&id),
            id,
            path,
            committer,
            out: Some(BufWriter::with_capacity(BUF_SIZE, file)),
            crc: crc32fast::Hasher::new(),
            written: 0,
            renamed: false,
        };
        incoming.put(HEADER)?;
        Ok(incoming)
    }

    /// The id the message will have in the queue.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Appends message bytes (the server's `Received` header first, then the message as it
    /// arrives). After an error the message is abandoned: later writes and `finish` fail too.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.put(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Message bytes written so far (not counting the header).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends the envelope and trailer, renames `tmp/ID` to `queue/ID` without replacing
    /// anything, then `fdatasync`s and closes the file (checking both). The rename is not
    /// durable until [`Renamed::commit`]: that directory fsync is shared between callers.
    ///
    /// On error the file is deleted (from `tmp/` or `queue/`); a failed fsync is never retried.
    /// Once the committer is poisoned ([`SpoolError::is_poisoned`]) nothing is renamed: the
    /// commit could only be refused.
    pub fn finish(mut self, envelope: &Envelope) -> Result<Renamed> {
        let env = envelope.encode();
        self.put(&env)?;
        let trailer = Trailer {
            msg_len: self.written,
            env_len: env.len() as u64,
            crc: self.crc.clone().finalize(),
        };
        // The trailer is not part of its own checksum, so it does not go through `put`.
        let mut out = self.take_out()?;
        let file = out
            .write_all(&trailer.encode())
            .and_then(|()| out.into_inner().map_err(io::IntoInnerError::into_error))
            .map_err(|e| SpoolError::io(Step::Write, &self.path, e))?;
        // Rename first, then fdatasync: the file's sync then commits the journal transaction
        // that already holds the rename, and the directory fsync of the commit finds nothing
        // left to do — one journal commit per message instead of two (bench/fsync-order.sh:
        // 0.4 ms instead of 0.7 ms a file on ext4). The file is whole before it is renamed, so
        // nothing partial is ever visible in queue/; it is just not yet durable, and no `K` is
        // sent until it is.
        if let Some(e) = self.committer.refusal() {
            drop(file);
            return Err(e); // Drop deletes tmp/ID
        }
        self.committer.renaming(self.id);
        if let Err(e) = sys::rename_noreplace(&self.path, &self.queue_path) {
            drop(file);
            self.committer.settled(&self.id);
            return Err(e); // Drop deletes tmp/ID
        }
        self.renamed = true;
        if let Err(e) = sys::sync_and_close(file, &self.queue_path) {
            // Its pages may be lost: it must not be delivered. The client is told `Z`.
            let _ = std::fs::remove_file(&self.queue_path);
            self.committer.settled(&self.id);
            return Err(e);
        }
        Ok(Renamed::new(self.id, self.committer.clone()))
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

    fn take_out(&mut self) -> Result<BufWriter<File>> {
        self.out.take().ok_or_else(|| abandoned(&self.path))
    }

    /// Closes the file without flushing what is buffered: it is about to be unlinked.
    fn discard(&mut self) {
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
        }
    }
}

fn abandoned(path: &std::path::Path) -> SpoolError {
    SpoolError::io(
        Step::Write,
        path,
        io::Error::other("an earlier write failed; the message was abandoned"),
    )
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.renamed {
            self.discard();
            // Best effort: if this fails, the next start removes it (nothing in tmp/ was acknowledged).
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
