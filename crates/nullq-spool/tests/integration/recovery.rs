//! What open() does with what a crash left behind: tmp/ leftovers, torn or foreign queue
//! files, orphan and bad state files; and the lock.

use std::path::Path;

use nullq_spool::{DeliveryState, QueueId, RecipientState, Spool, Status, Step};

use crate::support::{envelope, message, names, queue, spool};

fn reopen(spool: Spool) -> (Spool, nullq_spool::RecoveryReport) {
    let root = spool.root().to_owned();
    drop(spool);
    Spool::open(root).unwrap()
}

#[test]
fn dropping_an_incoming_deletes_its_file() {
    let (_dir, spool) = spool();
    let mut incoming = spool.receive().unwrap();
    incoming.write(&[b'x'; 100_000]).unwrap();
    assert_eq!(names(&spool.root().join("tmp")).len(), 1);
    drop(incoming);
    assert!(names(&spool.root().join("tmp")).is_empty());
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn open_deletes_tmp_leftovers_and_reports_them() {
    let (_dir, spool) = spool();
    let tmp = spool.root().join("tmp");
    // A receive cut short by a "crash" (no Drop runs), a finished-but-not-renamed file, and junk.
    let mut cut = spool.receive().unwrap();
    cut.write(b"half a message").unwrap();
    std::mem::forget(cut);
    std::fs::write(tmp.join("stray"), b"x").unwrap();
    std::fs::create_dir(tmp.join("dir")).unwrap();
    std::fs::write(tmp.join("dir/inner"), b"x").unwrap();
    let kept = queue(&spool, b"kept", &envelope(1));
    assert_eq!(names(&tmp).len(), 3);

    let (spool, report) = reopen(spool);
    let mut removed: Vec<_> = report
        .tmp_removed
        .iter()
        .map(|p| p.strip_prefix(&tmp).unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(removed.len(), 3, "{report:?}");
    assert!(
        removed.contains(&Path::new("stray").to_owned())
            && removed.contains(&Path::new("dir").to_owned())
    );
    assert!(names(&tmp).is_empty());
    assert_eq!(report.queued, 1);
    assert!(report.corrupt_moved.is_empty());
    assert_eq!(spool.list().unwrap(), vec![kept]);
    let line = report.to_string();
    assert!(
        line.contains("1 messages queued") && line.contains("removed 3 unfinished"),
        "{line}"
    );
}

/// A made-up id for planting files.
fn fake_id(n: u32) -> QueueId {
    format!("0000000000000001.00000001.{n:08x}")
        .parse()
        .unwrap()
}

#[test]
fn torn_and_foreign_queue_files_go_to_corrupt_and_good_ones_stay() {
    let (_dir, spool) = spool();
    let good = queue(&spool, b"Subject: good\n\nbody\n", &envelope(2));
    let template = queue(&spool, &[b'm'; 5000], &envelope(3));
    let queue_dir = spool.root().join("queue");
    let whole = std::fs::read(queue_dir.join(template.to_string())).unwrap();
    let len = whole.len();

    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    // Torn at many offsets: in the header, the message, the envelope, the trailer.
    for (i, cut) in [
        0,
        1,
        13,
        14,
        15,
        2500,
        len - 200,
        len - 53,
        len - 52,
        len - 20,
        len - 1,
    ]
    .into_iter()
    .enumerate()
    {
        bad.push((fake_id(i as u32).to_string(), whole[..cut].to_vec()));
    }
    // One flipped bit in the message: only the checksum can tell.
    let mut flipped = whole.clone();
    flipped[100] ^= 1;
    bad.push((fake_id(100).to_string(), flipped));
    // A wrong checksum in the trailer.
    let mut crc = whole.clone();
    crc[len - 12] = if crc[len - 12] == b'0' { b'1' } else { b'0' };
    bad.push((fake_id(101).to_string(), crc));
    // Garbage of the right size, and bytes appended to a whole file.
    bad.push((
        fake_id(102).to_string(),
        (0..len).map(|i| (i * 31) as u8).collect(),
    ));
    let mut longer = whole.clone();
    longer.extend_from_slice(b"extra");
    bad.push((fake_id(103).to_string(), longer));
    // A whole file under a name that is not an id.
    bad.push(("junk".into(), whole.clone()));
    for (name, bytes) in &bad {
        std::fs::write(queue_dir.join(name), bytes).unwrap();
    }
    std::fs::create_dir(queue_dir.join(fake_id(200).to_string())).unwrap();

    let (spool, report) = reopen(spool);
    assert_eq!(report.queued, 2, "{report:?}");
    assert_eq!(report.corrupt_moved.len(), bad.len() + 1, "{report:#?}");
    assert_eq!(spool.list().unwrap(), vec![good, template]);
    assert_eq!(message(&spool, &good), b"Subject: good\n\nbody\n");
    assert_eq!(spool.load(&template).unwrap().envelope, envelope(3));
    let mut expected: Vec<String> = bad.iter().map(|(n, _)| n.clone()).collect();
    expected.push(fake_id(200).to_string());
    expected.sort();
    assert_eq!(names(&spool.root().join("corrupt")), expected);
    for moved in &report.corrupt {
        assert!(
            moved.to.starts_with(spool.root().join("corrupt")) && !moved.reason.is_empty(),
            "{moved}"
        );
        assert!(!moved.from.exists());
    }
    // The bytes are kept for the operator.
    let flipped_copy =
        std::fs::read(spool.root().join("corrupt").join(fake_id(100).to_string())).unwrap();
    assert_eq!(flipped_copy.len(), len);
    // A second open finds nothing more to do.
    let (_spool, again) = reopen(spool);
    assert_eq!((again.queued, again.corrupt_moved.len()), (2, 0));
}

#[test]
fn corrupt_files_of_the_same_name_do_not_replace_each_other() {
    let (_dir, spool) = spool();
    std::fs::write(spool.root().join("queue/junk"), b"first").unwrap();
    let (spool, _) = reopen(spool);
    std::fs::write(spool.root().join("queue/junk"), b"second").unwrap();
    let (spool, report) = reopen(spool);
    assert_eq!(report.corrupt_moved.len(), 1);
    let corrupt = spool.root().join("corrupt");
    assert_eq!(names(&corrupt), vec!["junk", "junk.1"]);
    assert_eq!(std::fs::read(corrupt.join("junk")).unwrap(), b"first");
    assert_eq!(std::fs::read(corrupt.join("junk.1")).unwrap(), b"second");
}

#[test]
fn orphan_state_is_removed_and_bad_state_is_set_aside() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"m", &envelope(2));
    let state_dir = spool.root().join("state");
    let orphan = state_dir.join(fake_id(1).to_string());
    std::fs::write(&orphan, b"nullq-state 1\npending 0 - \nend 1\n").unwrap();
    std::fs::write(
        state_dir.join(id.to_string()),
        b"nullq-state 1\ngarbage\nend 1\n",
    )
    .unwrap();
    assert_eq!(spool.load(&id).unwrap_err().step(), Step::Parse);

    let (spool, report) = reopen(spool);
    assert_eq!(report.orphan_states_removed, vec![orphan.clone()]);
    assert!(!orphan.exists());
    assert_eq!(report.corrupt_moved, vec![state_dir.join(id.to_string())]);
    assert_eq!(
        names(&spool.root().join("corrupt")),
        vec![format!("{id}.state")]
    );
    // The message is all pending again: deliveries repeat, none is lost.
    assert_eq!(
        spool.load(&id).unwrap().state,
        DeliveryState::all_pending(2)
    );
}

#[test]
fn state_for_the_wrong_number_of_recipients_is_refused() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"m", &envelope(2));
    let three = DeliveryState {
        recipients: vec![RecipientState::pending(); 3],
    };
    spool.save_state(&id, &three).unwrap();
    let err = spool.load(&id).unwrap_err();
    assert_eq!(err.step(), Step::Parse, "{err}");
    let (spool, report) = reopen(spool);
    assert_eq!(report.corrupt_moved.len(), 1);
    assert!(spool
        .load(&id)
        .unwrap()
        .state
        .recipients
        .iter()
        .all(|r| r.status == Status::Pending));
}

#[test]
fn a_spool_is_opened_by_one_owner_at_a_time() {
    let (_dir, spool) = spool();
    let err = Spool::open(spool.root()).unwrap_err();
    assert_eq!(err.step(), Step::Lock, "{err}");
    // A tool may attach to a running server's spool and see its queue.
    let id = queue(&spool, b"m", &envelope(1));
    let attached = Spool::attach(spool.root()).unwrap();
    assert_eq!(attached.list().unwrap(), vec![id]);
    // The lock goes with the last clone.
    let clone = spool.clone();
    let root = spool.root().to_owned();
    drop(spool);
    assert_eq!(Spool::open(&root).unwrap_err().step(), Step::Lock);
    drop(clone);
    let (_spool, report) = Spool::open(&root).unwrap();
    assert_eq!(report.queued, 1);
}

#[test]
fn attach_needs_an_existing_spool() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Spool::attach(dir.path().join("nope"))
        .unwrap_err()
        .is_not_found());
}

/// `nullq qmqpd` processes receive into tmp/ while `nullq deliver` may start: a file whose maker
/// is still running is left alone; one whose maker is gone is a leftover.
#[test]
fn open_keeps_tmp_files_of_running_receivers() {
    let (_dir, spool) = spool();
    let tmp = spool.root().join("tmp");
    // A live maker: a child process of ours that is still running.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let live = format!("0000000000000001.{:08x}.00000001", child.id());
    // A dead maker: a child that has exited and been reaped.
    let mut done = std::process::Command::new("true").spawn().unwrap();
    done.wait().unwrap();
    let dead = format!("0000000000000001.{:08x}.00000002", done.id());
    std::fs::write(tmp.join(&live), b"receiving").unwrap();
    std::fs::write(tmp.join(&dead), b"abandoned").unwrap();

    let (_spool, report) = reopen(spool);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(names(&tmp), vec![live.clone()], "{report:?}");
    assert_eq!(report.tmp_in_use, vec![tmp.join(&live)]);
    assert_eq!(report.tmp_removed, vec![tmp.join(&dead)]);
    assert!(
        report.to_string().contains("left 1 files in tmp/"),
        "{report}"
    );
}
