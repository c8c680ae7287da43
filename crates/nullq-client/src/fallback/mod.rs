//! The fallback queue: where a message waits when every QMQP server failed temporarily and
//! `control/fallbackqueue` names a directory (off otherwise: mini-qmail has no queue at all).
//!
//! Every local user's `sendmail` may write here, and root's `nullq flush` (nullq-flush.timer)
//! reads what they wrote, so the layout is built like `/tmp`:
//! ```text
//! fallback/          0755 root
//! fallback/tmp/      01777 root  ID being written by its sender (mode 0600, owned by the sender)
//! fallback/new/      01777 root  ID waiting: durable before the sender is told "queued"
//! fallback/failed/   01777 root  ID refused permanently (D) by a server during a flush; kept
//!                                for a person, never sent again; ID.why (by the flusher) says why
//! ```
//! Why 01777 and not qmail's write-only 01733: a writer must fsync `new/` after its rename for
//! the message to survive a power cut, and Linux fsyncs a directory only through a descriptor
//! opened for reading, which needs `r` (an `O_PATH` descriptor gives `EBADF`). So every user can
//! *list* the names (ids: arrival time and pid, nothing more); the files themselves are mode
//! 0600, so nobody reads another's message, and the sticky bit stops anyone renaming or deleting
//! another's file. A store that fails after its rename (the directory fsync) takes the file back
//! and reports failure, or, when it is already gone (a flush sent it), reports success: a sender
//! is told "failed" only when nothing of its message stays queued. The layout is made by
//! `nullq install` (which also fixes the modes of an older 01733 layout), or by the first store
//! when it is absent.
//!
//! A file holds the sender's uid, the envelope and the message ([`file`] owns the format). IDs
//! are `SECONDS.NANOS.PID`: they sort by arrival and no two processes make the same one.
//!
//! What a flush touches. Anyone can put anything in `new/`, so a flush trusts no name there:
//! it looks at each entry without following it (`lstat`), opens only regular files, with
//! `O_NOFOLLOW|O_NONBLOCK` ([`nullq_fs::open_planted`]), and checks with `fstat` that the file
//! is regular, owned by the user who owned the name, and has one link; the UID recorded in it
//! must be its owner. Anything else (a FIFO, a symlink, a device, a hard link, a file claiming
//! another user) is never read, never deleted: it is left in place, with one line in the
//! flush's log (stderr) each time a flush meets it. A flush run by a user other than root
//! handles only that user's own files. The queue directories themselves must be owned by root
//! (or by the flusher): a queue another user controls is not flushed. The envelope sender is
//! sent as recorded: like qmail's, any user may set it (`-f`), so it is not a trust boundary.
//!
//! One message does not hold back the others: a message a server answers `Z` (or whose
//! conversation breaks) stays waiting and the flush goes on with the next. Only when the servers
//! cannot be reached at all (the last one refused the connection or timed out) does the flush
//! stop, since the rest would only cost a round of timeouts each. A message refused
//! permanently moves to `failed/` (never replacing a name there, never writing through one).
//!
//! Flushing and races. A flush takes each file in `new/` under an exclusive, non-blocking
//! `flock` on the file itself, and only after holding it checks that `new/ID` is still that very
//! file (same device and inode). Whoever sent a message unlinks (or moves) it *before* closing,
//! so the lock is released only once the name is gone: a second flush that opened the file
//! earlier either fails to lock it (and skips it) or locks it after the unlink and finds the name
//! gone (and skips it). Each message is therefore sent once by concurrent flushes. A crash
//! between a server's `K` and the unlink sends it again on the next flush: "a crash may deliver
//! twice, never lose". A lock dies with its process, so nothing is ever stuck behind a dead one.

use std::fs::{self, DirBuilder, File};
use std::io::{self, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nullq_proto::envelope::QmailEnvelope;
use nullq_proto::exit::QueueExit;

mod file;

use crate::syslog::{self, Severity};
use crate::transport::{self, Spooled, Transport};
use file::{read_envelope, read_header, write_message};

/// The queue's directories (relative to it, `""` itself) and their modes. `nullq install`
/// creates them so, and fixes an older layout.
pub const LAYOUT: &[(&str, u32)] = &[
    ("", 0o755),
    ("tmp", 0o1777),
    ("new", 0o1777),
    ("failed", 0o1777),
];

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
    /// At most this many entries of `new/` are looked at, messages or not: `new/` is writable
    /// by every user, and a hundred thousand names planted there must not make every
    /// injection's flush a second-long scan.
    pub max_examined: usize,
}

impl FlushLimit {
    /// Everything (`nullq flush`).
    pub fn all() -> FlushLimit {
        FlushLimit {
            max_messages: usize::MAX,
            max_examined: usize::MAX,
        }
    }

    /// A little, after a successful injection: the injecting program (often a cron job) should
    /// not turn into a long-running queue runner.
    pub fn opportunistic() -> FlushLimit {
        FlushLimit {
            max_messages: 20,
            max_examined: 100,
        }
    }
}

/// How many entries that are not messages one flush names, a line each; the rest are counted
/// in one line. Anyone may plant names in `new/`, and each line goes to the stderr of root's
/// cron job.
pub const SKIPPED_LINES: usize = 10;

/// What a flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Messages a server accepted (and that were removed).
    pub sent: usize,
    /// Messages a server refused permanently, or unreadable ones (moved to `failed/`).
    pub failed: usize,
    /// Messages still waiting (servers failing temporarily, or over the limit).
    pub waiting: usize,
    /// Messages another flush was sending at the time.
    pub busy: usize,
    /// Entries that are not messages of ours (left in place, a log line each for the first
    /// [`SKIPPED_LINES`], then one line for the rest).
    pub skipped: usize,
    /// Other users' messages, left to root's flush (a flush by a user other than root).
    pub foreign: usize,
    /// What went wrong, a line each.
    pub log: Vec<String>,
    /// A problem that stopped the flush (the configuration, the directory).
    pub error: Option<String>,
}

impl FlushReport {
    /// The line about an entry that is not a message (it is then counted in `skipped`): kept
    /// for the first [`SKIPPED_LINES`] of them only.
    fn skip_line(&mut self, line: String) {
        if self.skipped < SKIPPED_LINES {
            self.log.push(line);
        }
    }
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
    pub envelope: Result<QmailEnvelope, String>,
    /// Whether a server refused it permanently.
    pub failed: bool,
}

/// The effective uid of this process: who owns the files it creates.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
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
        if name.is_empty() {
            // Not `dir.join("")`: its trailing slash would make lstat follow a symlink.
            return self.dir.clone();
        }
        self.dir.join(name)
    }

    /// Create whatever part of [`LAYOUT`] is missing, with its mode (the umask does not
    /// apply). Existing directories are left as they are. Only root creates the layout (as
    /// `nullq install` does): a layout a user created would be that user's, who could then
    /// delete every other user's message in it (the sticky bit does not protect files from a
    /// directory's owner).
    fn create_missing(&self) -> io::Result<()> {
        let missing = LAYOUT
            .iter()
            .any(|(sub, _)| fs::symlink_metadata(self.sub(sub)).is_err());
        if missing && euid() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the fallback queue {} is not set up: `nullq install` (as root) creates it",
                    self.dir.display()
                ),
            ));
        }
        for (sub, mode) in LAYOUT {
            let dir = self.sub(sub);
            if fs::symlink_metadata(&dir).is_ok() {
                continue; // judged by check_dirs
            }
            match DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) => return Err(with_path(e, "create directory", &dir)),
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(*mode))
                .map_err(|e| with_path(e, "set the mode of", &dir))?;
        }
        Ok(())
    }

    /// Store `message` for `envelope` durably; returns its id. When this returns `Ok`, the message
    /// survives a crash or a power cut; when it returns `Err`, nothing of it stays queued.
    pub fn store(&self, message: &mut Spooled<'_>, envelope: &QmailEnvelope) -> io::Result<String> {
        self.create_missing()?;
        // The same rule as a flush's: real directories (no symlink), owned by root or by us,
        // so that a queue another user controls never holds our message.
        self.check_dirs(euid())
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        let (secs, nanos) = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        {
            Ok(d) => (d.as_secs(), d.subsec_nanos()),
            Err(_) => (0, 0),
        };
        let id = format!("{secs}.{nanos:09}.{}", std::process::id());
        let (tmp, new) = (self.sub("tmp"), self.sub("new"));
        let options = nullq_fs::Options {
            mode: 0o600,
            ..nullq_fs::Options::default()
        };
        let result = nullq_fs::publish_to(&tmp, &id, &new, &id, &options, |file| {
            write_message(file, message, envelope, euid())
        });
        match result {
            Ok(()) => Ok(id),
            Err(e) if e.step == nullq_fs::Step::SyncDir => {
                // Renamed into new/, but maybe not durably: take it back and say "failed", so the
                // sender's retry cannot make a second copy. Gone already: a flush has it.
                match fs::remove_file(new.join(&id)) {
                    Ok(()) => Err(io::Error::new(
                        e.kind(),
                        format!("{e} (the message was taken back out of the queue)"),
                    )),
                    Err(gone) if gone.kind() == io::ErrorKind::NotFound => Ok(id),
                    // Neither durable for sure nor removable: it is queued, so it is a success.
                    Err(_) => Ok(id),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ids in `sub` (`new` or `failed`), oldest first; an absent directory is empty. Every name
    /// but dot-names and `.why` files: what is not a message is found out by whoever opens it.
    fn ids(&self, sub: &str) -> io::Result<Vec<String>> {
        self.oldest_ids(sub, usize::MAX)
    }

    /// The `max` oldest of [`FallbackQueue::ids`], oldest first. Only
    /// `max` names are held at a time (the rest are dropped as they are read), so that a
    /// hundred thousand names planted in `new/` cost a small flush no memory to speak of.
    fn oldest_ids(&self, sub: &str, max: usize) -> io::Result<Vec<String>> {
        let dir = self.sub(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(e, "read", &dir)),
        };
        // The `max` smallest keys seen so far; the largest of them on top, to be dropped.
        let mut oldest = std::collections::BinaryHeap::new();
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, "read", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') && !name.ends_with(".why") {
                    oldest.push(id_key(name));
                    if oldest.len() > max {
                        oldest.pop();
                    }
                }
            }
        }
        Ok(oldest.into_sorted_vec().into_iter().map(|k| k.3).collect())
    }

    /// Every waiting message, then every failed one, for `mailq`: all of them for root, a
    /// user's own for anyone else. Entries that are not regular files are not shown (and never
    /// opened).
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let me = euid();
        let mut out = Vec::new();
        for (sub, failed) in [("new", false), ("failed", true)] {
            for id in self.ids(sub)? {
                let path = self.sub(sub).join(&id);
                let owner = match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_file() => meta.uid(),
                    _ => continue, // not a message, or gone meanwhile
                };
                if me != 0 && owner != me {
                    continue;
                }
                let (size, envelope) = match nullq_fs::open_planted(&path, Some(owner)) {
                    Ok(file) => {
                        let mut file = BufReader::new(file);
                        match read_header(&mut file)
                            .and_then(|h| read_envelope(&mut file, &h).map(|e| (h, e)))
                        {
                            Ok((h, e)) => (h.message_len, Ok(e)),
                            Err(e) => (0, Err(e.to_string())),
                        }
                    }
                    Err(nullq_fs::Refused::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        continue; // sent meanwhile
                    }
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

    /// The queue's directories must be real directories (not symlinks) owned by root or by
    /// us: otherwise another user could swap what a flush reads and renames.
    fn check_dirs(&self, me: u32) -> Result<(), String> {
        for (sub, _) in LAYOUT {
            let dir = self.sub(sub);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if !meta.file_type().is_dir() => {
                    return Err(format!("{} is not a directory", dir.display()))
                }
                Ok(meta) if meta.uid() != 0 && meta.uid() != me => {
                    return Err(format!(
                        "{} is owned by uid {}: not using a queue another user controls",
                        dir.display(),
                        meta.uid()
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    /// Offer waiting messages to the servers, oldest first, each on its own: one that fails
    /// temporarily stays and the flush goes on. It stops at the limit, on a configuration
    /// problem, or when no server could even be reached (the rest waits for the next flush
    /// rather than each costing a round of timeouts). Each message sent or given up is logged
    /// to syslog when `use_syslog` is set (`control/syslog`).
    pub fn flush(&self, transport: &Transport, use_syslog: bool, limit: FlushLimit) -> FlushReport {
        let mut report = FlushReport::default();
        let me = euid();
        if let Err(e) = self.check_dirs(me) {
            report.error = Some(e);
            return report;
        }
        let ids = match self.oldest_ids("new", limit.max_examined) {
            Ok(ids) => ids,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        // Another user's messages go without the host's TLS client certificate.
        let others = transport.for_another_user();
        let mut offered = 0;
        for (i, id) in ids.iter().enumerate() {
            if offered >= limit.max_messages {
                report.waiting += ids.len() - i;
                break;
            }
            match self.flush_one((transport, &others), use_syslog, id, me, &mut report) {
                Step::Sent => report.sent += 1,
                Step::Failed => report.failed += 1,
                Step::Waiting => report.waiting += 1,
                Step::Gone => {}
                Step::Skipped => report.skipped += 1,
                Step::Foreign => report.foreign += 1,
                Step::Busy => report.busy += 1,
                Step::Stop => {
                    report.waiting += ids.len() - i;
                    break;
                }
            }
            offered = report.sent + report.failed + report.waiting;
        }
        if report.skipped > SKIPPED_LINES {
            report.log.push(format!(
                "and {} more entries that are not messages, left in place (not listed)",
                report.skipped - SKIPPED_LINES
            ));
        }
        report
    }

    fn flush_one(
        &self,
        (own, others): (&Transport, &Transport),
        use_syslog: bool,
        id: &str,
        me: u32,
        report: &mut FlushReport,
    ) -> Step {
        let path = self.sub("new").join(id);
        // Look before opening, without following: a FIFO, a symlink or a device is never opened.
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::Gone,
            Err(e) => {
                report.skip_line(format!("{id}: unable to look at it: {e}"));
                return Step::Skipped;
            }
        };
        let owner = meta.uid();
        if me != 0 && owner != me {
            return Step::Foreign; // another user's: root's flush sends it
        }
        let transport = if owner == me { own } else { others };
        if !meta.file_type().is_file() {
            let kind = nullq_fs::entry_kind(&path)
                .ok()
                .flatten()
                .unwrap_or("not a regular file");
            report.skip_line(format!(
                "{id}: skipped, left in place: {kind} owned by uid {owner} is not a message"
            ));
            return Step::Skipped;
        }
        let mut file = match nullq_fs::open_planted(&path, Some(owner)) {
            Ok(file) => file,
            Err(nullq_fs::Refused::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Step::Gone
            }
            Err(e) => {
                report.skip_line(format!("{id}: skipped, left in place: {e}"));
                return Step::Skipped;
            }
        };
        let held = match file.metadata() {
            Ok(held) => held,
            Err(e) => {
                report.skip_line(format!("{id}: unable to fstat: {e}"));
                return Step::Skipped;
            }
        };
        if held.nlink() != 1 {
            report.skip_line(format!(
                "{id}: skipped, left in place: a file with {} links is not a message",
                held.nlink()
            ));
            return Step::Skipped;
        }
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => return Step::Busy,
            Err(e) => {
                report.skip_line(format!("{id}: unable to lock: {e}"));
                return Step::Skipped;
            }
        }
        // Holding the lock: is new/ID still this file? If not, another flush sent it already.
        match fs::symlink_metadata(&path) {
            Ok(named) if held.dev() == named.dev() && held.ino() == named.ino() => {}
            _ => return Step::Gone,
        }
        let parsed = {
            let mut reader = BufReader::new(&mut file);
            read_header(&mut reader).and_then(|h| read_envelope(&mut reader, &h).map(|e| (h, e)))
        };
        let (header, envelope) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let why = format!("unreadable: {e}");
                self.give_up(id, &why, report);
                return Step::Failed;
            }
        };
        if let Some(uid) = header.uid.filter(|uid| *uid != held.uid()) {
            report.skip_line(format!(
                "{id}: skipped, left in place: it says uid {uid} queued it, but uid {} owns it",
                held.uid()
            ));
            return Step::Skipped;
        }
        let mut spooled = Spooled {
            file: &mut file,
            offset: header.header_len + header.envelope_len,
            len: header.message_len,
        };
        let step = match transport::send(transport, &mut spooled, &envelope) {
            Ok(accepted) => {
                syslog::log(
                    use_syslog,
                    Severity::Info,
                    &format!(
                        "sent from the fallback queue {} ({id}) to {} answer K{}: from=<{}> rcpts={} size={}",
                        self.dir.display(),
                        accepted.server,
                        accepted.text,
                        String::from_utf8_lossy(&envelope.sender),
                        envelope.recipients.len(),
                        header.message_len
                    ),
                );
                let removed = fs::remove_file(&path)
                    .and_then(|()| nullq_fs::sync_dir(&self.sub("new")).map_err(io::Error::from));
                if let Err(e) = removed {
                    // Sent, but still here: it will be sent again. Say so loudly.
                    report.log.push(format!(
                        "{id}: sent, but unable to remove it (it will be sent again): {e}"
                    ));
                }
                Step::Sent
            }
            Err(err) if err.exit.is_permanent() || err.exit == QueueExit::PermanentRefusal => {
                let why = format!("refused permanently: {}", err.log.join("; "));
                syslog::log(
                    use_syslog,
                    Severity::Err,
                    &format!(
                        "failed in the fallback queue {} ({id}), moved to failed/: {why}",
                        self.dir.display()
                    ),
                );
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
                // Servers that cannot even be reached are down for every message: stop. A `Z`
                // or a broken conversation may be this message's alone: go on with the next.
                if matches!(
                    err.exit,
                    QueueExit::ConnectTimeout | QueueExit::ConnectRejected
                ) {
                    Step::Stop
                } else {
                    Step::Waiting
                }
            }
        };
        // The lock is released here, when `file` closes: after the unlink or rename above.
        drop(file);
        step
    }

    /// Move new/ID to failed/ (while the caller holds its lock) and record why beside it. No
    /// name in failed/ is ever replaced or written through: if ID is taken there, the message
    /// goes under a fresh name; if the `.why` name is taken, the reason is only logged.
    fn give_up(&self, id: &str, why: &str, report: &mut FlushReport) {
        let (new, failed) = (self.sub("new"), self.sub("failed"));
        if let Err(e) = self.create_missing() {
            report
                .log
                .push(format!("{id}: {why}; unable to move it to failed/: {e}"));
            return;
        }
        let fresh = format!("{id}.{}", now_nanos());
        let mut moved = None;
        let mut last = None;
        for name in [id, fresh.as_str()] {
            match nullq_fs::move_to(&new, id, &failed, name) {
                Ok(()) => {
                    moved = Some(name.to_owned());
                    break;
                }
                Err(e) if e.step == nullq_fs::Step::SyncDir => {
                    moved = Some(name.to_owned()); // moved; durability is the disk's problem
                    report.log.push(format!("{id}: {e}"));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        let Some(name) = moved else {
            let e = last.map(|e| e.to_string()).unwrap_or_default();
            report
                .log
                .push(format!("{id}: {why}; unable to move it to failed/: {e}"));
            return;
        };
        report
            .log
            .push(format!("{id}: {why}; moved to failed/{name}"));
        // The reason names recipients (a `550 <lawyer@...>`): for the flusher's eyes only, as
        // the message itself is for its sender's.
        let options = nullq_fs::Options {
            mode: 0o600,
            ..nullq_fs::Options::default()
        };
        if let Err(e) = nullq_fs::publish(
            &failed,
            &format!(".{name}.why.tmp"),
            &format!("{name}.why"),
            &options,
            |f| f.write_all(format!("{why}\n").as_bytes()),
        ) {
            report
                .log
                .push(format!("{id}: unable to record why in failed/: {e}"));
        }
    }
}

/// Nanoseconds since the epoch (0 before it), for a fresh name.
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

enum Step {
    Sent,
    Failed,
    Waiting,
    Gone,
    Skipped,
    Foreign,
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

fn with_path(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> QmailEnvelope {
        QmailEnvelope {
            sender: b"jason@example.net".to_vec(),
            recipients: vec![b"bob@example.net".to_vec(), b"eve@example.net".to_vec()],
        }
    }

    #[test]
    fn a_small_flush_holds_only_the_oldest_names() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let queue = FallbackQueue::new(dir.path().join("fallback"));
        let new = dir.path().join("fallback/new");
        fs::create_dir_all(&new)?;
        // Arrival second, nanoseconds, pid: read from the names in whatever order.
        for name in [
            "9.1.1",
            "3.5.2",
            "3.4.9",
            "12.0.1",
            "1.9.9",
            "x",
            ".hidden",
            "2.0.0.why",
        ] {
            fs::write(new.join(name), b"")?;
        }
        let oldest = queue.oldest_ids("new", 3)?;
        assert_eq!(
            oldest,
            ["x", "1.9.9", "3.4.9"],
            "unparsable names sort first, as before"
        );
        assert_eq!(
            queue.ids("new")?,
            ["x", "1.9.9", "3.4.9", "3.5.2", "9.1.1", "12.0.1"]
        );
        Ok(())
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
        let list = queue.list()?;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].size, 18);
        assert_eq!(list[0].envelope.as_ref().ok(), Some(&envelope()));
        assert!(!list[0].failed);
        let raw = fs::read(dir.path().join("fallback/new").join(&id))?;
        let uid = euid();
        assert!(raw.starts_with(format!("nullq-fallback 2 {uid} ").as_bytes()));
        for (sub, mode) in LAYOUT {
            let meta = fs::metadata(dir.path().join("fallback").join(sub))?;
            assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{sub}");
        }
        let meta = fs::metadata(dir.path().join("fallback/new").join(&id))?;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
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
