//! `nullq qmqpd` against qmail-qmqpd, case by case: the Received line for every set of
//! tcpserver variables, and the answer to each kind of request.
//!
//! Every expected value below was produced by notqmail's qmail-qmqpd (notqmail/notqmail at
//! a7012e4, built from source with conf-qmail set to a scratch directory, `make qmail-qmqpd`),
//! run with exactly the case's variables (`env -i VAR=... qmail-qmqpd < request`) and
//! `QMAILQUEUE` naming a script that kept the message it was handed; only the date after
//! `with QMQP; ` is replaced by `DATE`, here and in what nullq writes. The same comparison was
//! run against the real binary, through `nullq qmqpd`, for every case here.
//!
//! tcpserver's options only decide which variables are set, so each case is a set of variables:
//! `-H` leaves TCPREMOTEHOST unset (`-h`, the default, sets it from DNS when the address has a
//! name), `-R` leaves TCPREMOTEINFO unset (without it, it is set when the client's identd
//! answers), `-l NAME` sets TCPLOCALHOST to NAME (`-l 0` leaves it unset, as does a failed DNS
//! lookup), and TCPREMOTEIP, TCPLOCALIP and the ports are always set. Run under the real
//! tcpserver (`-H -R -l mx.test`), nullq qmqpd is in `tcpserver::`.
//!
//! Above qmail-qmqpd's line, the qmail-queue it runs writes `Received: (qmail PID invoked from
//! network); DATE`; nullq, doing both jobs, writes `(nullq PID invoked from network)` there
//! (README, *Answers* and *Received lines*).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
use std::time::Duration;

use nullq_proto::qmqp::encode_request;
use nullq_spool::Spool;

use crate::support::host::run;
use crate::support::nullq;
use crate::support::qmqp::queue_id;
use crate::support::server::queued_files;

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"Subject: hi\n\nbody\n";

struct ReceivedCase {
    name: &'static str,
    env: &'static [(&'static str, &'static [u8])],
    /// qmail-qmqpd's Received line, its date replaced by `DATE`.
    received: &'static [u8],
}

const RECEIVED: &[ReceivedCase] = &[
    ReceivedCase {
        name: "every variable",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", b"lou.example.net"),
            ("TCPREMOTEINFO", b"joe"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from lou.example.net (joe@1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "-R: no TCPREMOTEINFO",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", b"lou.example.net"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from lou.example.net (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "-H -R: no TCPREMOTEHOST",
        env: &[("TCPREMOTEIP", b"1.2.3.4"), ("TCPLOCALHOST", b"mail.example.net")],
        received: b"Received: from unknown (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "empty TCPREMOTEINFO",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEINFO", b""),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from unknown (@1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "-l 0: TCPLOCALIP instead",
        env: &[("TCPREMOTEIP", b"1.2.3.4"), ("TCPLOCALIP", b"10.0.0.1")],
        received: b"Received: from unknown (1.2.3.4)\n  by 10.0.0.1 with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPLOCALHOST before TCPLOCALIP",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPLOCALIP", b"10.0.0.1"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from unknown (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "no local variable",
        env: &[("TCPREMOTEIP", b"1.2.3.4")],
        received: b"Received: from unknown (1.2.3.4)\n  by unknown with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "no TCPREMOTEIP",
        env: &[
            ("TCPREMOTEHOST", b"lou.example.net"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from lou.example.net (unknown)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "no variable at all",
        env: &[],
        received: b"Received: from unknown (unknown)\n  by unknown with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "unsafe bytes in TCPREMOTEHOST",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", b"evil host(x)\nX-Evil: 1"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from evil?host?x??X-Evil:?1 (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPREMOTEHOST not UTF-8",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", b"caf\xe9.example"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from caf?.example (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPREMOTEHOST in UTF-8: a ? a byte",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", "café.example".as_bytes()),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from caf??.example (1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "unsafe bytes in TCPREMOTEINFO",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEINFO", b"joe smith"),
            ("TCPLOCALHOST", b"mail.example.net"),
        ],
        received: b"Received: from unknown (joe?smith@1.2.3.4)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPREMOTEINFO not UTF-8",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEINFO", b"\xff\xfe"),
            ("TCPLOCALHOST", b"mx.test"),
        ],
        received: b"Received: from unknown (??@1.2.3.4)\n  by mx.test with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPREMOTEIP written as it is",
        env: &[("TCPREMOTEIP", b"1.2.3.4 evil"), ("TCPLOCALHOST", b"mail.example.net")],
        received: b"Received: from unknown (1.2.3.4?evil)\n  by mail.example.net with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPREMOTEIP not a parsable address",
        env: &[("TCPREMOTEIP", b"0127.000.000.001"), ("TCPLOCALHOST", b"mx.test")],
        received: b"Received: from unknown (0127.000.000.001)\n  by mx.test with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "empty TCPREMOTEHOST and TCPLOCALHOST",
        env: &[
            ("TCPREMOTEIP", b"1.2.3.4"),
            ("TCPREMOTEHOST", b""),
            ("TCPLOCALHOST", b""),
        ],
        received: b"Received: from  (1.2.3.4)\n  by  with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "IPv6",
        env: &[
            ("TCPREMOTEIP", b"::1"),
            ("TCPREMOTEHOST", b"localhost"),
            ("TCPLOCALHOST", b"mx.test"),
        ],
        received: b"Received: from localhost (::1)\n  by mx.test with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "TCPLOCALHOST not UTF-8",
        env: &[("TCPREMOTEIP", b"1.2.3.4"), ("TCPLOCALHOST", b"m\xe9x")],
        received: b"Received: from unknown (1.2.3.4)\n  by m?x with QMQP; DATE\n",
    },
    ReceivedCase {
        name: "tcpserver -H -R -l 0 on loopback: ports too",
        env: &[
            ("TCPREMOTEIP", b"127.0.0.1"),
            ("TCPREMOTEPORT", b"40000"),
            ("TCPLOCALIP", b"127.0.0.1"),
            ("TCPLOCALPORT", b"628"),
        ],
        received: b"Received: from unknown (127.0.0.1)\n  by 127.0.0.1 with QMQP; DATE\n",
    },
];

/// Run `nullq qmqpd` on `request` with exactly `env` (and a spool in `data`); returns its answer.
fn qmqpd(data: &std::path::Path, env: &[(&str, &[u8])], request: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new(nullq());
    cmd.env_clear()
        .args(["qmqpd", "--error-delay", "0", "--data"])
        .arg(data);
    for (name, value) in env {
        cmd.env(name, OsString::from_vec(value.to_vec()));
    }
    let out = run(cmd, request, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Each date of a Received field (after `; ` to the end of its line) as `DATE`, once it is
/// checked to be in qmail's form (`1 Dec 2026 12:10:10 -0000`).
fn normalise_dates(lines: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(lines);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.rsplit_once("; ") {
            Some((head, date)) => {
                let fields: Vec<&str> = date.split_whitespace().collect();
                assert!(
                    fields.len() == 5 && fields[4] == "-0000" && fields[3].len() == 8,
                    "not qmail's date form: {date:?}"
                );
                out.push_str(head);
                out.push_str("; DATE\n");
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}

#[test]
fn received_lines_match_qmail_qmqpd() {
    let request = encode_request(
        MESSAGE,
        b"jason@example.net",
        &[b"bob@example.net".to_vec()],
    );
    let mut failures = Vec::new();
    for case in RECEIVED {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let answer = qmqpd(&data, case.env, &request);
        let Some(id) = queue_id(&answer) else {
            failures.push(format!(
                "{}: answer {:?}",
                case.name,
                String::from_utf8_lossy(&answer)
            ));
            continue;
        };
        assert_eq!(queued_files(&data).len(), 1, "{}", case.name);
        let spool = Spool::attach(&data).expect("attach spool");
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut spool.message(&id).expect("message"), &mut stored)
            .expect("read message");
        let Some(head) = stored.strip_suffix(MESSAGE) else {
            failures.push(format!("{}: message changed: {stored:?}", case.name));
            continue;
        };
        let head = normalise_dates(head);
        let queue_line = b"Received: (nullq ";
        let Some(split) = head.iter().position(|&b| b == b'\n').map(|n| n + 1) else {
            failures.push(format!("{}: no Received lines", case.name));
            continue;
        };
        let (first, qmqpd_line) = head.split_at(split);
        if !first.starts_with(queue_line) || !first.ends_with(b" invoked from network); DATE\n") {
            failures.push(format!(
                "{}: qmail-queue's line: {:?}",
                case.name,
                String::from_utf8_lossy(first)
            ));
        }
        if qmqpd_line != case.received {
            failures.push(format!(
                "{}:\n  qmail-qmqpd: {:?}\n  nullq:       {:?}",
                case.name,
                String::from_utf8_lossy(case.received),
                String::from_utf8_lossy(qmqpd_line)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What qmail-qmqpd answered a request, and what nullq answers where it differs on purpose.
struct AnswerCase {
    name: &'static str,
    request: fn() -> Vec<u8>,
    /// qmail-qmqpd's answer: the netstring's text, `K` answers up to `Kok ` (a time and a
    /// number follow), or empty when it closed without answering.
    qmail: &'static str,
    /// nullq's answer where it differs by design (README, *Answers*): its start.
    nullq: Option<&'static str>,
}

fn good() -> Vec<u8> {
    encode_request(
        MESSAGE,
        b"jason@example.net",
        &[b"bob@example.net".to_vec()],
    )
}

const ANSWERS: &[AnswerCase] = &[
    AnswerCase {
        name: "a good request",
        request: good,
        qmail: "Kok ",
        nullq: None,
    },
    AnswerCase {
        name: "the null sender",
        request: || encode_request(MESSAGE, b"", &[b"bob@example.net".to_vec()]),
        qmail: "Kok ",
        nullq: None,
    },
    AnswerCase {
        name: "an address of 1002 bytes",
        request: || {
            let mut long = vec![b'a'; 990];
            long.extend_from_slice(b"@example.net");
            encode_request(MESSAGE, b"jason@example.net", &[long])
        },
        qmail: "Dsorry, I can't accept addresses like that (#5.1.3)",
        nullq: Some("Dsorry, address of 1002 bytes is over the limit of 999 bytes"),
    },
    AnswerCase {
        name: "NUL in an address",
        request: || {
            encode_request(
                MESSAGE,
                b"jason@example.net",
                &[b"bob\0@example.net".to_vec()],
            )
        },
        qmail: "Dsorry, I can't accept addresses like that (#5.1.3)",
        nullq: Some("Dsorry, I can't accept addresses like <bob\\x00@example.net>"),
    },
    AnswerCase {
        name: "no recipient",
        request: || encode_request(MESSAGE, b"jason@example.net", &[]),
        qmail: "Kok ",
        nullq: Some("Dsorry, request has no recipient"),
    },
    AnswerCase {
        name: "not a netstring",
        request: || b"hello world".to_vec(),
        qmail: "",
        nullq: Some("Dsorry, netstring length expected"),
    },
    AnswerCase {
        name: "a leading zero",
        request: || b"045:0:,17:jason@example.net,17:jason@example.net,,".to_vec(),
        qmail: "Kok ",
        nullq: Some("Dsorry, netstring length has a leading zero"),
    },
    AnswerCase {
        name: "cut short",
        request: || good()[..30].to_vec(),
        qmail: "",
        nullq: None,
    },
];

/// The text of a QMQP answer netstring (or the bytes as they are when it is not one).
fn answer_text(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer).into_owned();
    match text.split_once(':') {
        Some((_, rest)) => rest.strip_suffix(',').unwrap_or(rest).to_owned(),
        None => text,
    }
}

#[test]
fn answers_match_qmail_qmqpd_or_differ_as_documented() {
    let env: &[(&str, &[u8])] = &[("TCPREMOTEIP", b"1.2.3.4")];
    let mut failures = Vec::new();
    for case in ANSWERS {
        let dir = tempfile::tempdir().expect("tmp");
        let answer = answer_text(&qmqpd(&dir.path().join("data"), env, &(case.request)()));
        let expected = case.nullq.unwrap_or(case.qmail);
        let ok = if expected.is_empty() {
            answer.is_empty()
        } else {
            answer.starts_with(expected)
        };
        if !ok {
            failures.push(format!(
                "{}: expected {expected:?} (qmail-qmqpd: {:?}), got {answer:?}",
                case.name, case.qmail
            ));
        }
        if let Some(k) = answer.strip_prefix("Kok ") {
            // qmail's `Kok <unix time> qp <number>`; nullq's number is its queue id.
            let fields: Vec<&str> = k.split(' ').collect();
            if fields.len() != 3 || fields[0].parse::<u64>().is_err() || fields[1] != "qp" {
                failures.push(format!("{}: not qmail's K form: {answer:?}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
