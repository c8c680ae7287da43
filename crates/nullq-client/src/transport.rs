//! The QMQP transport of the null client: one message, already on disk, offered to each server
//! of `control/qmqpservers` in turn until one answers `K` (cr.yp.to/proto/qmqp.html).
//!
//! This module owns the conversation and the failover rule, and nothing about where the message
//! came from: qmail-qmqpc (the `qmqpc` module) sends what it read from the qmail-queue interface
//! (and what qmail-inject, sendmail and forward queue in this process), the fallback queue (the
//! `fallback` module) what waits in it; both call [`send`], neither calls the other back. Each server gets one conversation, streamed from the file in fixed
//! chunks; a `Z` answer or a broken conversation moves on to the next server, a `D` answer or an
//! unreadable message file stops. The exit code of a failure is that of the last error (71 `Z`,
//! 72 connect timeout, 73 connect refused, 74 broken, 31 `D`, 54 unreadable, 55 no server).
//!
//! The turn is the file's order, reordered by the host's memory of failed servers
//! ([`crate::server_memory`]): a server that failed recently is tried after the others, never
//! left out. Each attempt's outcome is recorded there (a failure, or a `K` that ends one); a `D`
//! and an unreadable message file are not the server's failure and record nothing.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nullq_proto::envelope::QmailEnvelope;
use nullq_proto::exit::QueueExit;
use nullq_proto::qmqp::{request_frame, Response, Status, MAX_RESPONSE};

use crate::control::{parse_server, ControlDir, Link, ServerAddr, ServerLineError};
use crate::server_memory;
use crate::server_memory_session::{self as memory_session, SettingError, Settings};
use crate::smtp_relay::{self, RelayError, SmtpSettings};
use crate::syslog;
use crate::tls::{ClientTls, Conn};

/// qmail-qmqpc's connect timeout, used when `control/timeoutconnect` is absent.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// qmail-qmqpc's read/write timeout, used when `control/timeoutremote` is absent.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// QMQP: "a session should take at most 1 hour".
pub const SESSION_LIMIT: Duration = Duration::from_secs(3600);
/// The longest envelope the client handles, read from fd 1 or from a fallback file (thousands of
/// recipients fit; a runaway writer does not).
pub const MAX_ENVELOPE: u64 = 64 * 1024 * 1024;
/// The chunk in which a message is streamed from its file to the socket.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Where and how to send: the servers and timeouts of the control files, read once per run.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The servers of `control/qmqpservers`, in file order.
    pub servers: Vec<ServerAddr>,
    /// Bound on one TCP connect.
    pub connect_timeout: Duration,
    /// Bound on each read and write once connected.
    pub remote_timeout: Duration,
    /// Lines of `qmqpservers` that could not be read, with the reason (reported, then skipped).
    pub bad_lines: Vec<ServerLineError>,
    /// The memory of failed servers ([`server_memory`]): where it is, its backoff, where the
    /// list starts.
    pub memory: Settings,
    /// What `smtp://` lines need: read only when one is listed.
    pub smtp: SmtpSettings,
    /// The TLS settings for `qmqps://` servers, read only when one is tried (`crate::tls`).
    pub tls: ClientTls,
}

impl Transport {
    /// This transport for another local user's mail (root's `nullq flush` sending what a user
    /// queued): without the TLS client certificate, which names the host and serves root's own
    /// mail only (README), so a server that requires one fails over for that mail as it would
    /// have for the user. (`smtpauth` is the site's relay login, meant for every user's mail
    /// that waits for root's flush: kept.)
    pub fn for_another_user(&self) -> Transport {
        Transport {
            tls: self.tls.without_client_cert(),
            ..self.clone()
        }
    }

    /// Read `qmqpservers`, `timeoutconnect` and `timeoutremote` under `control`. Unreadable
    /// files are a configuration error (55); an empty or missing `qmqpservers` is not an error
    /// here, but [`send`] then fails with 55.
    pub fn load(control: &ControlDir) -> Result<Transport, ConfigError> {
        let lines = control
            .lines("qmqpservers")
            .map_err(|e| ConfigError::unreadable(control, "qmqpservers", e))?;
        let mut servers = Vec::new();
        let mut bad_lines = Vec::new();
        for line in &lines {
            match parse_server(line) {
                Ok(server) => servers.push(server),
                Err(e) => bad_lines.push(e),
            }
        }
        let connect_timeout = seconds(control, "timeoutconnect", DEFAULT_CONNECT_TIMEOUT)?;
        let remote_timeout = seconds(control, "timeoutremote", DEFAULT_REMOTE_TIMEOUT)?;
        // The spread rotates the QMQP lines only (server_memory::order).
        let qmqp_lines = servers.iter().filter(|s| s.link == Link::Qmqp).count();
        let memory = Settings::load(control, qmqp_lines)
            .map_err(|e| {
                ConfigError::unreadable(control, "qmqpstate, qmqpbackoff or qmqpspread", e)
            })?
            .map_err(ConfigError::Memory)?;
        // The `smtp://` lines' control files, read only when such a line is listed.
        let smtp = if servers.iter().any(|s| matches!(s.link, Link::Smtp { .. })) {
            SmtpSettings::load(control)
        } else {
            SmtpSettings::unused()
        };
        Ok(Transport {
            servers,
            connect_timeout,
            remote_timeout,
            bad_lines,
            memory,
            smtp,
            tls: ClientTls::new(control),
        })
    }
}

/// Why the client's control files could not be used (qmail-queue's exit 55).
#[derive(Debug)]
pub enum ConfigError {
    /// A control file exists but could not be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A timeout file does not hold a positive number of seconds.
    NotSeconds {
        /// The control file's name (`timeoutconnect`, `timeoutremote`).
        name: String,
        /// What it holds.
        value: String,
    },
    /// A control file of the server memory (`qmqpbackoff`, `qmqpspread`) holds garbage.
    Memory(SettingError),
}

impl ConfigError {
    /// `control/NAME` under `control` could not be read.
    pub fn unreadable(control: &ControlDir, name: &str, error: io::Error) -> ConfigError {
        ConfigError::Unreadable {
            path: control.path(name),
            error,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable { path, error } => {
                write!(f, "unable to read {}: {error}", path.display())
            }
            ConfigError::NotSeconds { name, value } => {
                write!(
                    f,
                    "control/{name}: not a positive number of seconds: {value}"
                )
            }
            ConfigError::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A timeout control file in whole seconds; 0 or garbage is a configuration error, since a
/// silently ignored typo would turn "10" into "forever".
fn seconds(control: &ControlDir, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match control.line(name) {
        Ok(None) => Ok(default),
        Ok(Some(value)) => match value.parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(ConfigError::NotSeconds {
                name: name.to_owned(),
                value,
            }),
        },
        Err(e) => Err(ConfigError::unreadable(control, name, e)),
    }
}

/// The outcome of one attempt at one server that did not end in `K`.
#[derive(Debug)]
pub enum AttemptError {
    /// The connection timed out (72).
    ConnectTimeout,
    /// The connection was refused or could not be made (73).
    ConnectRejected(String),
    /// Connected, then the conversation broke: a read or write failed or timed out, or the
    /// answer was not a QMQP response (74).
    Broken(String),
    /// The server answered `Z` (71).
    Temporary(String),
    /// The server answered `D` (31): no other server is tried.
    Permanent(String),
    /// The message file could not be read (54): a local problem, no other server is tried.
    Local(String),
    /// How an `smtp://` line failed, in the same classes.
    Smtp(RelayError),
}

impl AttemptError {
    /// The qmail-queue exit code of this error.
    pub fn exit(&self) -> QueueExit {
        match self {
            AttemptError::ConnectTimeout => QueueExit::ConnectTimeout,
            AttemptError::ConnectRejected(_) => QueueExit::ConnectRejected,
            AttemptError::Broken(_) => QueueExit::CommFailed,
            AttemptError::Temporary(_) => QueueExit::TempRefusal,
            AttemptError::Permanent(_) => QueueExit::PermanentRefusal,
            AttemptError::Local(_) => QueueExit::ReadError,
            AttemptError::Smtp(e) => e.exit(),
        }
    }

    /// Whether trying the next server may help.
    fn try_next(&self) -> bool {
        match self {
            AttemptError::Smtp(e) => e.try_next(),
            _ => !matches!(self, AttemptError::Permanent(_) | AttemptError::Local(_)),
        }
    }

    /// Whether the server failed (and is remembered as such): not for a `D`, which refuses one
    /// message, nor for a message file of ours that could not be read, nor for an address an
    /// `smtp://` line cannot carry.
    fn is_server_failure(&self) -> bool {
        match self {
            AttemptError::Smtp(e) => e.is_server_failure(),
            _ => self.try_next(),
        }
    }

    /// An address the `smtp://` line could never carry: its exit (31) counts only when no
    /// other line was tried and failed in its own way.
    fn is_unsendable(&self) -> bool {
        matches!(self, AttemptError::Smtp(RelayError::Unsendable(_)))
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::ConnectTimeout => write!(f, "connection timed out"),
            AttemptError::ConnectRejected(why) => write!(f, "connection failed: {why}"),
            AttemptError::Broken(why) => write!(f, "conversation failed: {why}"),
            AttemptError::Temporary(text) => write!(f, "temporary failure: Z{text}"),
            AttemptError::Permanent(text) => write!(f, "permanent failure: D{text}"),
            AttemptError::Local(why) => write!(f, "unable to read the message: {why}"),
            AttemptError::Smtp(e) => write!(f, "{e}"),
        }
    }
}

/// A message on disk, ready to be sent: `len` bytes from `offset` of `file`.
pub struct Spooled<'a> {
    /// The file holding the message.
    pub file: &'a mut File,
    /// Where the message starts in it.
    pub offset: u64,
    /// How many bytes it has.
    pub len: u64,
}

/// Why [`send`] failed: the exit code and, per server tried, what happened.
#[derive(Debug)]
pub struct SendError {
    /// The qmail-queue exit code: that of the last error, or 55 when no server was configured.
    pub exit: QueueExit,
    /// One line per failed attempt (`server: reason`) and per unreadable `qmqpservers` line.
    pub log: Vec<String>,
}

/// Which server took the message, and what it said.
#[derive(Debug)]
pub struct Accepted {
    /// The server, in `qmqpservers` spelling.
    pub server: String,
    /// The text after `K`.
    pub text: String,
}

/// Offer the message to each configured server in turn until one answers `K` (or `D`).
pub fn send(
    transport: &Transport,
    message: &mut Spooled<'_>,
    envelope: &QmailEnvelope,
) -> Result<Accepted, SendError> {
    let mut log: Vec<String> = transport
        .bad_lines
        .iter()
        .map(|e| format!("control/qmqpservers: skipped: {e}"))
        .collect();
    if transport.servers.is_empty() {
        log.push("control/qmqpservers names no server".to_owned());
        return Err(SendError {
            exit: QueueExit::ConfigError,
            log,
        });
    }
    let (prefix, suffix) = request_frame(message.len, &envelope.sender, &envelope.recipients);
    // The exit of the last failure of a line that could have carried the message, and that
    // of an address some `smtp://` line could not carry (used when no other line failed).
    let mut last = None;
    let mut unsendable = None;
    let mut memory = memory_session::Session::start(&transport.memory, server_memory::unix_now());
    let order = server_memory::order(
        &transport.servers,
        &memory.memory,
        server_memory::unix_now(),
        transport.memory.start,
    );
    let mut accepted = None;
    for server in order.into_iter().filter_map(|i| transport.servers.get(i)) {
        // An `smtp://` line is an SMTP conversation, not QMQP.
        let result = match server.link {
            Link::Smtp { starttls } => relay(transport, server, starttls, message, envelope),
            Link::Qmqp | Link::Qmqps => attempt(transport, server, message, &prefix, &suffix),
        };
        let now = server_memory::unix_now();
        match result {
            Ok(text) => {
                memory.succeeded(server, now);
                accepted = Some(Accepted {
                    server: server.to_string(),
                    text,
                });
                break;
            }
            Err(e) => {
                if e.is_server_failure() {
                    memory.failed(server, now);
                }
                // The error quotes the server's answer: no control characters on stderr.
                log.push(syslog::printable(&format!("{server}: {e}")));
                if e.is_unsendable() {
                    unsendable = Some(e.exit());
                } else {
                    last = Some(e.exit());
                }
                if !e.try_next() {
                    break;
                }
            }
        }
    }
    memory.finish(server_memory::unix_now());
    accepted.ok_or(SendError {
        exit: last.or(unsendable).unwrap_or(QueueExit::ConfigError),
        log,
    })
}

/// One SMTP conversation with an `smtp://` line (`smtp_relay`), its failure
/// in the classes of a QMQP attempt's.
fn relay(
    transport: &Transport,
    server: &ServerAddr,
    starttls: crate::control::StartTls,
    message: &mut Spooled<'_>,
    envelope: &QmailEnvelope,
) -> Result<String, AttemptError> {
    let bounds = smtp_relay::Bounds {
        connect: transport.connect_timeout,
        remote: transport.remote_timeout,
        session: SESSION_LIMIT,
    };
    let file = &mut *message.file;
    file.seek(SeekFrom::Start(message.offset))
        .map_err(|e| AttemptError::Local(e.to_string()))?;
    let mut body = file.take(message.len);
    let sent = smtp_relay::send(
        &transport.smtp,
        server,
        starttls,
        bounds,
        &mut body,
        message.len,
        envelope,
    );
    sent.map_err(AttemptError::Smtp)
}

/// One conversation with one server (all its addresses, for a host name).
fn attempt(
    transport: &Transport,
    server: &ServerAddr,
    message: &mut Spooled<'_>,
    prefix: &[u8],
    suffix: &[u8],
) -> Result<String, AttemptError> {
    let addrs = server
        .socket_addrs()
        .map_err(|e| AttemptError::ConnectRejected(format!("unable to resolve: {e}")))?;
    // Hook: a qmqps:// server's TLS settings (crate::tls), loaded at the first such server.
    let tls = match server.link {
        Link::Qmqp | Link::Smtp { .. } => None,
        Link::Qmqps => Some(
            transport
                .tls
                .config()
                .map_err(|e| AttemptError::ConnectRejected(format!("TLS: {e}")))?,
        ),
    };
    let stream = connect(&addrs, transport.connect_timeout)?;
    let deadline = Instant::now() + SESSION_LIMIT;
    let broken = |what: &str, e: io::Error| AttemptError::Broken(format!("{what}: {e}"));
    stream
        .set_write_timeout(Some(transport.remote_timeout))
        .map_err(|e| broken("setting the write timeout", e))?;
    stream
        .set_read_timeout(Some(transport.remote_timeout))
        .map_err(|e| broken("setting the read timeout", e))?;
    let mut stream = Conn::new(stream, tls, server, transport.remote_timeout, deadline)
        .map_err(|e| AttemptError::Broken(e.to_string()))?;
    let sent = (|| {
        stream.write_all(prefix).map_err(|e| broken("write", e))?;
        stream_message(message, &mut stream, deadline)?;
        stream.write_all(suffix).map_err(|e| broken("write", e))?;
        stream.flush().map_err(|e| broken("write", e))
    })();
    let response = match sent {
        Ok(()) => read_response(&mut stream, deadline)?,
        // The server stopped reading: a server that refuses at the length prefix (an older
        // nullq, or past its drain budget) may have answered `D` before closing, and the answer
        // then already waits in the socket. Read only what is there (a short wait, not a second
        // full timeout on a stalled server), and believe only a refusal: a `K` to a request
        // that was not sent whole cannot be true. Without one, the write's failure stands.
        Err(AttemptError::Broken(why)) => {
            let _ = stream.set_read_timeout(ANSWER_AFTER_FAILED_WRITE);
            let soon = Instant::now() + ANSWER_AFTER_FAILED_WRITE;
            match read_response(&mut stream, soon.min(deadline)) {
                Ok(response) if response.status != Status::Ok => response,
                _ => return Err(AttemptError::Broken(why)),
            }
        }
        Err(e) => return Err(e),
    };
    match response.status {
        Status::Ok => Ok(response.text),
        Status::TempFail => Err(AttemptError::Temporary(response.text)),
        Status::PermFail => Err(AttemptError::Permanent(response.text)),
    }
}

/// Connect to the first address that answers; the last address's error decides 72 or 73.
fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, AttemptError> {
    let mut last = AttemptError::ConnectRejected("the host name has no address".to_owned());
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = AttemptError::ConnectTimeout
            }
            Err(e) => last = AttemptError::ConnectRejected(e.to_string()),
        }
    }
    Err(last)
}

/// Copy exactly `message.len` bytes from the file to the socket in fixed chunks (the RSS of the
/// client does not grow with the message).
fn stream_message(
    message: &mut Spooled<'_>,
    out: &mut impl Write,
    deadline: Instant,
) -> Result<(), AttemptError> {
    let local = |e: io::Error| AttemptError::Local(e.to_string());
    message
        .file
        .seek(SeekFrom::Start(message.offset))
        .map_err(local)?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = message.len;
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        let n = match message.file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(AttemptError::Local(
                    "the message file is shorter than announced".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(local(e)),
        };
        if Instant::now() > deadline {
            return Err(AttemptError::Broken(
                "session took longer than an hour".into(),
            ));
        }
        out.write_all(&buf[..n])
            .map_err(|e| AttemptError::Broken(format!("write: {e}")))?;
        left -= n as u64;
    }
    Ok(())
}

/// How long to look for a refusal already sent after a write failed.
const ANSWER_AFTER_FAILED_WRITE: Duration = Duration::from_secs(1);

/// Read the one response netstring; EOF, a timeout or a malformed answer is a broken
/// conversation ("a response the client did not receive means temporary failure").
fn read_response(stream: &mut impl Read, deadline: Instant) -> Result<Response, AttemptError> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match Response::decode(&buf) {
            Ok(Some((response, _))) => return Ok(response),
            Ok(None) => {}
            Err(e) => return Err(AttemptError::Broken(format!("bad response: {e}"))),
        }
        if buf.len() as u64 > MAX_RESPONSE + 16 || Instant::now() > deadline {
            return Err(AttemptError::Broken("no complete response".into()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(AttemptError::Broken(if buf.is_empty() {
                    "connection closed without a response".into()
                } else {
                    "connection closed in the middle of the response".into()
                }))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AttemptError::Broken(
                    "timed out waiting for the response".into(),
                ))
            }
            Err(e) => return Err(AttemptError::Broken(format!("read: {e}"))),
        }
    }
}
