//! A power cut in the middle of a load: the spool lives on a loop-mounted ext4 image, which is
//! shut down with `xfs_io -x -c shutdown` while clients are sending (the filesystem stops at once
//! and unflushed data is lost, as when the power goes). After a remount, every message that was
//! answered `K` must be in the spool, whole, and the restarted server must report its recovery.
//!
//! Needs root (mount, loop devices); CI runs as root.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{exchange, Server};
use nullq_proto::qmqp::encode_request;
use nullq_spool::{QueueId, Spool};

fn sh(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loop-mounted ext4 image, unmounted when dropped.
struct Image {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Image {
    fn new(size: &str) -> Image {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the power-cut test needs root (mount -o loop)"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mkdir");
        sh(Command::new("truncate").args(["-s", size]).arg(&image));
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        Image { mount, _dir: dir }
    }

    fn image(&self) -> PathBuf {
        self._dir.path().join("fs.img")
    }

    fn remount(&self) {
        sh(Command::new("umount").arg(&self.mount));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(self.image())
            .arg(&self.mount));
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).output();
    }
}

/// The queue id in a `Kok <time> qp <id>` answer.
fn queue_id(answer: &[u8]) -> Option<QueueId> {
    let text = String::from_utf8_lossy(answer);
    let (_, rest) = text.split_once(":K")?;
    rest.trim_end_matches(',').rsplit(' ').next()?.parse().ok()
}

#[test]
fn every_k_survives_a_power_cut_under_load() {
    let image = Image::new("256M");
    let data = image.mount.join("data");
    let mut server = Server::start_in(&data, &["--deliver", "none", "--read-timeout", "5"]);
    let addr = server.addr;

    // Clients: each message is unique; remember the ones answered K.
    let acked: Arc<Mutex<HashMap<QueueId, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Bounded: at most 2,000 messages per client and 30 s.
                for n in 0..2000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let body = format!(
                        "Subject: power cut {c}/{n}\n\n{}\n",
                        "x".repeat(200 + n % 3000)
                    );
                    let request = encode_request(
                        body.as_bytes(),
                        b"load@example.net",
                        &[b"sink@example.net".to_vec()],
                    );
                    let answer = exchange(addr, &request, Duration::from_secs(10));
                    if let Some(id) = queue_id(&answer) {
                        acked.lock().expect("lock").insert(id, body.into_bytes());
                    }
                }
            })
        })
        .collect();

    // Let the load run, then cut the power.
    let before = Instant::now();
    while acked.lock().expect("lock").len() < 500 && before.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(Command::new("xfs_io")
        .args(["-x", "-c", "shutdown"])
        .arg(&image.mount));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    server.kill();
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.len() >= 500,
        "the load did not get going: {} K answers",
        acked.len()
    );

    // Power back: remount (the journal replays) and start the server on the same spool.
    image.remount();
    let server = Server::start_in(&data, &["--deliver", "none"]);
    let spool = Spool::attach(&data).expect("attach");
    let mut missing = Vec::new();
    for (id, body) in &acked {
        match spool.message(id) {
            Ok(mut reader) => {
                let mut stored = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut stored).expect("read");
                assert!(stored.ends_with(body), "message {id} is not whole");
                let loaded = spool.load(id).expect("load");
                assert_eq!(
                    loaded.envelope.recipients,
                    vec![b"sink@example.net".to_vec()]
                );
            }
            Err(e) => missing.push(format!("{id}: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    let log = server.log_text();
    assert!(
        log.contains("recovery:"),
        "the restarted server reports its recovery:\n{log}"
    );
    assert_eq!(common::tmp_files(&data), 0, "recovery emptied tmp/");
    eprintln!(
        "power cut: {} messages acknowledged, all present after remount; {}",
        acked.len(),
        log.lines().find(|l| l.contains("recovery:")).unwrap_or("")
    );
    drop(server);
    let _ = Path::new(&data);
}
