//! qmail-qmqpc against notqmail's, case by case: the exit code for each answer a server may
//! give, for each envelope on fd 1, and for closed descriptors, with what reached the server.
//!
//! Every expected value below was produced by notqmail's qmail-qmqpc (notqmail/notqmail at
//! a7012e4, built from source with conf-qmail set to a scratch directory, `make qmail-qmqpc`),
//! run with the case's message on fd 0 and envelope on fd 1 against a one-connection test
//! server on 127.0.0.9:628 (it takes no port) that answered the case's bytes; the request the
//! server read is the `sent` column. The same comparison was run against the real binary,
//! through the `qmail-qmqpc` name of the nullq binary, for every case here.
//!
//! Where nullq differs on purpose (qmail-qmqpc(8), nullq's man page) the case says how:
//! the answer is parsed as a netstring rather than scanned for its first `K`, `Z` or `D` byte;
//! an envelope without recipients is accepted and sent nowhere (QMQP cannot carry it to nullq's
//! server); an address of 1003 bytes or more is qmail-queue's error 11. With several servers,
//! nullq moves on after a `Z` where qmail-qmqpc stops (`qmqpc::z_then_k_delivers`).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use crate::support::host::{pipe, Host};
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::wait_child;

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"Subject: hi\n\nbody\n";
const ENVELOPE: &[u8] = b"Fjason@example.net\0Tbob@example.net\0\0";

/// What a descriptor of qmail-qmqpc is at start.
#[derive(Clone, Copy)]
enum Fd {
    /// A pipe carrying these bytes, then end of file.
    Pipe(&'static [u8]),
    /// `/dev/null`.
    DevNull,
    /// Closed.
    Closed,
}

/// What reached the server: the sender and recipients of the request it read.
type Sent = Option<(&'static [u8], &'static [&'static [u8]])>;

struct Case {
    name: &'static str,
    message: Fd,
    envelope: Fd,
    /// The server's answer, as bytes on the wire.
    answer: &'static [u8],
    /// qmail-qmqpc's exit code.
    code: i32,
    /// What qmail-qmqpc sent; `None`: it did not connect.
    sent: Sent,
    /// Where nullq differs by design: its exit code, what it sent, and why.
    nullq: Option<(i32, Sent, &'static str)>,
}

const BOB: Sent = Some((b"jason@example.net", &[b"bob@example.net"]));

const CASES: &[Case] = &[
    Case {
        name: "K",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"5:Kok x,",
        code: 0,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "Z",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"6:Zlater,",
        code: 71,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "D",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"5:Dgone,",
        code: 31,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "garbage, then close",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"hello",
        code: 74,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "close without an answer",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"",
        code: 74,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "an empty netstring",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"0:,",
        code: 74,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "an answer that is not K, Z or D",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"5:Xwhat,",
        code: 74,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "a K inside the text",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"3:xKx,",
        code: 0,
        sent: BOB,
        nullq: Some((74, BOB, "the answer is parsed, not scanned for a K")),
    },
    Case {
        name: "a Z inside the text",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"3:xZx,",
        code: 71,
        sent: BOB,
        nullq: Some((74, BOB, "the answer is parsed, not scanned for a Z")),
    },
    Case {
        name: "a D inside the text",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"3:xDx,",
        code: 31,
        sent: BOB,
        nullq: Some((74, BOB, "the answer is parsed, not scanned for a D")),
    },
    Case {
        name: "a bare K",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"Kok",
        code: 0,
        sent: BOB,
        nullq: Some((74, BOB, "a K that is not a netstring is no answer")),
    },
    Case {
        name: "a bare Z",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"Z",
        code: 71,
        sent: BOB,
        nullq: Some((74, BOB, "a Z that is not a netstring is no answer")),
    },
    Case {
        name: "a K netstring cut short",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"12:Kok",
        code: 0,
        sent: BOB,
        nullq: Some((74, BOB, "an answer cut short is no answer")),
    },
    Case {
        name: "envelope cut short after a recipient",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0Tbob@example.net\0"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "envelope cut short in a recipient",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0Tbob@example.net"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "envelope cut short in the sender",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "empty envelope",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b""),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "bytes after the final NUL are not read",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0Tbob@example.net\0\0junk"),
        answer: b"5:Kok x,",
        code: 0,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "a second envelope after the first",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0Tbob@example.net\0\0Teve@example.net\0\0"),
        answer: b"5:Kok x,",
        code: 0,
        sent: BOB,
        nullq: None,
    },
    Case {
        name: "not F first",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Xjason@example.net\0Tbob@example.net\0\0"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "a lone NUL",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"\0"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "not T after F",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0Xbob@example.net\0\0"),
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "the null sender",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"F\0Tbob@example.net\0\0"),
        answer: b"5:Kok x,",
        code: 0,
        sent: Some((b"", &[b"bob@example.net"])),
        nullq: None,
    },
    Case {
        name: "an empty recipient",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0T\0\0"),
        answer: b"5:Kok x,",
        code: 0,
        sent: Some((b"jason@example.net", &[b""])),
        nullq: None,
    },
    Case {
        name: "no recipient",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Pipe(b"Fjason@example.net\0\0"),
        answer: b"5:Kok x,",
        code: 0,
        sent: Some((b"jason@example.net", &[])),
        nullq: Some((0, None, "no recipient: accepted and sent nowhere")),
    },
    Case {
        name: "fd 0 closed",
        message: Fd::Closed,
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"5:Kok x,",
        code: 54,
        sent: None,
        nullq: None,
    },
    Case {
        name: "fd 1 closed",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::Closed,
        answer: b"5:Kok x,",
        code: 54,
        sent: None,
        nullq: None,
    },
    Case {
        name: "fd 1 on /dev/null",
        message: Fd::Pipe(MESSAGE),
        envelope: Fd::DevNull,
        answer: b"5:Kok x,",
        code: 91,
        sent: None,
        nullq: None,
    },
    Case {
        name: "fd 0 on /dev/null: an empty message",
        message: Fd::DevNull,
        envelope: Fd::Pipe(ENVELOPE),
        answer: b"5:Kok x,",
        code: 0,
        sent: BOB,
        nullq: None,
    },
];

/// Run qmail-qmqpc with `message` as fd 0 and `envelope` as fd 1; returns (exit code, stderr).
fn run_qmqpc(host: &Host, message: Fd, envelope: Fd) -> (i32, String) {
    let mut cmd = host.cmd("qmail-qmqpc");
    let mut writers = Vec::new();
    let mut close = Vec::new();
    for (fd, what) in [(0, message), (1, envelope)] {
        let stdio = match what {
            Fd::Pipe(bytes) => {
                let (read, write) = pipe();
                writers.push((fd, bytes, write));
                Stdio::from(read)
            }
            // Opened for reading, as the shell's `</dev/null` and `1</dev/null` do.
            Fd::DevNull => Stdio::from(std::fs::File::open("/dev/null").expect("/dev/null")),
            Fd::Closed => {
                close.push(fd);
                Stdio::null()
            }
        };
        if fd == 0 {
            cmd.stdin(stdio);
        } else {
            cmd.stdout(stdio);
        }
    }
    cmd.stderr(Stdio::piped());
    // SAFETY: the closure only calls close(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &close {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    // As qmail-inject does: the whole message, close fd 0, then the envelope.
    writers.sort_by_key(|w| w.0);
    let writer = thread::spawn(move || {
        for (_, bytes, write) in writers {
            let mut w = std::fs::File::from(write);
            let _ = w.write_all(bytes);
        }
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let code = match wait_child(&mut child, LIMIT) {
        Some(status) => status.code().unwrap_or(-1),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            -2
        }
    };
    let _ = writer.join();
    (code, err.join().unwrap_or_default())
}

#[test]
fn exit_codes_and_requests_match_qmail_qmqpc() {
    let mut failures = Vec::new();
    for case in CASES {
        let host = Host::new();
        let server = QmqpServer::start(Answer::Raw(case.answer));
        host.servers(&[server.addr]);
        let (code, err) = run_qmqpc(&host, case.message, case.envelope);
        let (want_code, want_sent) = match case.nullq {
            Some((code, sent, _)) => (code, sent),
            None => (case.code, case.sent),
        };
        let got = server.received();
        let sent: Vec<(Vec<u8>, Vec<Vec<u8>>)> = got
            .iter()
            .map(|r| (r.sender.clone(), r.recipients.clone()))
            .collect();
        let expected: Vec<(Vec<u8>, Vec<Vec<u8>>)> = want_sent
            .iter()
            .map(|(s, rs)| (s.to_vec(), rs.iter().map(|r| r.to_vec()).collect()))
            .collect();
        let message_ok = got.iter().all(|r| match case.message {
            Fd::Pipe(m) => r.message == m,
            _ => r.message.is_empty(),
        });
        if code != want_code || sent != expected || !message_ok {
            failures.push(format!(
                "{}: qmail-qmqpc {} {:?}, nullq expected {want_code}, got {code} having sent {sent:?} ({})",
                case.name,
                case.code,
                case.sent,
                err.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
