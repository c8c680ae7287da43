//! Failure cases of the delivery half: `kill -9` of the server in the middle of delivering
//! 1,000 messages, then a restart (every message delivered at least once; counted exactly,
//! duplicates reported); `kill -9` caught in the middle of one Maildir write (the restarted
//! runner removes the dead writer's file from tmp/); and the disk filling up while receiving
//! (the client gets `Z`, and only messages answered `K` are ever delivered, each whole).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::qmqp::{is_k, send};
use crate::support::server::{queued_files, Server};
use crate::support::{files, wait_for, write_file, LoopFs};

fn subjects(maildir: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for f in files(&maildir.join("new")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        if let Some(s) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *seen.entry(s.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn kill_9_mid_delivery_of_1000_messages_then_restart_loses_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let maildir = dir.path().join("maildir");
    let n = 1000;
    // 1. Queue 1000 messages with no runner (10 clients at once).
    let mut held = Server::start_in(&data, &["--deliver", "none"]);
    let addr = held.addr;
    let threads: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                (0..n / 10)
                    .filter(|i| {
                        let m = format!(
                            "From: a@example.net\nSubject: crash-{t}-{i}\n\nbody {t} {i}\n"
                        );
                        is_k(&send(addr, "a@example.net", &["b@example.net"], &m))
                    })
                    .count()
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    assert_eq!(accepted, n);
    held.kill();
    // 2. Deliver one at a time, and kill -9 the server in the middle.
    let cfg = one_at_a_time(dir.path(), &maildir);
    let mut server = Server::start_in(&data, &["--config", &cfg]);
    assert!(
        wait_for(Duration::from_secs(60), || files(&maildir.join("new"))
            .len()
            >= 100),
        "{}",
        server.log_text()
    );
    server.kill(); // SIGKILL
    let before = files(&maildir.join("new")).len();
    let queued_at_kill = queued_files(&data).len();
    // 3. Restart (at the default concurrency: duplicates come only from what was in flight at
    // the kill): everything left is delivered.
    let server = Server::start_in(
        &data,
        &["--deliver", &format!("maildir:{}", maildir.display())],
    );
    assert!(
        wait_for(Duration::from_secs(300), || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    let seen = subjects(&maildir);
    let total: usize = seen.values().sum();
    let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    eprintln!(
        "kill -9 test: {before} delivered before the kill, {queued_at_kill} still queued at the kill; \
         after restart {} distinct messages, {total} deliveries, {} duplicated: {duplicates:?}",
        seen.len(),
        total - seen.len()
    );
    assert!(
        before < n,
        "the kill came after the last delivery; the test proved nothing"
    );
    for t in 0..10 {
        for i in 0..n / 10 {
            assert!(
                seen.contains_key(&format!("crash-{t}-{i}")),
                "crash-{t}-{i} lost"
            );
        }
    }
    assert_eq!(seen.len(), n);
    // At most the one delivery in flight at the kill is repeated (concurrency 1).
    assert!(total - seen.len() <= 1, "{duplicates:?}");
    assert!(files(&maildir.join("tmp")).is_empty());
}

/// Whether every thread of process `pid` is stopped (state `T` in /proc/PID/task/*/stat).
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                // The state follows the command name in parentheses, which may hold blanks.
                let after = s.rsplit_once(')')?.1;
                after
                    .split_whitespace()
                    .next()
                    .map(|st| st == "T" || st == "t")
            })
            .unwrap_or(false)
    })
}

/// A configuration that delivers one message at a time into `maildir`; returns its path.
fn one_at_a_time(dir: &Path, maildir: &Path) -> String {
    let text = format!(
        "[delivery]\nconcurrency = 1\ntarget = \"maildir:{}\"\n",
        maildir.display()
    );
    let cfg = write_file(dir, "nullq.toml", &text);
    cfg.to_str().expect("utf8").to_owned()
}

/// The server is frozen (SIGSTOP) the moment a file shows in the Maildir's tmp/; if the file
/// is still there once it is frozen, the delivery is caught in the middle of its write, and
/// `kill -9` hits it there. A delivery that finished before the freeze is let go (SIGCONT)
/// and the next one is tried: each message is 16 MB, so its write takes far longer than the
/// freeze, and one of eight is caught.
#[test]
fn kill_9_in_the_middle_of_a_maildir_write_leaves_nothing_in_tmp_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let maildir = dir.path().join("maildir");
    let n = 8;
    let big = ["--databytes", "100000000"];
    let held = Server::start_in(&data, &[&["--deliver", "none"][..], &big].concat());
    let line = "y".repeat(79) + "\n";
    for i in 0..n {
        let m = format!(
            "From: a@example.net\nSubject: big-{i}\n\n{}END-OF-MESSAGE {i}\n",
            line.repeat(200_000)
        );
        let answer = send(held.addr, "a@example.net", &["b@example.net"], &m);
        assert!(is_k(&answer), "{answer}");
    }
    drop(held);
    let cfg = one_at_a_time(dir.path(), &maildir);
    let mut server = Server::start_in(&data, &[&["--config", cfg.as_str()][..], &big].concat());
    let tmp = maildir.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(300);
    let caught = loop {
        if !files(&tmp).is_empty() {
            server.signal(libc::SIGSTOP);
            // kill(2) returns before every thread has stopped: wait until they all have, so
            // that the look at tmp/ below sees a frozen state.
            assert!(
                wait_for(Duration::from_secs(60), || stopped(server.pid())),
                "the server did not stop"
            );
            if !files(&tmp).is_empty() {
                break true;
            }
            server.signal(libc::SIGCONT);
        }
        if server.queued().is_empty() || Instant::now() > deadline {
            break false;
        }
        std::thread::yield_now();
    };
    assert!(caught, "no delivery was caught in the middle of its write");
    server.kill(); // SIGKILL ends a stopped process too
    let left = files(&tmp);
    assert_eq!(
        left.len(),
        1,
        "the killed delivery's file is in tmp/: {left:?}"
    );
    let delivered_before = files(&maildir.join("new")).len();
    assert!(delivered_before < n);

    let server = Server::start_in(&data, &[&["--config", cfg.as_str()][..], &big].concat());
    assert!(
        wait_for(Duration::from_secs(300), || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    assert!(
        files(&tmp).is_empty(),
        "the dead writer's file is still in tmp/: {:?}\n{}",
        files(&tmp),
        server.log_text()
    );
    let seen = subjects(&maildir);
    for i in 0..n {
        assert!(seen.contains_key(&format!("big-{i}")), "big-{i} lost");
    }
    for f in files(&maildir.join("new")) {
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(
            text.contains("\nEND-OF-MESSAGE "),
            "{} is not whole",
            f.display()
        );
    }
}

#[test]
fn disk_full_while_receiving_answers_z_and_only_acknowledged_mail_is_delivered() {
    let tiny = LoopFs::new(8);
    let outside = tempfile::tempdir().expect("tempdir");
    let maildir = outside.path().join("maildir");
    let data = tiny.mount.join("data");
    let mut held = Server::start_in(&data, &["--deliver", "none"]);
    let body = Arc::new("x".repeat(79) + "\n");
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for i in 0..200 {
        let m = format!(
            "From: a@example.net\nSubject: full-{i}\n\n{}END-OF-MESSAGE {i}\n",
            body.repeat(4000)
        );
        let answer = send(held.addr, "a@example.net", &["b@example.net"], &m);
        if is_k(&answer) {
            acknowledged.push(i);
        } else {
            assert!(
                answer.contains(":Z") && answer.contains("disk is full"),
                "{answer}"
            );
            refused.push(i);
            if refused.len() >= 3 {
                break;
            }
        }
    }
    assert!(!refused.is_empty(), "the disk never filled up");
    assert!(!acknowledged.is_empty());
    assert!(
        files(&data.join("tmp")).is_empty(),
        "half-written files left in tmp/"
    );
    held.kill();
    // Restart with delivery to a Maildir outside the full disk.
    let server = Server::start_in(
        &data,
        &["--deliver", &format!("maildir:{}", maildir.display())],
    );
    assert!(
        wait_for(Duration::from_secs(60), || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    let seen = subjects(&maildir);
    let mut got: Vec<usize> = seen
        .keys()
        .filter_map(|s| s.strip_prefix("full-")?.parse().ok())
        .collect();
    got.sort_unstable();
    assert_eq!(got, acknowledged, "delivered = acknowledged, exactly");
    for f in files(&maildir.join("new")) {
        let text = std::fs::read_to_string(&f).expect("read");
        let i = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: full-"))
            .unwrap_or("?")
            .to_owned();
        assert!(
            text.ends_with(&format!("END-OF-MESSAGE {i}\n")),
            "message {i} is not whole"
        );
    }
    drop(server);
}
