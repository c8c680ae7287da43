//! The client's syslog line, one per message, read from a datagram socket of the test that is
//! `/dev/log` in the program's mount namespace: sent (mail.info), kept in the fallback queue
//! (mail.info), failed with the program's exit code (mail.err), and `control/syslog` off.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::RefusedPort;

const LIMIT: Duration = Duration::from_secs(60);

/// The test's stand-in for /dev/log.
struct LogSocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl LogSocket {
    fn new(host: &Host) -> LogSocket {
        let path = host.dir.path().join("log.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the log socket");
        socket.set_nonblocking(true).expect("non-blocking");
        LogSocket { path, socket }
    }

    /// Every line written so far. The programs have exited when this is called, and a unix
    /// datagram is in the receive queue once sendto returns: nothing to wait for.
    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.socket.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        lines
    }
}

/// Run program `name` with `/dev/log` being the test's socket.
fn logged(host: &Host, log: &LogSocket, name: &str, args: &[&str], input: &[u8]) -> (i32, String) {
    let mut cmd = in_namespace(host, name, &[("/dev/log", &log.path)]);
    cmd.args(args);
    let out = run(cmd, input, LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `<PRI>Mmm dd hh:mm:ss PROGRAM[PID]: TEXT` → (PRI, PROGRAM, TEXT), checking the shape.
fn parse(line: &str) -> (u8, String, String) {
    let (pri, rest) = line[1..].split_once('>').expect("<PRI>");
    assert!(line.starts_with('<'), "{line}");
    // "Mmm dd hh:mm:ss " is 16 bytes.
    let stamp = &rest[..16];
    assert_eq!(stamp.as_bytes()[3], b' ', "{line}");
    assert_eq!(&stamp[9..10], ":", "{line}");
    let (tag, text) = rest[16..].split_once("]: ").expect("PROGRAM[PID]: ");
    let (program, pid) = tag.split_once('[').expect("[PID]");
    assert!(pid.parse::<u32>().is_ok(), "{line}");
    (
        pri.parse().expect("PRI"),
        program.to_owned(),
        text.to_owned(),
    )
}

#[test]
fn sent_is_one_mail_info_line_with_the_server_and_its_answer() {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    let log = LogSocket::new(&host);
    let (code, err) = logged(&host, &log, "sendmail", &["bob"], b"Subject: hi\n\nhello\n");
    assert_eq!(code, 0, "{err}");
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (pri, program, text) = parse(&lines[0]);
    assert_eq!((pri, program.as_str()), (22, "sendmail"), "{text}");
    assert!(
        text.starts_with(&format!("sent to {} answer K", server.addr)),
        "{text}"
    );
    assert!(
        text.contains(": from=<jason@example.net> rcpts=1 size="),
        "{text}"
    );
}

#[test]
fn queued_and_failed_lines() {
    let host = Host::new();
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let log = LogSocket::new(&host);

    // No fallback queue: failed, with sendmail's exit code, at mail.err.
    let (code, _) = logged(&host, &log, "sendmail", &["bob"], b"Subject: hi\n\nhello\n");
    assert_eq!(code, 111);
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (pri, program, text) = parse(&lines[0]);
    assert_eq!((pri, program.as_str()), (19, "sendmail"), "{text}");
    assert!(text.starts_with("failed (exit 111): "), "{text}");
    assert!(text.contains(&down.addr.to_string()), "{text}");

    // qmail-qmqpc says its own code (73: connection refused) under its own name.
    let cmd = in_namespace(&host, "qmail-qmqpc", &[("/dev/log", &log.path)]);
    let (code, err) = run_queue_cmd(
        cmd,
        b"Subject: hi\n\nhello\n",
        b"Fjason@example.net\0Tbob@example.net\0\0",
        LIMIT,
    );
    assert_eq!(code, 73, "{err}");
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (pri, program, text) = parse(&lines[0]);
    assert_eq!((pri, program.as_str()), (19, "qmail-qmqpc"), "{text}");
    assert!(text.starts_with("failed (exit 73): "), "{text}");
    assert!(
        text.ends_with("from=<jason@example.net> rcpts=1 size=19"),
        "{text}"
    );

    // With a fallback queue: queued, at mail.info.
    host.control("fallbackqueue", "fallback");
    let (code, err) = logged(
        &host,
        &log,
        "qmail-inject",
        &["bob"],
        b"Subject: hi\n\nhello\n",
    );
    assert_eq!(code, 0, "{err}");
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (pri, program, text) = parse(&lines[0]);
    assert_eq!((pri, program.as_str()), (22, "qmail-inject"), "{text}");
    let dir = host.home().join("fallback");
    assert!(
        text.starts_with(&format!(
            "queued in the fallback queue {} as ",
            dir.display()
        )),
        "{text}"
    );
    assert!(text.contains("rcpts=1"), "{text}");
}

#[test]
fn control_syslog_off_writes_nothing() {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    host.control("syslog", "off");
    let log = LogSocket::new(&host);
    let (code, err) = logged(&host, &log, "sendmail", &["bob"], b"Subject: hi\n\nhello\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.received().len(), 1);
    assert_eq!(log.lines(), Vec::<String>::new());
    // And back on: the same run logs (the socket works, so "nothing" above meant off).
    host.control("syslog", "on");
    let (code, err) = logged(&host, &log, "sendmail", &["bob"], b"Subject: hi\n\nhello\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(log.lines().len(), 1);
}
