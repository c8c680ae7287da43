//! Where log lines go: stderr (the default, one line per event), syslog (`/dev/log`, RFC 3164,
//! facility mail) or journald (its native socket). Lines are formatted by `tracing-subscriber`;
//! this module only owns the destinations, so every destination carries the same text. It
//! also says which filters it takes ([`check_log_level`]).

use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use nullq_config::server::LogFormat;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Why a log filter is refused ([`check_log_level`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LogLevelError {
    /// Empty, or only spaces.
    Empty,
    /// tracing-subscriber does not parse it.
    Filter(tracing_subscriber::filter::ParseError),
    /// A bare word (this one) that is not a level: tracing-subscriber would take it for a
    /// target.
    BareWord(String),
}

impl fmt::Display for LogLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HOW: &str = "write a level (error, warn, info, debug, trace, off) or directives \
                           such as \"info,nullq::session=debug\"";
        match self {
            LogLevelError::Empty => write!(f, "empty: write \"info\" for the default"),
            LogLevelError::Filter(e) => write!(f, "not a log filter ({e}): {HOW}"),
            LogLevelError::BareWord(word) => write!(
                f,
                "not a log filter ({word:?} is not a level; a target is written \
                 {word}=LEVEL): {HOW}"
            ),
        }
    }
}

impl std::error::Error for LogLevelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogLevelError::Filter(e) => Some(e),
            LogLevelError::Empty | LogLevelError::BareWord(_) => None,
        }
    }
}

/// A log filter the logger will take as meant: not empty, a filter that tracing-subscriber
/// parses, and no bare word that is not a level. tracing-subscriber reads a bare word such as
/// `verbose` as a target name (everything from a module called `verbose`, nothing else), so a
/// typo would silently log nothing; a target is written `TARGET=LEVEL`. Used for `--log-level`
/// and for the file's `log.level`.
pub fn check_log_level(text: &str) -> Result<(), LogLevelError> {
    if text.trim().is_empty() {
        return Err(LogLevelError::Empty);
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(text) {
        return Err(LogLevelError::Filter(e));
    }
    // Directives are split at every comma, as tracing-subscriber splits them.
    for directive in text.split(',') {
        let word = directive.trim();
        let bare = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':'));
        if bare && word.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(LogLevelError::BareWord(word.to_owned()));
        }
    }
    Ok(())
}

/// Set up logging for the process. `level` is a tracing filter (`info`, `nullq=debug`, ...).
pub fn init(format: &LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let result = match format {
        LogFormat::Stderr => builder.with_writer(io::stderr).try_init(),
        LogFormat::Syslog => builder
            .without_time()
            .with_level(true)
            .with_writer(Datagram::connect(Kind::Syslog))
            .try_init(),
        LogFormat::Journald => builder
            .without_time()
            .with_writer(Datagram::connect(Kind::Journald))
            .try_init(),
    };
    // Already initialised (tests start several servers in one process): keep the first.
    let _ = result;
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Syslog,
    Journald,
}

/// A datagram socket to the system logger; each formatted line is one datagram. If the logger is
/// not there at start, that is said once on stderr and lines go to stderr instead of being lost
/// (a line the logger refuses later goes to stderr too).
#[derive(Debug, Clone)]
struct Datagram {
    kind: Kind,
    socket: Option<Arc<UnixDatagram>>,
}

impl Datagram {
    fn connect(kind: Kind) -> Datagram {
        let path = match kind {
            Kind::Syslog => "/dev/log",
            Kind::Journald => "/run/systemd/journal/socket",
        };
        let (datagram, warning) = Datagram::try_connect(kind, std::path::Path::new(path));
        if let Some(warning) = warning {
            let _ = writeln!(io::stderr(), "{warning}");
        }
        datagram
    }

    #[cfg(test)]
    fn connect_to(kind: Kind, path: &std::path::Path) -> Datagram {
        Datagram::try_connect(kind, path).0
    }

    /// Connect to the logger at `path`; when it cannot be reached, the line to say so.
    fn try_connect(kind: Kind, path: &std::path::Path) -> (Datagram, Option<String>) {
        match UnixDatagram::unbound().and_then(|s| s.connect(path).map(|()| s)) {
            Ok(s) => (
                Datagram {
                    kind,
                    socket: Some(Arc::new(s)),
                },
                None,
            ),
            Err(e) => {
                let e = e.to_string();
                // "No such file or directory (os error 2)": the reason is enough.
                let reason = e.split(" (os error").next().unwrap_or(&e);
                let warning = format!(
                    "nullq: warning: cannot reach {} ({reason}): logging to stderr",
                    path.display()
                );
                (Datagram { kind, socket: None }, Some(warning))
            }
        }
    }
}

/// The syslog severity of an event at `level` (RFC 3164 / RFC 5424 numbers, which journald's
/// `PRIORITY=` uses too): err, warning, info, debug.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The syslog facility mail.
const FACILITY_MAIL: u8 = 2;

/// One log line being formatted; sent when dropped.
struct Line {
    target: Datagram,
    /// The event's syslog severity (see [`severity`]).
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        let severity = self.severity;
        let datagram = match self.target.kind {
            // <PRI> = facility mail (2) * 8 + severity: <19> for an error, <22> for info.
            Kind::Syslog => format!(
                "<{}>nullq[{}]: {text}",
                FACILITY_MAIL * 8 + severity,
                std::process::id()
            ),
            // The native protocol: KEY=VALUE lines; our lines hold no newline.
            Kind::Journald => format!(
                "MESSAGE={}\nPRIORITY={severity}\nSYSLOG_FACILITY={FACILITY_MAIL}\n\
                 SYSLOG_IDENTIFIER=nullq\n",
                text.replace('\n', " ")
            ),
        };
        let sent = self
            .target
            .socket
            .as_ref()
            .map(|s| s.send(datagram.as_bytes()));
        if !matches!(sent, Some(Ok(_))) {
            let _ = writeln!(io::stderr(), "{text}");
        }
    }
}

impl<'a> MakeWriter<'a> for Datagram {
    type Writer = Line;

    /// A line without an event to go by: info.
    fn make_writer(&'a self) -> Line {
        self.line(severity(&Level::INFO))
    }

    /// The formatter asks for a writer per event, with the event's metadata: its level is the
    /// line's priority.
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        self.line(severity(meta.level()))
    }
}

impl Datagram {
    fn line(&self, severity: u8) -> Line {
        Line {
            target: self.clone(),
            severity,
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Show address bytes safely in a log line or an answer: printable ASCII as is, the rest as
/// `\xNN`, so a hostile address cannot forge log lines.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_escaped_as(&mut out, bytes, true);
    out
}

/// [`push_escaped_field`] into a new string: for an address in a tracing event's
/// `key = %value` field, where a space would let its bytes start a field of their own (a
/// recipient `x@y result=delivered` must not read as a second `result=`).
pub fn escape_field(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_escaped_field(&mut out, bytes);
    out
}

/// [`escape`] into `out`, a space written `\x20` too: for a value inside a log line's
/// `key=value` fields, where a space would let a client's bytes start a field of their own
/// (a sender `x answer=K@b` must not read as `answer=K`).
pub fn push_escaped_field(out: &mut String, bytes: &[u8]) {
    push_escaped_as(out, bytes, false);
}

fn push_escaped_as(out: &mut String, bytes: &[u8], space: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        if b.is_ascii_graphic() || (space && b == b' ') {
            out.push(char::from(b));
        } else {
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery line's `rcpt=` field keeps to one field whatever the address holds.
    #[test]
    fn an_address_in_a_field_cannot_start_another() {
        assert_eq!(
            escape_field(b"x@y result=delivered\x1b"),
            "x@y\\x20result=delivered\\x1b"
        );
        assert_eq!(escape(b"a b"), "a b");
    }

    /// Send `line` through a writer for an event at `level`, to a socket of ours standing in for
    /// the logger.
    fn receive(kind: Kind, level: Level, line: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let target = Datagram::connect_to(kind, &path);
        {
            let mut writer = target.line(severity(&level));
            writer.write_all(line).expect("write");
        } // sent on drop
        let mut buf = [0u8; 1024];
        let n = server.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn syslog_lines_are_rfc3164_facility_mail() {
        let pid = std::process::id();
        let got = receive(
            Kind::Syslog,
            Level::INFO,
            b"INFO nullq::session: client=127.0.0.1 answer=K\n",
        );
        assert_eq!(
            got,
            format!("<22>nullq[{pid}]: INFO nullq::session: client=127.0.0.1 answer=K")
        );
        // The priority is the event's: mail (2) * 8 + err (3), warning (4), debug (7).
        for (level, pri) in [
            (Level::ERROR, 19),
            (Level::WARN, 20),
            (Level::INFO, 22),
            (Level::DEBUG, 23),
            (Level::TRACE, 23),
        ] {
            let got = receive(Kind::Syslog, level, b"x: y\n");
            assert_eq!(got, format!("<{pri}>nullq[{pid}]: x: y"), "{level}");
        }
    }

    #[test]
    fn journald_lines_use_the_native_protocol() {
        let got = receive(Kind::Journald, Level::INFO, b"INFO nullq::server: ready\n");
        assert_eq!(
            got,
            "MESSAGE=INFO nullq::server: ready\nPRIORITY=6\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=nullq\n"
        );
        for (level, priority) in [
            (Level::ERROR, 3),
            (Level::WARN, 4),
            (Level::INFO, 6),
            (Level::DEBUG, 7),
            (Level::TRACE, 7),
        ] {
            let got = receive(Kind::Journald, level, b"x: y\n");
            assert_eq!(
                got,
                format!(
                    "MESSAGE=x: y\nPRIORITY={priority}\nSYSLOG_FACILITY=2\n\
                     SYSLOG_IDENTIFIER=nullq\n"
                ),
                "{level}"
            );
        }
    }

    #[test]
    fn a_missing_logger_is_reported_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("no-such-log");
        for kind in [Kind::Syslog, Kind::Journald] {
            let (target, warning) = Datagram::try_connect(kind, &path);
            assert!(target.socket.is_none());
            assert_eq!(
                warning,
                Some(format!(
                    "nullq: warning: cannot reach {} (No such file or directory): logging to \
                     stderr",
                    path.display()
                ))
            );
        }
        let _server = UnixDatagram::bind(&path).expect("bind");
        let (target, warning) = Datagram::try_connect(Kind::Syslog, &path);
        assert!(target.socket.is_some());
        assert_eq!(warning, None);
    }

    /// Through the formatter, which asks `make_writer_for` with each event's metadata.
    #[test]
    fn the_formatter_passes_each_events_level() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_max_level(Level::TRACE)
            .with_writer(Datagram::connect_to(Kind::Syslog, &path))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "nullq::spool", "broken");
            tracing::warn!(target: "nullq::spool", "odd");
            tracing::info!(target: "nullq::spool", "fine");
        });
        let mut buf = [0u8; 1024];
        for (pri, word) in [(19, "ERROR"), (20, "WARN"), (22, "INFO")] {
            let n = server.recv(&mut buf).expect("recv");
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(got.starts_with(&format!("<{pri}>nullq[")), "{got}");
            assert!(got.contains(word), "{got}");
        }
    }
}
