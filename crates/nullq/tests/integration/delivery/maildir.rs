//! The delivery runner with its embedded default target, a Maildir in `DATA/delivered`: mail
//! sent to `nullq serve` with no options arrives end to end, at once; messages queued while no
//! runner ran are delivered after a restart; and under load from Postfix's qmqp-source every
//! message arrives exactly once.

use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, message, qmqp_source, send};
use crate::support::server::{queued_files, Server};
use crate::support::{files, maildir_messages, nullq, wait_for, Killed};

const T: Duration = Duration::from_secs(30);

#[test]
fn serve_with_no_options_delivers_into_the_default_maildir() {
    let server = Server::start(&[]);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["bob@example.net", "alice@example.org"],
        &message("first"),
    );
    assert!(is_k(&answer), "{answer}");
    let maildir = server.data.join("delivered");
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 1),
        "not delivered:\n{}",
        server.log_text()
    );
    let got = &maildir_messages(&maildir)[0];
    assert!(got.starts_with("Return-Path: <jason@example.net>\nDelivered-To: bob@example.net\nDelivered-To: alice@example.org\nReceived: "), "{got}");
    assert!(got.ends_with("Subject: first\n\nHello world.\n"), "{got}");
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "message left in the queue"
    );
    assert!(files(&maildir.join("tmp")).is_empty());
    let line = server.wait_log(T, |l| {
        l.contains("rcpt=alice@example.org")
            && l.contains("attempt=1")
            && (l.contains("result=\"delivered\"") || l.contains("result=delivered"))
    });
    assert!(line.is_some(), "{}", server.log_text());
}

#[test]
fn messages_queued_without_a_runner_are_delivered_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut held = Server::start_in(&data, &["--deliver", "none"]);
    for i in 0..5 {
        assert!(is_k(&send(
            held.addr,
            "a@example.net",
            &["b@example.net"],
            &message(&format!("m{i}"))
        )));
    }
    held.kill();
    assert_eq!(queued_files(&data).len(), 5);
    let server = Server::start_in(&data, &[]);
    let maildir = data.join("delivered");
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 5),
        "{}",
        server.log_text()
    );
    assert!(wait_for(T, || server.queued().is_empty()));
    let mut subjects: Vec<String> = maildir_messages(&maildir)
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(str::to_owned)
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Subject: m0",
            "Subject: m1",
            "Subject: m2",
            "Subject: m3",
            "Subject: m4"
        ]
    );
}

#[test]
fn qmqp_source_load_arrives_once_each() {
    let server = Server::start(&[]);
    let n = 500;
    let (status, err) = qmqp_source(
        server.addr,
        &[
            "-s",
            "10",
            "-m",
            &n.to_string(),
            "-l",
            "1024",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
        ],
    );
    assert_eq!(status, Some(0), "{err}");
    let maildir = server.data.join("delivered");
    assert!(
        wait_for(Duration::from_secs(120), || maildir_messages(&maildir)
            .len()
            >= n),
        "{}",
        server.log_text()
    );
    assert!(wait_for(T, || server.queued().is_empty()));
    assert_eq!(maildir_messages(&maildir).len(), n);
}

#[test]
fn nullq_deliver_delivers_what_qmqpd_sessions_queue() {
    // `nullq deliver` beside a spool that another process fills (here: a held `serve`, standing
    // in for qmqpd sessions under tcpserver; both attach to the same spool).
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut held = Server::start_in(&data, &["--deliver", "none"]);
    assert!(is_k(&send(
        held.addr,
        "a@example.net",
        &["b@example.net"],
        &message("before")
    )));
    held.kill();
    let maildir = dir.path().join("md");
    let log = std::fs::File::create(dir.path().join("deliver.log")).expect("log");
    let deliver = Killed::spawn(
        Command::new(nullq())
            .args(["deliver", "--data"])
            .arg(&data)
            .arg("--deliver")
            .arg(format!("maildir:{}", maildir.display()))
            .stderr(log),
    );
    let ok = wait_for(T, || maildir_messages(&maildir).len() == 1);
    // A message that appears in queue/ later is found by the poll.
    let spool = nullq_spool::Spool::attach(&data).expect("attach");
    let mut incoming = spool.receive().expect("receive");
    incoming.write(message("later").as_bytes()).expect("write");
    let env = nullq_spool::Envelope {
        arrival: std::time::SystemTime::now(),
        client_addr: "127.0.0.1".into(),
        client_host: String::new(),
        sender: b"a@example.net".to_vec(),
        recipients: vec![b"c@example.net".to_vec()],
    };
    incoming
        .finish(&env)
        .expect("finish")
        .commit()
        .expect("commit");
    let ok2 = wait_for(T, || maildir_messages(&maildir).len() == 2);
    drop(deliver);
    let text = std::fs::read_to_string(dir.path().join("deliver.log")).unwrap_or_default();
    assert!(ok && ok2, "{text}");
}
