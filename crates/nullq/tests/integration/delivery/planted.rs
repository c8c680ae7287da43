//! Files planted in the spool where messages and their states belong: FIFOs, symlinks and
//! sockets at `queue/ID` and `state/ID`. Only root and the spool's owner can write there, so
//! these are an operator's mistake or a compromised owner, not a local user's attack; either
//! way they must cost one ERROR line each and a move to `corrupt/`, never a thread or a
//! process waiting on a FIFO for good, a read of `/dev/zero` without end, or a retry loop.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use nullq_spool::{Envelope, Spool};

use crate::support::qmqp::{is_k, message, send};
use crate::support::server::Server;
use crate::support::{maildir_messages, nullq, run_bounded, sh, wait_for};

const T: Duration = Duration::from_secs(30);

/// The kind of what `path` is (not following a symlink), for the assertions' messages.
fn kind(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .file_type()
}

/// Queues a message through `spool` (attached from this process) after planting at its
/// `state/ID`, before the message is committed, what `plant` makes there. Returns the id.
fn queue_with_planted_state(spool: &Spool, text: &str, plant: impl Fn(&Path)) -> String {
    let mut incoming = spool.receive().expect("receive");
    let id = incoming.id().to_string();
    plant(&spool.root().join("state").join(&id));
    incoming.write(message(text).as_bytes()).expect("write");
    let envelope = Envelope {
        arrival: SystemTime::now(),
        client_addr: "127.0.0.1:4711".into(),
        client_host: String::new(),
        sender: b"planted@example.net".to_vec(),
        recipients: vec![b"bob@example.net".to_vec()],
    };
    incoming
        .finish(&envelope)
        .expect("finish")
        .commit()
        .expect("commit");
    id
}

fn mkfifo(path: &Path) {
    sh(&format!("mkfifo {}", path.display()));
}

/// FIFOs, a symlink and a socket in `queue/` under queue ids are found not to be messages and
/// set aside, one ERROR line each: opening a FIFO never waits for a writer (so neither the
/// rescan nor the loader threads hang, and more of them than there are loader threads hold up
/// no other message), a symlink is not followed and a socket not retried, and the server still
/// stops at once.
#[test]
fn fifos_symlinks_and_sockets_in_the_queue_are_set_aside_without_holding_up_delivery() {
    let mut server = Server::start(&[]);
    let maildir = server.data.join("delivered");
    let queue = server.data.join("queue");
    // The oldest ids there are: the rescan takes them first.
    let fifos: Vec<String> = (1..=6)
        .map(|i| format!("0000000000000001.00000001.{i:08x}"))
        .collect();
    for name in &fifos {
        mkfifo(&queue.join(name));
    }
    let link = "0000000000000001.00000002.00000001";
    std::os::unix::fs::symlink(server.data.join("nowhere"), queue.join(link)).expect("symlink");
    let socket = "0000000000000001.00000002.00000002";
    let _listener = std::os::unix::net::UnixListener::bind(queue.join(socket)).expect("bind");
    // A rescan opens every queued file.
    server.signal(libc::SIGUSR1);
    for i in 0..3 {
        let answer = send(
            server.addr,
            "jason@example.net",
            &["bob@example.net"],
            &message(&format!("after the fifos {i}")),
        );
        assert!(is_k(&answer), "{answer}");
    }
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 3),
        "not delivered:\n{}",
        server.log_text()
    );
    let set_aside = server.wait_log_count(T, 8, |l| {
        l.contains("found corrupt") && l.contains("not a regular file")
    });
    assert_eq!(set_aside.len(), 8, "{}", server.log_text());
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{:?}",
        server.queued()
    );
    let corrupt = server.data.join("corrupt");
    for name in &fifos {
        assert!(
            kind(&corrupt.join(name)).is_fifo(),
            "{name} moved as it was"
        );
    }
    assert!(kind(&corrupt.join(link)).is_symlink());
    assert!(kind(&corrupt.join(socket)).is_socket());
    // Nothing is left in queue/ for those ids, so no attempt can log them again: one line each.
    let log = server.log_text();
    for name in [link, socket] {
        let lines = log.lines().filter(|l| l.contains(name)).count();
        assert_eq!(lines, 1, "{name}:\n{log}");
    }
    let status = server.terminate(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        server.log_text()
    );
}

/// FIFOs (more than there are loader threads) and a symlink to `/dev/zero` at `state/ID` of
/// queued messages: the rescan and the loads open them without waiting and read nothing
/// through the link; each state file is set aside (one line each), its message stays queued
/// with every recipient pending and is delivered, and so is the mail that comes after.
#[test]
fn fifos_and_symlinks_at_state_files_are_set_aside_and_their_messages_delivered() {
    let mut server = Server::start(&[]);
    let maildir = server.data.join("delivered");
    let spool = Spool::attach(&server.data).expect("attach");
    let mut planted: Vec<String> = (0..5)
        .map(|i| queue_with_planted_state(&spool, &format!("fifo state {i}"), mkfifo))
        .collect();
    planted.push(queue_with_planted_state(&spool, "link state", |p| {
        std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")
    }));
    // The runner learns of messages queued by another process at a rescan.
    server.signal(libc::SIGUSR1);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("after the planted states"),
    );
    assert!(is_k(&answer), "{answer}");
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 7),
        "not delivered:\n{}",
        server.log_text()
    );
    let set_aside = server.wait_log_count(T, 6, |l| {
        l.contains("found corrupt") && l.contains("not a state file")
    });
    assert_eq!(set_aside.len(), 6, "{}", server.log_text());
    let corrupt = server.data.join("corrupt");
    for (i, id) in planted.iter().enumerate() {
        let moved = kind(&corrupt.join(format!("{id}.state")));
        let want = if i < 5 {
            moved.is_fifo()
        } else {
            moved.is_symlink()
        };
        assert!(want, "{id}: {moved:?}");
    }
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{:?}",
        server.queued()
    );
    let status = server.terminate(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        server.log_text()
    );
}

/// `nullq queue list` and `show` on a spool with a FIFO and a symlink to `/dev/zero` at
/// `state/ID`: both finish at once and name the file (the tools leave it where it is; the
/// server sets it aside), under an address-space limit that a read of `/dev/zero` would hit.
#[test]
fn the_queue_tools_neither_wait_on_nor_follow_planted_state_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    drop(Server::start_in(&data, &["--deliver", "none"]));
    let spool = Spool::attach(&data).expect("attach");
    let fifo = queue_with_planted_state(&spool, "fifo state", mkfifo);
    let link = queue_with_planted_state(&spool, "link state", |p| {
        std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")
    });
    let tool = |args: &[&str]| {
        run_bounded(
            Command::new("prlimit")
                .arg("--as=1000000000")
                .arg(nullq())
                .args(args)
                .arg("--data")
                .arg(&data),
            T,
        )
    };
    let (status, out, err) = tool(&["queue", "list"]);
    assert_eq!(status, Some(0), "{out}\n{err}");
    assert!(out.contains("0 messages"), "{out}");
    for id in [&fifo, &link] {
        assert!(
            err.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("not a state file")),
            "{err}"
        );
    }
    let (status, out, err) = tool(&["queue", "show", &link]);
    assert_ne!(status, Some(0), "{out}\n{err}");
    assert!(status.is_some(), "nullq queue show did not finish: {err}");
    assert!(err.contains("not a state file"), "{err}");
}
