//! Where log lines go: stderr (the default, one line per event), syslog (`/dev/log`, RFC 3164,
//! facility mail) or journald (its native socket). Lines are formatted by `tracing-subscriber`;
//! this module only owns the destinations, so every destination carries the same text.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use nullq_config::server::LogFormat;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

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
/// not there, lines go to stderr instead of being lost.
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
        Datagram::connect_to(kind, std::path::Path::new(path))
    }

    fn connect_to(kind: Kind, path: &std::path::Path) -> Datagram {
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.connect(path).map(|()| s))
            .map(Arc::new)
            .ok();
        Datagram { kind, socket }
    }
}

/// One log line being formatted; sent when dropped.
struct Line {
    target: Datagram,
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
        let datagram = match self.target.kind {
            // <22> = facility mail (2) * 8 + severity info (6).
            Kind::Syslog => format!("<22>nullq[{}]: {text}", std::process::id()),
            // The native protocol: KEY=VALUE lines; our lines hold no newline.
            Kind::Journald => format!(
                "MESSAGE={}\nPRIORITY=6\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=nullq\n",
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

    fn make_writer(&'a self) -> Line {
        Line {
            target: self.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(kind: Kind, line: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let target = Datagram::connect_to(kind, &path);
        {
            let mut writer = target.make_writer();
            writer.write_all(line).expect("write");
        } // sent on drop
        let mut buf = [0u8; 1024];
        let n = server.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn syslog_lines_are_rfc3164_facility_mail() {
        let got = receive(
            Kind::Syslog,
            b"INFO nullq::session: client=127.0.0.1 answer=K\n",
        );
        assert_eq!(
            got,
            format!(
                "<22>nullq[{}]: INFO nullq::session: client=127.0.0.1 answer=K",
                std::process::id()
            )
        );
    }

    #[test]
    fn journald_lines_use_the_native_protocol() {
        let got = receive(Kind::Journald, b"INFO nullq::server: ready\n");
        assert_eq!(
            got,
            "MESSAGE=INFO nullq::server: ready\nPRIORITY=6\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=nullq\n"
        );
    }
}
