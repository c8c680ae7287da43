//! Failure cases of the delivery half: `kill -9` of the server in the middle of delivering
//! 1,000 messages, then a restart (every message delivered at least once; counted exactly,
//! duplicates reported), and the disk filling up while receiving (the client gets `Z`, and only
//! messages answered `K` are ever delivered, each whole).

mod common;
mod delivery_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use delivery_common::{files, is_k, send, wait_for};

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
    let cfg = dir.path().join("nullq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[delivery]\nconcurrency = 1\ntarget = \"maildir:{}\"\n",
            maildir.display()
        ),
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf8").to_owned();
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
    let queued_at_kill = common::queued_files(&data).len();
    // 3. Restart: everything left is delivered.
    let server = Server::start_in(&data, &["--config", &cfg]);
    assert!(
        wait_for(Duration::from_secs(180), || server.queued().is_empty()),
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

/// A tiny ext4 image, loop-mounted; unmounted and removed when dropped.
struct Tiny {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tiny {
    fn new(mb: u32) -> Option<Tiny> {
        let dir = tempfile::Builder::new()
            .prefix("nullq-full.")
            .tempdir_in("/var/tmp")
            .ok()?;
        let (img, mount) = (dir.path().join("img"), dir.path().join("mnt"));
        std::fs::create_dir(&mount).ok()?;
        let script = format!(
            "truncate -s {mb}M {i} && mkfs.ext4 -q -F -m 0 {i} && mount -o loop {i} {m}",
            i = img.display(),
            m = mount.display()
        );
        let ok = Command::new("sh")
            .args(["-c", &script])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tiny { mount, _dir: dir })
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn disk_full_while_receiving_answers_z_and_only_acknowledged_mail_is_delivered() {
    let Some(tiny) = Tiny::new(8) else {
        panic!("cannot run this test: cannot loop-mount an ext4 image (needs root and a loop device) (.ci/run sets this up)");
    };
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
