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
fn every_k_survives_a_power_cut_under_load_with_fdatasyncs_issued_together() {
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
