//! The spool's disk failing under the runner after it delivered: full when the new state is
//! saved, read-only when the message is removed, a failed fsync when a bounce is committed.
//! What was delivered is not delivered again while the disk stays bad (the results wait in
//! memory and are written first), every failure says so at ERROR, and `nullq deliver` stops
//! with 111 after a failed commit as `nullq serve` does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, message, send};
use crate::support::server::{queued_files, Server, LOG_LEVEL};
use crate::support::{files, maildir_messages, nullq, sh, wait_child, write_file, LoopFs};

const T: Duration = Duration::from_secs(60);

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = write_file(dir, name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// `nullq serve` on the spool `data`, its log outside it (the spool's disk may be full).
fn serve(data: &Path, log: &Path, config: &Path) -> Server {
    let mut cmd = Command::new(nullq());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--error-delay", "0", "--log-level", LOG_LEVEL, "--config"])
        .arg(config);
    Server::launch(cmd, data, log)
}

/// A shell function that fills the filesystem at `$1` until not even a 1 KB file fits (the
/// blocks, then what delayed allocation's reservations leave).
const FILL: &str = "fill() { dd if=/dev/zero of=$1/filler bs=64k >/dev/null 2>&1; \
    for r in 1 2 3 4 5 6; do sync; i=0; \
    while printf '%1000s' x > $1/fill.$r.$i 2>/dev/null; do i=$((i+1)); done; done; sync; }\n";

/// A server whose spool's disk fills up while it delivers a message to two recipients: one to
/// a Maildir on another disk, the other to a pipe that fills the spool's disk the first time it
/// runs and defers (exit 75). `delivery` is more of the `[delivery]` table. The Maildir, the
/// spool's disk and the server, after the message was answered `K`.
fn filling_spool_disk(outside: &Path, delivery: &str) -> (PathBuf, LoopFs, Server) {
    let spool_disk = LoopFs::new(16);
    let maildir = outside.join("maildir");
    let data = spool_disk.mount.join("data");
    let filled = outside.join("filled");
    let defer = script(
        outside,
        "defer.sh",
        &format!(
            "#!/bin/sh\n{FILL}[ -e {f} ] || {{ touch {f}; fill {m}; }}\nexit 75\n",
            f = filled.display(),
            m = spool_disk.mount.display()
        ),
    );
    let config = write_file(
        outside,
        "nullq.toml",
        &format!(
            "[delivery]\ntarget = \"maildir:{}\"\n{delivery}\n\
             [delivery.routes]\n\"defer.test\" = \"pipe:{}\"\n",
            maildir.display(),
            defer.display()
        ),
    );
    let server = serve(&data, &outside.join("serve.log"), &config);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["local@example.net", "remote@defer.test"],
        &message("a state that cannot be saved"),
    );
    assert!(is_k(&answer), "{answer}");
    (maildir, spool_disk, server)
}

/// One recipient delivered to a Maildir on another disk, the other deferred by a pipe that
/// fills the spool's disk first: the new state cannot be saved (ENOSPC). The next attempts
/// only try to save it, and deliver nothing, until the disk has room; then the saved state
/// says the first recipient is done, and only the second is tried again.
#[test]
fn a_state_that_cannot_be_saved_is_written_before_anything_is_delivered_again() {
    let outside = tempfile::tempdir().expect("tempdir");
    let (maildir, spool_disk, server) =
        filling_spool_disk(outside.path(), "retry_min_secs = 1\nretry_max_secs = 1");
    let failed = server.wait_log(T, |l| {
        l.contains("ERROR") && l.contains("cannot record the results") && l.contains("No space")
    });
    assert!(failed.is_some(), "{}", server.log_text());
    // Two more attempts while the disk is full: each only tried to save.
    let again = server.wait_log_count(T, 2, |l| {
        l.contains("ERROR") && l.contains("still cannot record the results")
    });
    assert_eq!(again.len(), 2, "{}", server.log_text());
    // A delivery happens before its attempt's line: any repeat would be here by now.
    assert_eq!(maildir_messages(&maildir).len(), 1, "{}", server.log_text());
    sh(&format!(
        "rm -f {d}/filler {d}/fill.*",
        d = spool_disk.mount.display()
    ));
    let recorded = server.wait_log(T, |l| {
        l.contains("the results of an earlier attempt are recorded now")
    });
    assert!(recorded.is_some(), "{}", server.log_text());
    // The deferred recipient is tried again (twice: the attempt that saved, or the next, and
    // one more), the delivered one never.
    let deferred = server.wait_log_count(T, 3, |l| {
        l.contains("rcpt=remote@defer.test") && l.contains("result=\"deferred\"")
    });
    assert_eq!(deferred.len(), 3, "{}", server.log_text());
    assert_eq!(maildir_messages(&maildir).len(), 1, "{}", server.log_text());
    let delivered = server
        .log_text()
        .lines()
        .filter(|l| l.contains("rcpt=local@example.net") && l.contains("result=\"delivered\""))
        .count();
    assert_eq!(delivered, 1, "{}", server.log_text());
}

/// The spool's filesystem goes read-only (ext4 `errors=remount-ro` after an error, which
/// `trigger_fs_error` stands for) after a message was delivered: its removal fails (EROFS),
/// and it is not delivered again at each retry while reads still work.
#[test]
fn a_message_that_cannot_be_removed_is_not_delivered_again() {
    let spool_disk = LoopFs::new(16);
    sh(&format!(
        "mount -o remount,errors=remount-ro {}",
        spool_disk.mount.display()
    ));
    let outside = tempfile::tempdir().expect("tempdir");
    let out = outside.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let go = outside.path().join("go");
    let deliver = script(
        outside.path(),
        "deliver.sh",
        &format!(
            "#!/bin/sh\n[ -e {go} ] || exit 75\ncat > {out}/copy.$$\nexit 0\n",
            go = go.display(),
            out = out.display()
        ),
    );
    let config = write_file(
        outside.path(),
        "nullq.toml",
        &format!(
            "[delivery]\ntarget = \"pipe:{}\"\nretry_min_secs = 1\nretry_max_secs = 1\n",
            deliver.display()
        ),
    );
    let data = spool_disk.mount.join("data");
    let server = serve(&data, &outside.path().join("serve.log"), &config);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("a message that cannot be removed"),
    );
    assert!(is_k(&answer), "{answer}");
    assert!(server
        .wait_log(T, |l| l.contains("result=\"deferred\""))
        .is_some());
    // The device's name under /sys/fs/ext4 (loopN).
    let source = sh(&format!(
        "findmnt -n -o SOURCE {}",
        spool_disk.mount.display()
    ));
    let device = source
        .trim()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    sh(&format!("echo 1 > /sys/fs/ext4/{device}/trigger_fs_error"));
    let options = sh(&format!(
        "findmnt -n -o OPTIONS {}",
        spool_disk.mount.display()
    ));
    // Newer kernels keep "rw" and add "emergency_ro".
    assert!(
        options
            .trim()
            .split(',')
            .any(|o| o == "ro" || o == "emergency_ro"),
        "{options}"
    );
    std::fs::write(&go, b"").expect("go");
    let failed = server.wait_log(T, |l| {
        l.contains("ERROR") && l.contains("cannot record the results") && l.contains("Read-only")
    });
    assert!(failed.is_some(), "{}", server.log_text());
    let again = server.wait_log_count(T, 2, |l| {
        l.contains("ERROR") && l.contains("still cannot record the results")
    });
    assert_eq!(again.len(), 2, "{}", server.log_text());
    assert_eq!(files(&out).len(), 1, "{}", server.log_text());
    assert_eq!(queued_files(&data).len(), 1);
}

/// `nullq deliver`'s own commit fails (fault injection: its first directory fsync, which is
/// the bounce it queues for a pipe that refuses the message): it logs the failure at ERROR and
/// stops with 111, as `nullq serve` does.
#[test]
fn nullq_deliver_stops_with_111_after_a_failed_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let (spool, _) = nullq_spool::Spool::open(&data).expect("open");
        let mut incoming = spool.receive().expect("receive");
        incoming
            .write(message("refused by the pipe").as_bytes())
            .expect("write");
        let envelope = nullq_spool::Envelope {
            arrival: std::time::SystemTime::now(),
            client_addr: "192.0.2.7:4711".into(),
            client_host: String::new(),
            sender: b"jason@example.net".to_vec(),
            recipients: vec![b"bob@example.net".to_vec()],
        };
        incoming
            .finish(&envelope)
            .expect("finish")
            .commit()
            .expect("commit");
    }
    let config = write_file(
        dir.path(),
        "nullq.toml",
        "[delivery]\ntarget = \"pipe:/bin/false\"\nretry_min_secs = 1\nretry_max_secs = 1\n",
    );
    let mut cmd = Command::new(nullq());
    cmd.args(["deliver", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .args(["--log-level", LOG_LEVEL])
        .env(nullq_spool::fault::DIR_FSYNC, "1");
    let mut deliver = Server::launch_deliver(cmd, &data, &dir.path().join("deliver.log"));
    let status = wait_child(&mut deliver.child, T);
    let log = deliver.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(111), "{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("spool commit failed"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("nullq deliver stops"), "{log}");
    // The message is still queued, for the restart.
    assert_eq!(queued_files(&data).len(), 1, "{log}");
}

/// The Maildir's own disk is full: the delivery is deferred (never answered delivered), its
/// line at WARN since the trouble is this host's (not a remote's answer, which is INFO), the
/// message kept and retried, and delivered once when there is room again, nothing left in the
/// Maildir's `tmp/`.
#[test]
fn a_full_maildir_disk_defers_at_warn_and_delivers_once_later() {
    let maildir_disk = LoopFs::new(8);
    let outside = tempfile::tempdir().expect("tempdir");
    let maildir = maildir_disk.mount.join("maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("mkdir");
    }
    sh(&format!(
        "{FILL}fill {}; true",
        maildir_disk.mount.display()
    ));
    let data = outside.path().join("data");
    let config = write_file(
        outside.path(),
        "nullq.toml",
        &format!(
            "[delivery]\ntarget = \"maildir:{}\"\nretry_min_secs = 1\nretry_max_secs = 2\n",
            maildir.display()
        ),
    );
    let server = serve(&data, &outside.path().join("serve.log"), &config);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["local@example.net"],
        &message("a full maildir disk"),
    );
    assert!(is_k(&answer), "{answer}");
    let deferred = server.wait_log(T, |l| {
        l.contains("WARN") && l.contains("result=\"deferred\"") && l.contains("No space")
    });
    assert!(deferred.is_some(), "{}", server.log_text());
    assert!(maildir_messages(&maildir).is_empty());
    assert_eq!(queued_files(&data).len(), 1);
    sh(&format!(
        "rm -f {d}/filler {d}/fill.*",
        d = maildir_disk.mount.display()
    ));
    assert!(
        crate::support::wait_for(T, || queued_files(&data).is_empty()),
        "{}",
        server.log_text()
    );
    assert_eq!(maildir_messages(&maildir).len(), 1);
    assert!(files(&maildir.join("tmp")).is_empty());
}

/// The time of a log line (its RFC 3339 stamp, to the microsecond), in seconds.
fn stamp(line: &str) -> f64 {
    let time = line.split_whitespace().next().unwrap_or_default();
    // 2026-12-01T23:13:16.764924Z: hours, minutes, seconds of the day are enough here.
    let clock = time
        .split('T')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('Z');
    let mut parts = clock.split(':');
    let mut secs = 0.0;
    for (unit, part) in [3600.0, 60.0, 1.0].into_iter().zip(&mut parts) {
        secs += unit * part.parse::<f64>().unwrap_or(0.0);
    }
    secs
}

/// While results cannot be written, the tries to write them back off (1, 2, 4, 8 s from
/// `retry_min_secs` = 1), and the runner's rescans (every second here) do not make the message
/// due sooner from its older state on disk: the fifth try comes at least 12 s (0.8 of 15 s,
/// the jitter's least) after the first failure, where a rescan a second would bring it in 4.
#[test]
fn the_tries_to_write_unrecorded_results_back_off_whatever_the_rescans() {
    let outside = tempfile::tempdir().expect("tempdir");
    let (maildir, _spool_disk, server) = filling_spool_disk(
        outside.path(),
        "retry_min_secs = 1\nretry_max_secs = 3600\nrescan_secs = 1",
    );
    let first = server.wait_log(T, |l| {
        l.contains("ERROR") && l.contains("cannot record the results") && l.contains("No space")
    });
    let first = first.unwrap_or_else(|| panic!("{}", server.log_text()));
    let fifth = server.wait_log(T, |l| {
        l.contains("still cannot record the results") && l.contains("failures=5")
    });
    let fifth = fifth.unwrap_or_else(|| panic!("{}", server.log_text()));
    let waited = stamp(&fifth) - stamp(&first);
    assert!(waited >= 12.0, "{waited:.1} s\n{}", server.log_text());
    assert_eq!(maildir_messages(&maildir).len(), 1, "{}", server.log_text());
}
