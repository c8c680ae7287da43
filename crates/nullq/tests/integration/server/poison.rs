//! A failed directory fsync under load (issue 10): the spool's committer is poisoned, `nullq
//! serve` logs the failure at ERROR once, stops taking messages and exits non-zero; a message it
//! answered `Z` is never delivered (its file was unlinked from `queue/` before the answer), and
//! every message it answered `K` is delivered exactly once, after a restart without the fault.
//!
//! The fault: `NULLQ_FAULT_DIR_FSYNC=20` (nullq-spool's fault injection, debug builds only)
//! makes the committer's 20th directory fsync fail with EIO, while 8 clients send 50 messages
//! each.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullq_proto::qmqp::encode_request;

use crate::support::qmqp::exchange;
use crate::support::server::{queued_files, tmp_files, Server, LOG_LEVEL};
use crate::support::{files, nullq, wait_child, wait_for};

const CLIENTS: usize = 8;
const EACH: usize = 50;
const FAILING_FSYNC: &str = "20";

/// What a client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    K,
    Z,
    /// No answer, or a connection refused (the server had stopped).
    None,
}

fn answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    match text.split_once(':').map(|(_, rest)| rest.chars().next()) {
        Some(Some('K')) => Answer::K,
        Some(Some('Z')) => Answer::Z,
        Some(Some(other)) => panic!("unexpected answer {other:?}: {text}"),
        _ => Answer::None,
    }
}

/// Subject → how many copies are in the Maildir.
fn delivered(maildir: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for f in files(&maildir.join("new")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        if let Some(s) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *seen.entry(s.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

fn serve_cmd(data: &Path, target: &str, log_level: &str) -> Command {
    let mut cmd = Command::new(nullq());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--error-delay", "0", "--hostname", "mx.test"])
        .args(["--log-level", log_level, "--deliver", target])
        // The fault hits the directory fsync, the last step of a batch flushed file by file.
        .args(["--spool-flush", "files"]);
    cmd
}

#[test]
fn a_failed_directory_fsync_stops_the_server_and_no_z_message_is_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let maildir = dir.path().join("maildir");
    let target = format!("maildir:{}", maildir.display());
    let mut cmd = serve_cmd(&data, &target, LOG_LEVEL);
    cmd.env(nullq_spool::fault::DIR_FSYNC, FAILING_FSYNC);
    let mut server = Server::launch(cmd, &data, &dir.path().join("faulty.log"));
    let armed = format!(
        "fault injection: {}={FAILING_FSYNC}",
        nullq_spool::fault::DIR_FSYNC
    );
    assert!(
        server.log_text().contains(&armed),
        "the fault is not armed (fault injection exists in debug builds only: run the tests \
         without --release); the log:\n{}",
        server.log_text()
    );

    // 8 clients, 50 unique messages each; every answer recorded.
    let addr = server.addr;
    let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let answers = Arc::clone(&answers);
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let subject = format!("poison {c}/{n}");
                    let body = format!("Subject: {subject}\n\n{}\n", "x".repeat(100 + n * 37));
                    let request = encode_request(
                        body.as_bytes(),
                        b"load@example.net",
                        &[b"sink@example.net".to_vec()],
                    );
                    let got = answer(&exchange(addr, &request, Duration::from_secs(60)));
                    answers.lock().expect("lock").insert(subject, got);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let answers = std::mem::take(&mut *answers.lock().expect("lock"));
    let with = |a: Answer| -> Vec<&String> {
        let mut v: Vec<&String> = answers
            .iter()
            .filter(|(_, x)| **x == a)
            .map(|(s, _)| s)
            .collect();
        v.sort();
        v
    };
    let (k, z, none) = (with(Answer::K), with(Answer::Z), with(Answer::None));
    eprintln!(
        "{} answered K, {} Z, {} no answer",
        k.len(),
        z.len(),
        none.len()
    );

    // The server stops by itself, non-zero, having said why at ERROR, once.
    let status = wait_child(&mut server.child, Duration::from_secs(60));
    server.kill(); // reaps (if still running) and waits for the end of its log
    let log = server.log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(111),
        "the poisoned server exits with 111; its log:\n{log}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("spool commit failed"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line for the failure; the log:\n{log}"
    );
    let queue_dir = data.join("queue");
    for part in [
        "directory fsync",
        &queue_dir.display().to_string(),
        "errno=5",
        "Input/output error",
    ] {
        assert!(
            errors[0].contains(part),
            "{part:?} missing in {:?}",
            errors[0]
        );
    }
    eprintln!("{}", errors[0]);
    // 19 fsyncs succeeded before the 20th failed: each acknowledged at least one message.
    assert!(k.len() >= 19, "{} K answers before the failure", k.len());
    assert!(!z.is_empty(), "the failed batch was answered Z");
    assert_eq!(tmp_files(&data), 0, "nothing left in tmp/");

    // Restart without the fault; everything still queued is delivered.
    let server = Server::launch(
        serve_cmd(&data, &target, LOG_LEVEL),
        &data,
        &dir.path().join("clean.log"),
    );
    assert!(
        wait_for(Duration::from_secs(120), || queued_files(&data).is_empty()),
        "the restarted server did not empty the queue: {:?}; its log:\n{}",
        queued_files(&data),
        server.log_text()
    );
    drop(server);

    let seen = delivered(&maildir);
    let twice: Vec<_> = k.iter().filter(|s| seen.get(**s) != Some(&1)).collect();
    assert!(
        twice.is_empty(),
        "K'd messages not delivered exactly once: {:?}",
        twice.iter().map(|s| (s, seen.get(**s))).collect::<Vec<_>>()
    );
    let zs: Vec<_> = z.iter().filter(|s| seen.contains_key(**s)).collect();
    assert!(
        zs.is_empty(),
        "{} messages answered Z were delivered: {zs:?}",
        zs.len()
    );
    let extra: Vec<_> = none
        .iter()
        .filter(|s| seen.get(**s).is_some_and(|n| *n > 1))
        .collect();
    assert!(
        extra.is_empty(),
        "unanswered messages delivered twice: {extra:?}"
    );
    assert_eq!(
        seen.values().sum::<usize>(),
        k.len() + none.iter().filter(|s| seen.contains_key(**s)).count(),
        "nothing else in the Maildir"
    );
}

/// The runner's own commit can fail too (here: the bounce of a message the pipe refused, the
/// committer's second directory fsync). No session is there to see it: the server still says
/// so at ERROR and stops with 111, without waiting for a client.
#[test]
fn a_failed_commit_of_the_runner_stops_the_server_without_any_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = serve_cmd(&data, "pipe:/bin/false", LOG_LEVEL);
    cmd.env(nullq_spool::fault::DIR_FSYNC, "2");
    let mut server = Server::launch(cmd, &data, &dir.path().join("bounce.log"));
    let request = encode_request(
        b"Subject: refused by the pipe\n\nx\n",
        b"jason@example.net",
        &[b"bob@example.net".to_vec()],
    );
    let got = answer(&exchange(server.addr, &request, Duration::from_secs(60)));
    assert_eq!(
        got,
        Answer::K,
        "the first commit is fine; {}",
        server.log_text()
    );
    let status = wait_child(&mut server.child, Duration::from_secs(60));
    server.kill();
    let log = server.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(111), "{log}");
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("spool commit failed"))
        .count();
    assert_eq!(errors, 1, "{log}");
}

/// The safety net for a message whose announcement was lost: `nullq serve`'s runner rescans
/// `queue/` every `delivery.rescan_secs` (60; 1 here). A message committed behind its back
/// (another process, no trigger pulled) is delivered by that rescan.
#[test]
fn serve_rescans_the_queue_and_delivers_what_it_was_not_told_of() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let maildir = dir.path().join("maildir");
    let target = format!("maildir:{}", maildir.display());
    let cfg = crate::support::write_file(dir.path(), "nullq.toml", "[delivery]\nrescan_secs = 1\n");
    let mut cmd = serve_cmd(&data, &target, "info,nullq::delivery=debug");
    cmd.arg("--config").arg(&cfg);
    let server = Server::launch(cmd, &data, &dir.path().join("serve.log"));
    // After its start-up scan: only a rescan can find what is committed now.
    assert!(server
        .wait_log(Duration::from_secs(60), |l| l
            .contains("delivery runner started"))
        .is_some());
    let spool = nullq_spool::Spool::attach(&data).expect("attach");
    let mut incoming = spool.receive().expect("receive");
    incoming
        .write(b"Subject: behind its back\n\nhello\n")
        .expect("write");
    let envelope = nullq_spool::Envelope {
        arrival: std::time::SystemTime::now(),
        client_addr: "192.0.2.7:4711".into(),
        client_host: String::new(),
        sender: b"a@example.net".to_vec(),
        recipients: vec![b"b@example.net".to_vec()],
    };
    let renamed = incoming.finish(&envelope).expect("finish");
    renamed.commit().expect("commit");
    let rescanned = server.wait_log(Duration::from_secs(90), |l| {
        l.contains("queue rescanned (every 1s)")
    });
    assert!(
        rescanned.is_some(),
        "no rescan; the log:\n{}",
        server.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(30), || delivered(&maildir)
            .get("behind its back")
            == Some(&1)),
        "the rescan did not deliver it; the log:\n{}",
        server.log_text()
    );
    // Delivered into the Maildir first, then removed from the queue: wait for the removal.
    assert!(wait_for(Duration::from_secs(30), || queued_files(&data).is_empty()));
}
