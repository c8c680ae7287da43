//! Many threads at once: group commit, and ids across two spools.

use std::collections::HashSet;
use std::sync::Arc;

use nullq_spool::{QueueId, Spool};

use crate::support::{envelope, spool};

fn commit_one(spool: &Spool, body: &[u8]) -> QueueId {
    let mut incoming = spool.receive().unwrap();
    incoming.write(body).unwrap();
    incoming.finish(&envelope(1)).unwrap().commit().unwrap()
}

#[test]
fn group_commit_shares_directory_fsyncs() {
    const THREADS: usize = 16;
    const EACH: usize = 200;
    let (_dir, spool) = spool();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (spool, barrier) = (spool.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..EACH)
                    .map(|i| commit_one(&spool, format!("thread {t} message {i}\n").as_bytes()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<QueueId> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total = (THREADS * EACH) as u64;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len() as u64, total);
    assert_eq!(spool.list().unwrap().len() as u64, total);
    let (fsyncs, commits) = spool.committer().stats();
    eprintln!("{commits} commits, {fsyncs} directory fsyncs");
    assert_eq!(commits, total);
    // How many commits share one fsync depends on the disk and the scheduler (a fast fsync
    // leaves nothing to share); that they do share, when an fsync takes time, is shown
    // deterministically by commit.rs's `concurrent_callers_share_fsyncs`. Here: never more
    // fsyncs than commits, and every commit covered by one.
    assert!(
        fsyncs >= 1 && fsyncs <= commits,
        "{fsyncs} directory fsyncs for {commits} commits"
    );
}

#[test]
fn ids_from_two_spools_at_once_are_unique_and_sorted() {
    let (_d1, a) = spool();
    let (_d2, b) = spool();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let spool = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                (0..100)
                    .map(|_| commit_one(&spool, b"x"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<QueueId>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let all: Vec<QueueId> = per_thread.iter().flatten().copied().collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        800,
        "ids collided"
    );
    let strings: HashSet<String> = all.iter().map(|id| id.to_string()).collect();
    assert_eq!(strings.len(), 800);
    for ids in &per_thread {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a thread's ids are not in arrival order"
        );
        assert!(ids.windows(2).all(|w| w[0].to_string() < w[1].to_string()));
        assert!(ids.windows(2).all(|w| w[0].created() <= w[1].created()));
    }
    // Each spool lists its own messages, sorted, and a later message sorts last.
    let (mut in_a, mut in_b): (Vec<QueueId>, Vec<QueueId>) = (Vec::new(), Vec::new());
    for (t, ids) in per_thread.iter().enumerate() {
        if t % 2 == 0 { &mut in_a } else { &mut in_b }.extend(ids);
    }
    in_a.sort();
    in_b.sort();
    assert_eq!(a.list().unwrap(), in_a);
    assert_eq!(b.list().unwrap(), in_b);
    let later = commit_one(&b, b"later");
    assert!(all.iter().all(|id| *id < later));
    assert_eq!(b.list().unwrap().last(), Some(&later));
}
