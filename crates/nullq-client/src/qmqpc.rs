//! `qmail-qmqpc` (and `qmail-queue`, its mini-qmail symlink): the QMQP client with server failover.
//!
//! This module owns the qmail-queue interface of the null client: reading it (message on fd 0,
//! envelope on fd 1, qmail-queue(8)), spooling the message to a temporary file so that a 50 MB
//! message is streamed and never held in memory, handing it to [`crate::transport`] (the first
//! server in `control/qmqpservers` that accepts it, cr.yp.to/proto/qmqp.html), and, when every
//! server fails, to [`crate::fallback`]. [`queue_file`] is the same thing for callers in this
//! process (qmail-inject, sendmail, forward); `nullq flush` ([`flush`]) lives here too.
//!
//! Where it differs from qmail-qmqpc, on purpose:
//! - a `Z` answer or a broken conversation moves on to the next server (qmail-qmqpc stops at `Z`),
//!   since the point of several servers is that one bad server does not stop mail; the exit code is
//!   that of the last error (71 `Z`, 72 connect timeout, 73 connect refused, 74 broken);
//! - the reply netstring is parsed, not scanned for the first `K`/`Z`/`D` byte;
//! - timeouts are configurable (`control/timeoutconnect`, default 10 s; `control/timeoutremote`,
//!   default 60 s) and the whole conversation with one server is bounded by QMQP's hour;
//! - when every server fails temporarily and `control/fallbackqueue` names a directory, the
//!   message is kept there ([`crate::fallback`]) and the caller is told "queued".

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;

use nullq_proto::envelope::QmailEnvelope;
use nullq_proto::exit::QueueExit;

use crate::control::ControlDir;
use crate::fallback::{FallbackQueue, FlushLimit};
use crate::syslog::{self, Severity};
use crate::transport::{
    self, Accepted, ConfigError, SendError, Spooled, Transport, CHUNK, MAX_ENVELOPE,
};

/// Where and how to send, and what to do when sending fails: the client's control files, read
/// once per run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The servers and timeouts.
    pub transport: Transport,
    /// The fallback queue, when `control/fallbackqueue` names one.
    pub fallback: Option<FallbackQueue>,
    /// Whether each message's fate goes to syslog ([`crate::syslog`], `control/syslog`).
    pub syslog: bool,
}

impl Config {
    /// Read the control files under `control`. Unreadable files are a configuration error (55);
    /// an empty or missing `qmqpservers` is not an error here, but sending then fails with 55.
    pub fn load(control: &ControlDir) -> Result<Config, ConfigError> {
        let transport = Transport::load(control)?;
        let fallback = match control.line("fallbackqueue") {
            Ok(Some(dir)) => Some(FallbackQueue::new(control.home().join(dir))),
            Ok(None) => None,
            Err(e) => return Err(ConfigError::unreadable(control, "fallbackqueue", e)),
        };
        Ok(Config {
            transport,
            fallback,
            syslog: syslog::enabled(control),
        })
    }
}

/// What [`deliver`] did with a message that no server refused permanently.
#[derive(Debug)]
pub enum Delivered {
    /// A server answered `K`.
    Sent(Accepted),
    /// Every server failed temporarily; the message waits in the fallback queue under this id.
    Deferred {
        /// The fallback queue's id of the message.
        id: String,
        /// Why each server failed.
        log: Vec<String>,
    },
}

/// Send the message, or keep it in the fallback queue when every server fails temporarily and
/// one is configured; after a successful send, also flush a little of the fallback queue.
pub fn deliver(
    config: &Config,
    message: &mut Spooled<'_>,
    envelope: &QmailEnvelope,
) -> Result<Delivered, SendError> {
    match transport::send(&config.transport, message, envelope) {
        Ok(accepted) => {
            if let Some(queue) = &config.fallback {
                // Opportunistic: servers answer again, so what waits can go now. Bounded, it
                // never waits for a lock another flush holds, and it never changes this
                // message's outcome; what it found wrong goes to stderr, a line each.
                let report = queue.flush(
                    &config.transport,
                    config.syslog,
                    FlushLimit::opportunistic(),
                );
                for line in report.log.iter().chain(report.error.as_ref()) {
                    // A queue file's name is any local user's to choose: no raw control bytes.
                    eprintln!("qmail-qmqpc: fallback queue: {}", syslog::printable(line));
                }
            }
            Ok(Delivered::Sent(accepted))
        }
        Err(mut err) => {
            let fallback_worthy = matches!(
                err.exit,
                QueueExit::TempRefusal
                    | QueueExit::ConnectTimeout
                    | QueueExit::ConnectRejected
                    | QueueExit::CommFailed
            );
            let Some(queue) = config.fallback.as_ref().filter(|_| fallback_worthy) else {
                return Err(err);
            };
            match queue.store(message, envelope) {
                Ok(id) => Ok(Delivered::Deferred { id, log: err.log }),
                Err(e) => {
                    err.log
                        .push(format!("fallback queue {}: {e}", queue.dir().display()));
                    Err(err)
                }
            }
        }
    }
}

/// Queue the first `len` bytes of `message` (read from offset 0) for `envelope`, as qmail-queue
/// would: `Ok(())` once a server accepted it or it is safe in the fallback queue.
///
/// For callers in this process (qmail-inject, sendmail, forward). On failure it has already
/// printed, on stderr, one line per server tried; the caller maps the [`QueueExit`] to its own
/// exit code (`is_permanent()` → 100, else 111). An envelope with no recipient is accepted and
/// sent nowhere, as qmail-queue does.
pub fn queue_file(message: &mut File, len: u64, envelope: &QmailEnvelope) -> Result<(), QueueExit> {
    let control = ControlDir::from_env();
    let config = match Config::load(&control) {
        Ok(config) => config,
        Err(e) => return Err(fail(&control, QueueExit::ConfigError, &e.to_string())),
    };
    queue_with(
        &config,
        &mut Spooled {
            file: message,
            offset: 0,
            len,
        },
        envelope,
    )
}

/// [`queue_file`] with a loaded configuration and a message anywhere in its file.
pub fn queue_with(
    config: &Config,
    message: &mut Spooled<'_>,
    envelope: &QmailEnvelope,
) -> Result<(), QueueExit> {
    let about = describe(envelope, message.len);
    // Refused here, whether or not a server answers, so that the fallback queue never keeps
    // what a server would refuse (and, written in qmail-queue's format, could not read back).
    if let Some(why) = envelope.bad_address() {
        eprintln!("qmail-qmqpc: {why}");
        let exit = QueueExit::PermanentRefusal;
        syslog::log(
            config.syslog,
            Severity::Err,
            &format!("failed (exit {}): {why}: {about}", program_exit(exit)),
        );
        return Err(exit);
    }
    if envelope.recipients.is_empty() {
        // qmail-queue queues such a message and qmail-send drops it; QMQP cannot carry it at all.
        syslog::log(
            config.syslog,
            Severity::Info,
            &format!("dropped: no recipient, nothing to send: {about}"),
        );
        return Ok(());
    }
    match deliver(config, message, envelope) {
        Ok(Delivered::Sent(accepted)) => {
            syslog::log(
                config.syslog,
                Severity::Info,
                &format!(
                    "sent to {} answer K{}: {about}",
                    accepted.server, accepted.text
                ),
            );
            Ok(())
        }
        Ok(Delivered::Deferred { id, log }) => {
            // The one line a person sees: the mail is safe but not yet sent, and why.
            let why = log
                .last()
                .map(String::as_str)
                .unwrap_or("no server answered");
            eprintln!("qmail-qmqpc: deferred: no QMQP server took the message ({why}); kept in the fallback queue as {id}, `nullq flush` sends it");
            let dir = config
                .fallback
                .as_ref()
                .map(|q| q.dir().display().to_string())
                .unwrap_or_default();
            syslog::log(
                config.syslog,
                Severity::Info,
                &format!("queued in the fallback queue {dir} as {id} ({why}): {about}"),
            );
            Ok(())
        }
        Err(err) => {
            for line in &err.log {
                eprintln!("qmail-qmqpc: {line}");
            }
            syslog::log(
                config.syslog,
                Severity::Err,
                &format!(
                    "failed (exit {}): {}: {about}",
                    program_exit(err.exit),
                    err.log.join("; ")
                ),
            );
            Err(err.exit)
        }
    }
}

/// The message in a log line: `from=<SENDER> rcpts=N size=BYTES`.
fn describe(envelope: &QmailEnvelope, len: u64) -> String {
    format!(
        "from=<{}> rcpts={} size={len}",
        String::from_utf8_lossy(&envelope.sender),
        envelope.recipients.len()
    )
}

/// The exit code the running program turns a queue failure into: qmail-qmqpc's own, or
/// qmail-inject's 100/111 for every program that queues in this process.
fn program_exit(code: QueueExit) -> i32 {
    match syslog::program_name().as_str() {
        "qmail-qmqpc" | "qmail-queue" => i32::from(code.code()),
        _ if code.is_permanent() => 100,
        _ => 111,
    }
}

/// Report a failure that came before any server was tried: on stderr, and as the message's
/// syslog line (the control files may be what is wrong, so `control/syslog` is read alone).
fn fail(control: &ControlDir, code: QueueExit, why: &str) -> QueueExit {
    eprintln!("qmail-qmqpc: {why}");
    syslog::log(
        syslog::enabled(control),
        Severity::Err,
        &format!("failed (exit {}): {why}", program_exit(code)),
    );
    code
}

/// `nullq flush --help`.
const FLUSH_HELP: &str = "\
Send what waits in the fallback queue (control/fallbackqueue) to the QMQP servers.

Usage: nullq flush [-v]

Options:
  -v          say what was done (sent, failed, waiting, busy, skipped) on stderr
  -h, --help  print this help

Exit status: 0 the queue is empty (or there is none), 100 a message was refused permanently
(moved to failed/), 111 messages still wait (no server took them), 55 the control files are
unreadable. Each message sent or given up is logged to syslog. See nullq-flush(8).";

/// `qmail-qmqpc` / `qmail-queue`: message on fd 0, envelope on fd 1; exit with qmail-queue's codes.
pub fn main(_args: &[OsString]) -> i32 {
    match run_main() {
        Ok(()) => 0,
        Err(code) => i32::from(code.code()),
    }
}

fn run_main() -> Result<(), QueueExit> {
    let control = ControlDir::from_env();
    if !control.home().is_dir() {
        let why = format!(
            "unable to use the qmail home directory {}",
            control.home().display()
        );
        return Err(fail(&control, QueueExit::HomeDir, &why));
    }
    // qmail-qmqpc reads qmqpservers before the message: a host with no servers fails fast.
    let config = match Config::load(&control) {
        Ok(config) => config,
        Err(e) => return Err(fail(&control, QueueExit::ConfigError, &e.to_string())),
    };
    if config.transport.servers.is_empty() {
        let why = format!("{} names no server", control.path("qmqpservers").display());
        return Err(fail(&control, QueueExit::ConfigError, &why));
    }
    // The message first, to its end: the writer may fill the fd 0 pipe before writing fd 1.
    // A descriptor closed at start is unreadable, as for qmail-qmqpc (54), not the /dev/null
    // Rust's runtime opened in its place.
    if crate::startfds::closed_at_start(0) {
        let why = "unable to read the message: descriptor 0 is closed";
        return Err(fail(&control, QueueExit::ReadError, why));
    }
    let (mut file, offset, len) = spool_stdin().map_err(|e| {
        let why = format!("unable to read the message: {e}");
        fail(&control, QueueExit::ReadError, &why)
    })?;
    let envelope = read_envelope().inspect_err(|code| {
        syslog::log(
            config.syslog,
            Severity::Err,
            &format!("failed (exit {}): unable to read the envelope", code.code()),
        );
    })?;
    queue_with(
        &config,
        &mut Spooled {
            file: &mut file,
            offset,
            len,
        },
        &envelope,
    )
}

/// The message on fd 0 as a file: fd 0 itself when it is a regular file (nothing to copy),
/// else a copy in an anonymous temporary file.
fn spool_stdin() -> io::Result<(File, u64, u64)> {
    let stdin = io::stdin();
    let mut fd0 = File::from(stdin.as_fd().try_clone_to_owned()?);
    let meta = fd0.metadata()?;
    if meta.file_type().is_file() {
        let offset = fd0.stream_position()?;
        if let Some(len) = meta.len().checked_sub(offset) {
            return Ok((fd0, offset, len));
        }
    }
    let mut tmp = tempfile::tempfile()?;
    let len = copy_all(&mut fd0, &mut tmp)?;
    tmp.flush()?;
    Ok((tmp, 0, len))
}

/// Copy a reader to a file in fixed chunks, counting bytes.
pub(crate) fn copy_all(from: &mut impl Read, to: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The envelope from fd 1, read as a file (qmail-queue(8): fd 1 is the envelope's read end), up
/// to its final NUL: like qmail-qmqpc, what follows is never read, so a writer that keeps fd 1
/// open after the envelope does not hold the client up.
fn read_envelope() -> Result<QmailEnvelope, QueueExit> {
    let unreadable = |e: io::Error| {
        eprintln!("qmail-qmqpc: unable to read the envelope: {e}");
        QueueExit::ReadError
    };
    if crate::startfds::closed_at_start(1) {
        return Err(unreadable(io::Error::from_raw_os_error(libc::EBADF)));
    }
    let stdout = io::stdout();
    let mut fd1 = File::from(stdout.as_fd().try_clone_to_owned().map_err(unreadable)?);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match fd1.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        let scanned = bytes.len().saturating_sub(1);
        bytes.extend_from_slice(&chunk[..n]);
        // Fields start with F or T, so the empty field that ends the envelope is a NUL at the
        // very start (a format error) or two NULs in a row.
        let ended = bytes.first() == Some(&0) || bytes[scanned..].windows(2).any(|w| w == [0, 0]);
        if ended || n == 0 {
            break;
        }
        if bytes.len() as u64 > MAX_ENVELOPE {
            eprintln!("qmail-qmqpc: envelope longer than {MAX_ENVELOPE} bytes");
            return Err(QueueExit::EnvelopeFormat);
        }
    }
    QmailEnvelope::parse(&bytes).map_err(|e| {
        eprintln!("qmail-qmqpc: {e}");
        e.exit()
    })
}

/// `nullq flush [-v]`: send what waits in the fallback queue. Exit 0 when none of the messages it
/// may send still waits afterwards (or the queue is off), 111 when messages still wait (servers
/// still failing) or the queue is unusable, 100 when a server refused one permanently or one was
/// unreadable (moved to `failed/`), 55 on a configuration problem. Entries that are not
/// messages are left in place and do not change the exit code (a line each on stderr); a user
/// other than root flushes only their own messages.
pub fn flush(args: &[OsString]) -> i32 {
    let mut verbose = false;
    for arg in args.iter().skip(1) {
        match arg.to_str() {
            Some("-v") => verbose = true,
            Some("-h" | "--help") => {
                let _ = writeln!(io::stdout(), "{FLUSH_HELP}");
                return 0;
            }
            _ => {
                eprintln!("nullq flush: usage: nullq flush [-v]");
                return 100;
            }
        }
    }
    let control = ControlDir::from_env();
    let config = match Config::load(&control) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nullq flush: {e}");
            return 55;
        }
    };
    let Some(queue) = &config.fallback else {
        if verbose {
            eprintln!("nullq flush: no fallback queue (control/fallbackqueue is not set)");
        }
        return 0;
    };
    let report = queue.flush(&config.transport, config.syslog, FlushLimit::all());
    // A queue file's name is any local user's to choose: no raw control bytes on root's terminal.
    for line in &report.log {
        eprintln!("nullq flush: {}", syslog::printable(line));
    }
    if verbose {
        eprintln!(
            "nullq flush: {} sent, {} failed permanently, {} still waiting, {} busy in another flush, {} not messages (left in place), {} other users'",
            report.sent, report.failed, report.waiting, report.busy, report.skipped, report.foreign
        );
    }
    if let Some(error) = &report.error {
        eprintln!("nullq flush: {}", syslog::printable(error));
        return 111;
    }
    if report.failed > 0 {
        100
    } else if report.waiting > 0 {
        111
    } else {
        0
    }
}
