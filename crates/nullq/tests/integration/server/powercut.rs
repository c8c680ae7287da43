//! A power cut in the middle of a load: the spool lives on a loop-mounted ext4 image, which is
//! shut down with `xfs_io -x -c shutdown` while clients are sending (the filesystem stops at once
//! and unflushed data is lost, as when the power goes). After a remount, every message that was
//! answered `K` must be in the spool, whole, and the restarted server must report its recovery.
//!
//! It runs once for each way the spool can flush a batch (`--spool-flush filesystem` and
//! `files`). Its negative control, shown by hand in docs/spool.md: a build whose committer
//! answers without flushing loses acknowledged messages here.
//!
//! Needs root (mount, loop devices); CI runs as root.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullq_proto::qmqp::encode_request;
use nullq_spool::{QueueId, Spool};

use crate::support::qmqp::{exchange, queue_id};
use crate::support::server::{tmp_files, Server};
use crate::support::{sh, wait_for, LoopFs};

#[test]
fn every_k_survives_a_power_cut_under_load_with_one_syncfs_a_batch() {
    power_cut_under_load("filesystem");
}

#[test]
fn every_k_survives_a_power_cut_under_load_with_fsyncs_issued_together() {
    power_cut_under_load("files");
}

/// The load, the cut and the count, with the spool flushing its batches the way `flush` says
/// (`--spool-flush`).
fn power_cut_under_load(flush: &str) {
    let image = LoopFs::new(256);
    let data = image.mount.join("data");
    let mut server = Server::start_in(
        &data,
        &[
            "--deliver",
            "none",
            "--read-timeout",
            "5",
            "--spool-flush",
            flush,
        ],
    );
    let mode = format!("commits: flush={flush}");
    assert!(server.log_text().contains(&mode), "{}", server.log_text());
    let addr = server.addr;

    // Clients: each message is unique; remember the ones answered K.
    let acked: Arc<Mutex<HashMap<QueueId, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let exchanges = Arc::clone(&exchanges);
            std::thread::spawn(move || {
                // Bounded: at most 2,000 messages per client and 120 s.
                for n in 0..2000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120)
                    {
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
                    exchanges.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Let the load run, then cut the power.
    wait_for(Duration::from_secs(90), || {
        acked.lock().expect("lock").len() >= 500
    });
    sh(&format!("xfs_io -x -c shutdown {}", image.mount.display()));
    // The clients go on against the dead filesystem for a while: 32 more exchanges, so that
    // sessions in every stage of a commit meet the cut.
    let at_cut = exchanges.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(30), || {
        exchanges.load(Ordering::SeqCst) >= at_cut + 32
    });
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
    assert_eq!(tmp_files(&data), 0, "recovery emptied tmp/");
    eprintln!(
        "power cut ({flush}): {} messages acknowledged, all present after remount; {}",
        acked.len(),
        log.lines().find(|l| l.contains("recovery:")).unwrap_or("")
    );
}

/// The power cut again, this time while the server delivers to a Maildir on the same
/// filesystem (the batched writer and the grouped removals at work): after the remount every
/// message answered `K` is still queued whole or delivered whole in `new/` (a crash may repeat
/// a delivery, never skip one), and no file in `new/` is torn.
///
/// Once for each flush mode: the Maildir's files and `new/` are synced with the spool's own
/// batches (`Spool::sync_with_batch`), fsynced with its fdatasyncs or covered by its `syncfs`.
#[test]
fn every_k_is_queued_or_delivered_after_a_power_cut_mid_delivery() {
    power_cut_mid_delivery("files");
}

#[test]
fn every_k_is_queued_or_delivered_after_a_power_cut_mid_delivery_with_syncfs() {
    power_cut_mid_delivery("filesystem");
}

fn power_cut_mid_delivery(flush: &str) {
    let image = LoopFs::new(256);
    let data = image.mount.join("data");
    let maildir = image.mount.join("md");
    let target = format!("maildir:{}", maildir.display());
    let mut server = Server::start_in(
        &data,
        &[
            "--deliver",
            &target,
            "--read-timeout",
            "5",
            "--spool-flush",
            flush,
        ],
    );
    let addr = server.addr;

    let acked: Arc<Mutex<HashMap<QueueId, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let body_of =
        |c: usize, n: usize| format!("Subject: cut {c}/{n}\n\n{}\n", "y".repeat(100 + n % 2000));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (acked, stop, exchanges) = (
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&exchanges),
            );
            std::thread::spawn(move || {
                // Bounded: at most 2,000 messages per client and 120 s.
                for n in 0..2000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120)
                    {
                        break;
                    }
                    let body = body_of(c, n);
                    let request = encode_request(
                        body.as_bytes(),
                        b"load@example.net",
                        &[b"sink@example.net".to_vec()],
                    );
                    let answer = exchange(addr, &request, Duration::from_secs(10));
                    if let Some(id) = queue_id(&answer) {
                        acked.lock().expect("lock").insert(id, body);
                    }
                    exchanges.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Cut the power once deliveries are under way.
    let delivered = |new: &std::path::Path| std::fs::read_dir(new).map_or(0, |d| d.count());
    wait_for(Duration::from_secs(90), || {
        acked.lock().expect("lock").len() >= 500 && delivered(&maildir.join("new")) >= 200
    });
    sh(&format!("xfs_io -x -c shutdown {}", image.mount.display()));
    let at_cut = exchanges.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(30), || {
        exchanges.load(Ordering::SeqCst) >= at_cut + 32
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    server.kill();
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));

    // Power back: look at what the disk kept, before any server touches it.
    image.remount();
    // Every file in new/: whole (one of the messages sent, all of it), counted by subject.
    let mut copies: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(maildir.join("new")).expect("new/") {
        let path = entry.expect("entry").path();
        let text = String::from_utf8(std::fs::read(&path).expect("read")).expect("utf-8");
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: cut "))
            .unwrap_or_else(|| panic!("{} has no subject: torn", path.display()))
            .to_owned();
        let (c, n) = subject.split_once('/').expect("c/n");
        let body = body_of(c.parse().expect("c"), n.parse().expect("n"));
        assert!(
            text.starts_with("Return-Path: <load@example.net>\n") && text.ends_with(&body),
            "{} is not whole",
            path.display()
        );
        *copies.entry(body).or_default() += 1;
    }
    let spool = Spool::attach(&data).expect("attach");
    let mut lost = Vec::new();
    for (id, body) in &acked {
        if copies.contains_key(body) {
            continue;
        }
        match spool.message(id) {
            Ok(mut reader) => {
                let mut stored = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut stored).expect("read");
                assert!(
                    stored.ends_with(body.as_bytes()),
                    "message {id} is not whole"
                );
            }
            Err(e) => lost.push(format!("{id}: {e}")),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages neither queued nor delivered: {lost:?}",
        lost.len(),
        acked.len()
    );
    let twice = copies.values().filter(|&&n| n > 1).count();
    eprintln!(
        "power cut mid-delivery ({flush}): {} acknowledged, {} delivered before the cut ({twice} of them twice), none lost",
        acked.len(),
        copies.len()
    );
}
