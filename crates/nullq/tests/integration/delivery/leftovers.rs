//! What a start finds in `tmp/` (the spool's and a Maildir's) is judged by lock, not by the pid
//! in its name: a file another live process holds locked is kept even if its name carries a dead
//! pid, and an unlocked one is removed even if its name carries a live pid. And a queue file
//! that turns corrupt while the server runs goes to `corrupt/` with one ERROR line, is not
//! delivered, and the rest still is.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, message, send};
use crate::support::server::Server;
use crate::support::{files, maildir_messages, nullq, run_bounded, wait_for, write_file, Flocked};
use crate::support::{Killed, RefusedPort};

const T: Duration = Duration::from_secs(60);

/// A pid that belonged to a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// A running process (killed at the end of the test).
fn live_pid() -> Killed {
    Killed::spawn(Command::new("sleep").arg("600"))
}

/// A spool tmp/ name made by process `pid`, as `nullq qmqpd` names its files.
fn spool_tmp_name(pid: u32, seq: u32) -> String {
    format!("0000000000000001.{pid:08x}.{seq:08x}")
}

/// This host's part of our Maildir names (as the runner makes it from gethostname).
fn maildir_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .replace('/', "\\057")
        .replace(':', "\\072")
}

fn plant(dir: &Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    write_file(dir, name, "half a message\n")
}

#[test]
fn spool_tmp_leftovers_are_judged_by_lock_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let tmp = data.join("tmp");
    let live = live_pid();
    let unlocked = plant(&tmp, &spool_tmp_name(live.pid(), 1));
    let locked = plant(&tmp, &spool_tmp_name(dead_pid(), 2));
    let holder = Flocked::hold(&locked);

    let mut server = Server::start_in(&data, &[]);
    let line = server.wait_log(T, |l| l.contains("recovery: "));
    let line = line.unwrap_or_else(|| panic!("no recovery line:\n{}", server.log_text()));
    assert!(
        line.contains("removed 1 unfinished files from tmp/")
            && line.contains("left 1 files in tmp/ that running processes hold locked"),
        "{line}"
    );
    assert!(
        !unlocked.exists(),
        "an unlocked file named after a live pid is a leftover"
    );
    assert!(
        locked.exists(),
        "a locked file is in use, whatever pid its name carries"
    );
    // The server receives and delivers beside it.
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net"],
        &message("beside")
    )));
    let maildir = data.join("delivered");
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 1),
        "{}",
        server.log_text()
    );
    assert!(locked.exists());
    server.kill();

    // Its writer gone, the next start removes it.
    drop(holder);
    let server = Server::start_in(&data, &[]);
    let line = server.wait_log(T, |l| l.contains("recovery: "));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("removed 1 unfinished files from tmp/")
                && !l.contains("hold locked")),
        "{line:?}"
    );
    assert!(!locked.exists());
}

#[test]
fn maildir_tmp_leftovers_are_judged_by_lock_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let maildir = data.join("delivered");
    let tmp = maildir.join("tmp");
    for sub in ["new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("mkdir");
    }
    let host = maildir_host();
    let live = live_pid();
    let dead = dead_pid();
    let unlocked = plant(&tmp, &format!("1700000000.M1P{}Q1.{host}", live.pid()));
    let locked = plant(&tmp, &format!("1700000000.M2P{dead}Q2.{host}"));
    let holder = Flocked::hold(&locked);

    let mut server = Server::start_in(&data, &[]);
    // The clean-up runs before the runner's start line, which start_in waited for.
    let removed = server.wait_log(T, |l| l.contains("removed an interrupted delivery"));
    assert!(
        removed
            .as_deref()
            .is_some_and(|l| l.contains(&*unlocked.to_string_lossy())
                && l.contains("its writer no longer holds its lock")),
        "{removed:?}\n{}",
        server.log_text()
    );
    assert!(server
        .wait_log(T, |l| l.contains("delivery runner started"))
        .is_some());
    assert!(
        !unlocked.exists(),
        "an unlocked file of ours named after a live pid is a leftover"
    );
    assert!(
        locked.exists(),
        "a file another writer holds is kept, whatever pid its name carries"
    );
    assert_eq!(
        server
            .log_text()
            .matches("removed an interrupted delivery")
            .count(),
        1,
        "{}",
        server.log_text()
    );
    server.kill();
    drop(holder);
    let server = Server::start_in(&data, &[]);
    assert!(server
        .wait_log(T, |l| l.contains("delivery runner started"))
        .is_some());
    assert!(
        !locked.exists(),
        "its writer gone, the next start removes it"
    );
}

fn queue_tool(data: &Path, args: &[&str]) -> String {
    let (code, out, err) = run_bounded(
        Command::new(nullq())
            .arg("queue")
            .args(args)
            .arg("--data")
            .arg(data),
        T,
    );
    assert_eq!(code, Some(0), "nullq queue {args:?}: {out}{err}");
    out
}

#[test]
fn a_queue_file_corrupted_while_running_goes_to_corrupt_and_the_rest_is_delivered() {
    // Mail for dead.example waits for a smarthost that refuses, retried only in an hour; the
    // rest goes to the default Maildir.
    let refused = RefusedPort::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(
        dir.path(),
        "nullq.toml",
        &format!(
            "[delivery]\nretry_min_secs = 3600\n[delivery.routes]\n\"dead.example\" = \"smtp://127.0.0.1:{}\"\n",
            refused.port()
        ),
    );
    let server = Server::start(&["--config", cfg.to_str().expect("utf8")]);
    let maildir = server.data.join("delivered");
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["x@dead.example"],
        &message("rotten")
    )));
    let first = server.wait_log(T, |l| {
        l.contains("rcpt=x@dead.example") && l.contains("attempt=1")
    });
    assert!(first.is_some(), "{}", server.log_text());
    let queued = server.queued();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let path = queued[0].clone();
    let id = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    // The attempt is logged before its result is saved: wait for the state file.
    let state = server.data.join("state").join(&id);
    assert!(
        wait_for(T, || state.exists()),
        "its attempt was never recorded:\n{}",
        server.log_text()
    );

    // One byte of the message flips on disk: only the checksum can tell.
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes
        .windows(6)
        .position(|w| w == b"rotten")
        .expect("subject in the file");
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    // Due now: the runner loads it again.
    queue_tool(&server.data, &["retry", &id]);

    let corrupt = server.data.join("corrupt");
    let error = server.wait_log(T, |l| l.contains("ERROR") && l.contains("found corrupt"));
    let error = error.unwrap_or_else(|| panic!("no ERROR line:\n{}", server.log_text()));
    assert!(
        error.contains(&*path.to_string_lossy())
            && error.contains(&*corrupt.join(&id).to_string_lossy())
            && error.contains("checksum"),
        "{error}"
    );
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    let moved: Vec<String> = files(&corrupt)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(moved, vec![id.clone(), format!("{id}.state")]);
    assert_eq!(
        std::fs::read(corrupt.join(&id)).expect("kept"),
        bytes,
        "kept as found"
    );
    assert!(!server.data.join("state").join(&id).exists());

    // The server goes on delivering the rest; the corrupt one is never tried again.
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net"],
        &message("healthy")
    )));
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 1),
        "{}",
        server.log_text()
    );
    assert!(maildir_messages(&maildir)[0].contains("Subject: healthy"));
    let log = server.log_text();
    assert_eq!(log.matches("found corrupt").count(), 1, "{log}");
    assert!(!log.contains("attempt=2"), "{log}");
    let stats: serde_json::Value =
        serde_json::from_str(&queue_tool(&server.data, &["stats", "--json"])).expect("json");
    assert_eq!(stats["corrupt_files"], 2, "{stats}");
    assert_eq!(stats["messages"], 0, "{stats}");
}
