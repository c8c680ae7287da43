//! The fallback queue: where a message waits when every QMQP server failed temporarily and
//! `control/fallbackqueue` names a directory (off otherwise: mini-qmail has no queue at all).
//!
//! Layout under the directory:
//! ```text
//! tmp/ID      being written; never read. Left over only by a crash before the rename.
//! new/ID      waiting: durable (file fsynced, renamed, directory fsynced) before the caller is
//!             told "queued".
//! failed/ID   refused permanently (`D`) by a server during a flush; kept for a person, never
//!             sent again. failed/ID.why says why.
//! ```
//! A file is one line `nullq-fallback 1 ENVLEN MSGLEN\n`, then the envelope in qmail-queue's
//! format (ENVLEN bytes), then the message (MSGLEN bytes). IDs are `SECONDS.NANOS.PID`: they sort
//! by arrival and no two processes make the same one.
//!
//! Flushing and races. A flush takes each file in `new/` under an exclusive, non-blocking
//! `flock` on the file itself, and only after holding it checks that `new/ID` is still that very
//! file (same device and inode). Whoever sent a message unlinks (or moves) it *before* closing,
//! so the lock is released only once the name is gone: a second flush that opened the file
//! earlier either fails to lock it (and skips it) or locks it after the unlink and finds the name
//! gone (and skips it). Each message is therefore sent once by concurrent flushes. A crash
//! between a server's `K` and the unlink sends it again on the next flush: "a crash may deliver
//! twice, never lose". A lock dies with its process, so nothing is ever stuck behind a dead one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nullq_proto::envelope::Envelope;
use nullq_proto::exit::QueueExit;

use crate::qmqpc::{self, Config, Spooled};

/// The first word of every fallback file, and the format version after it.
const MAGIC: &str = "nullq-fallback 1";
/// The longest header line accepted when reading a file back.
const MAX_HEADER: usize = 100;

/// A fallback queue directory.
#[derive(Debug, Clone)]
pub struct FallbackQueue {
    dir: PathBuf,
}

/// How much one flush may do.
#[derive(Debug, Clone, Copy)]
pub struct FlushLimit {
    /// At most this many messages are offered to servers.
    pub max_messages: usize,
}

impl FlushLimit {
    /// Everything (`nullq flush`).
    pub fn all() -> FlushLimit {
        FlushLimit {
            max_messages: usize::MAX,
        }
    }

    /// A little, after a successful injection: the injecting program (often a cron job) should
    /// not turn into a long-running queue runner.
    pub fn opportunistic() -> FlushLimit {
        FlushLimit { max_messages: 20 }
    }
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Messages a server accepted (and that were removed).
    pub sent: usize,
    /// Messages a server refused permanently (moved to `failed/`).
    pub failed: usize,
    /// Messages still waiting (servers failing temporarily, or over the limit).
    pub waiting: usize,
    /// Messages another flush was sending at the time.
    pub busy: usize,
    /// What went wrong, a line each.
    pub log: Vec<String>,
    /// A problem that stopped the flush (the configuration, the directory).
    pub error: Option<String>,
}

/// One waiting (or failed) message, for `mailq`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its id (the file name).
    pub id: String,
    /// Arrival time, seconds since the epoch (from the id).
    pub time: i64,
    /// Message size in bytes.
    pub size: u64,
    /// The envelope, or why it could not be read.
    pub envelope: Result<Envelope, String>,
    /// Whether a server refused it permanently.
    pub failed: bool,
}

/// A file's header: where the envelope and the message are.
struct Header {
    header_len: u64,
    envelope_len: u64,
    message_len: u64,
}

impl FallbackQueue {
    /// The queue in `dir` (nothing is created until a message is stored).
    pub fn new(dir: impl Into<PathBuf>) -> FallbackQueue {
        FallbackQueue { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Store `message` for `envelope` durably; returns its id. When this returns `Ok`, the message
    /// survives a crash or a power cut.
    pub fn store(&self, message: &mut Spooled<'_>, envelope: &Envelope) -> io::Result<String> {
        for sub in ["tmp", "new", "failed"] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(self.sub(sub))?;
        }
        let (secs, nanos) = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        {
            Ok(d) => (d.as_secs(), d.subsec_nanos()),
            Err(_) => (0, 0),
        };
        let id = format!("{secs}.{nanos:09}.{}", std::process::id());
        let tmp = self.sub("tmp").join(&id);
        let result = self.write_tmp(&tmp, message, envelope).and_then(|()| {
            let new = self.sub("new").join(&id);
            fs::rename(&tmp, &new)
                .map_err(|e| with_path(e, "rename into", &new))
                .and_then(|()| sync_dir(&self.sub("new")))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(id)
    }

    fn write_tmp(
        &self,
        tmp: &Path,
        message: &mut Spooled<'_>,
        envelope: &Envelope,
    ) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| with_path(e, "create", tmp))?;
        let env = envelope.encode();
        let header = format!("{MAGIC} {} {}\n", env.len(), message.len);
        let write = |e| with_path(e, "write", tmp);
        file.write_all(header.as_bytes()).map_err(write)?;
        file.write_all(&env).map_err(write)?;
        message.file.seek(SeekFrom::Start(message.offset))?;
        let copied =
            io::copy(&mut (&mut *message.file).take(message.len), &mut file).map_err(write)?;
        if copied != message.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message file shorter than announced",
            ));
        }
        // After a failed fsync the kernel may have dropped the pages: never retry it, fail.
        file.sync_all().map_err(|e| with_path(e, "fsync", tmp))?;
        Ok(())
    }

    /// Ids in `sub` (`new` or `failed`), oldest first; an absent directory is empty.
    fn ids(&self, sub: &str) -> io::Result<Vec<String>> {
        let dir = self.sub(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(e, "read", &dir)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, "read", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') && !name.ends_with(".why") {
                    ids.push(name.to_owned());
                }
            }
        }
        ids.sort_by_cached_key(|id| id_key(id));
        Ok(ids)
    }

    /// Whether any message waits (cheap: one directory read).
    pub fn has_waiting(&self) -> bool {
        self.ids("new").map(|ids| !ids.is_empty()).unwrap_or(false)
    }

    /// Every waiting message, then every failed one, for `mailq`.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for (sub, failed) in [("new", false), ("failed", true)] {
            for id in self.ids(sub)? {
                let path = self.sub(sub).join(&id);
                let (size, envelope) = match File::open(&path) {
                    Ok(file) => {
                        let mut file = BufReader::new(file);
                        match read_header(&mut file)
                            .and_then(|h| read_envelope(&mut file, &h).map(|e| (h, e)))
                        {
                            Ok((h, e)) => (h.message_len, Ok(e)),
                            Err(e) => (0, Err(e.to_string())),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // sent meanwhile
                    Err(e) => (0, Err(e.to_string())),
                };
                out.push(Entry {
                    time: id_key(&id).0 as i64,
                    id,
                    size,
                    envelope,
                    failed,
                });
            }
        }
        Ok(out)
    }

    /// Offer waiting messages to the servers, oldest first, until the queue is empty, the limit is
    /// reached, or a message fails temporarily everywhere (then the servers are still down, and the
    /// rest waits for the next flush rather than each costing a round of timeouts).
    pub fn flush(&self, config: &Config, limit: FlushLimit) -> FlushReport {
        let mut report = FlushReport::default();
        let ids = match self.ids("new") {
            Ok(ids) => ids,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        for (i, id) in ids.iter().enumerate() {
            if i >= limit.max_messages {
                report.waiting += ids.len() - i;
                break;
            }
            match self.flush_one(config, id, &mut report) {
                Step::Sent => report.sent += 1,
                Step::Failed => report.failed += 1,
                Step::Skipped => {}
                Step::Busy => report.busy += 1,
                Step::Stop => {
                    report.waiting += ids.len() - i;
                    break;
                }
            }
        }
        report
    }

    fn flush_one(&self, config: &Config, id: &str, report: &mut FlushReport) -> Step {
        let path = self.sub("new").join(id);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::Skipped,
            Err(e) => {
                report.log.push(format!("{id}: unable to open: {e}"));
                return Step::Skipped;
            }
        };
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => return Step::Busy,
            Err(e) => {
                report.log.push(format!("{id}: unable to lock: {e}"));
                return Step::Skipped;
            }
        }
        // Holding the lock: is new/ID still this file? If not, another flush sent it already.
        match (file.metadata(), fs::symlink_metadata(&path)) {
            (Ok(held), Ok(named)) if held.dev() == named.dev() && held.ino() == named.ino() => {}
            _ => return Step::Skipped,
        }
        let parsed = {
            let mut reader = BufReader::new(&mut file);
            read_header(&mut reader).and_then(|h| read_envelope(&mut reader, &h).map(|e| (h, e)))
        };
        let (header, envelope) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                report
                    .log
                    .push(format!("{id}: unreadable, moved to failed/: {e}"));
                self.give_up(id, &format!("unreadable: {e}"), report);
                return Step::Failed;
            }
        };
        let mut spooled = Spooled {
            file: &mut file,
            offset: header.header_len + header.envelope_len,
            len: header.message_len,
        };
        let step = match qmqpc::send(config, &mut spooled, &envelope) {
            Ok(_) => match fs::remove_file(&path).and_then(|()| sync_dir(&self.sub("new"))) {
                Ok(()) => Step::Sent,
                Err(e) => {
                    // Sent, but still here: it will be sent again. Say so loudly.
                    report.log.push(format!(
                        "{id}: sent, but unable to remove it (it will be sent again): {e}"
                    ));
                    Step::Sent
                }
            },
            Err(err) if err.exit.is_permanent() || err.exit == QueueExit::PermanentRefusal => {
                let why = err.log.join("; ");
                report.log.push(format!(
                    "{id}: refused permanently, moved to failed/: {why}"
                ));
                self.give_up(id, &why, report);
                Step::Failed
            }
            Err(err) if err.exit == QueueExit::ConfigError => {
                report.error = Some(err.log.join("; "));
                Step::Stop
            }
            Err(err) => {
                report
                    .log
                    .push(format!("{id}: still waiting: {}", err.log.join("; ")));
                // A file we cannot read is this message's problem, not the servers': go on.
                if err.exit == QueueExit::ReadError {
                    Step::Skipped
                } else {
                    Step::Stop
                }
            }
        };
        // The lock is released here, when `file` closes: after the unlink or rename above.
        drop(file);
        step
    }

    /// Move new/ID to failed/ID (while the caller holds its lock) and record why.
    fn give_up(&self, id: &str, why: &str, report: &mut FlushReport) {
        let failed = self.sub("failed");
        let result = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&failed)
            .and_then(|()| fs::write(failed.join(format!("{id}.why")), format!("{why}\n")))
            .and_then(|()| fs::rename(self.sub("new").join(id), failed.join(id)))
            .and_then(|()| sync_dir(&failed))
            .and_then(|()| sync_dir(&self.sub("new")));
        if let Err(e) = result {
            report
                .log
                .push(format!("{id}: unable to move to failed/: {e}"));
        }
    }
}

enum Step {
    Sent,
    Failed,
    Skipped,
    Busy,
    Stop,
}

/// Sort key of an id: (seconds, nanoseconds, pid), so that ids sort by time even across digit
/// counts; names that are not ids sort first, by name.
fn id_key(id: &str) -> (u64, u64, u64, String) {
    let mut parts = id.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        id.to_owned(),
    )
}

fn read_header(reader: &mut impl BufRead) -> io::Result<Header> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut line)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a nullq fallback file");
    let text = std::str::from_utf8(&line).map_err(|_| bad())?;
    let rest = text
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(bad)?;
    let mut numbers = rest.split_ascii_whitespace().map(str::parse::<u64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(envelope_len)), Some(Ok(message_len)), None) => Ok(Header {
            header_len: line.len() as u64,
            envelope_len,
            message_len,
        }),
        _ => Err(bad()),
    }
}

fn read_envelope(reader: &mut impl Read, header: &Header) -> io::Result<Envelope> {
    if header.envelope_len > qmqpc::MAX_ENVELOPE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "envelope too long",
        ));
    }
    let mut bytes = Vec::new();
    reader.take(header.envelope_len).read_to_end(&mut bytes)?;
    Envelope::parse(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another process holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock only takes an fd, which `file` keeps open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// fsync a directory, so that renames and unlinks in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "fsync directory", dir))
}

fn with_path(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            sender: b"jason@example.net".to_vec(),
            recipients: vec![b"bob@example.net".to_vec(), b"eve@example.net".to_vec()],
        }
    }

    #[test]
    fn store_then_list() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let queue = FallbackQueue::new(dir.path().join("fallback"));
        let mut msg = tempfile::tempfile()?;
        msg.write_all(b"XXSubject: hi\n\nbody\n")?;
        let id = queue.store(
            &mut Spooled {
                file: &mut msg,
                offset: 2,
                len: 18,
            },
            &envelope(),
        )?;
        assert!(queue.has_waiting());
        let list = queue.list()?;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].size, 18);
        assert_eq!(list[0].envelope.as_ref().ok(), Some(&envelope()));
        assert!(!list[0].failed);
        let raw = fs::read(dir.path().join("fallback/new").join(&id))?;
        assert!(raw.starts_with(b"nullq-fallback 1 "));
        assert!(raw.ends_with(b"Subject: hi\n\nbody\n"));
        assert_eq!(fs::read_dir(dir.path().join("fallback/tmp"))?.count(), 0);
        Ok(())
    }

    #[test]
    fn ids_sort_by_time_not_text() {
        let mut ids = vec!["10.000000001.5", "9.000000002.7", "9.000000001.9"];
        ids.sort_by_cached_key(|id| id_key(id));
        assert_eq!(
            ids,
            vec!["9.000000001.9", "9.000000002.7", "10.000000001.5"]
        );
    }

    #[test]
    fn header_is_strict() {
        let ok = read_header(&mut &b"nullq-fallback 1 10 20\nrest"[..]);
        assert!(matches!(
            ok,
            Ok(Header {
                header_len: 23,
                envelope_len: 10,
                message_len: 20
            })
        ));
        for bad in [
            &b"nullq-fallback 2 1 2\n"[..],
            b"nullq-fallback 1 1\n",
            b"garbage",
            b"nullq-fallback 1 1 2 3\n",
        ] {
            assert!(
                read_header(&mut &bad[..]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lock_is_exclusive_across_open_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        fs::write(&path, b"x")?;
        let a = File::open(&path)?;
        let b = File::open(&path)?;
        assert!(try_lock(&a)?);
        assert!(!try_lock(&b)?);
        drop(a);
        assert!(try_lock(&b)?);
        Ok(())
    }
}
