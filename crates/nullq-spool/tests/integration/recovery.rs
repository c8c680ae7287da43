//! What open() does with what a crash left behind: tmp/ leftovers, torn or foreign queue
//! files, orphan and bad state files; and the lock.

use std::path::Path;

use nullq_spool::{DeliveryState, QueueId, RecipientState, Spool, Status, Step};

use crate::support::{envelope, message, names, queue, spool, wait_for};

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
    // What a killed receiver leaves (its file, no longer locked by anyone), junk, a symlink.
    let abandoned = format!("0000000000000001.{:08x}.00000001", std::process::id());
    std::fs::write(tmp.join(&abandoned), b"half a message").unwrap();
    std::fs::write(tmp.join("stray"), b"x").unwrap();
    std::fs::create_dir(tmp.join("dir")).unwrap();
    std::fs::write(tmp.join("dir/inner"), b"x").unwrap();
    std::os::unix::fs::symlink(spool.root().join("lock"), tmp.join("link")).unwrap();
    // A receive whose writer still has it open (here: forgotten, its descriptor never closed)
    // in a process that only attached to the spool, as `nullq qmqpd` does: locked, so in use.
    let attached = Spool::attach(spool.root()).unwrap();
    let mut receiving = attached.receive().unwrap();
    receiving.write(b"half a message").unwrap();
    let receiving_path = tmp.join(receiving.id().to_string());
    std::mem::forget(receiving);
    let kept = queue(&spool, b"kept", &envelope(1));
    assert_eq!(names(&tmp).len(), 5);

    let (spool, report) = reopen(spool);
    let mut removed: Vec<_> = report
        .tmp_removed
        .iter()
        .map(|p| p.strip_prefix(&tmp).unwrap().to_owned())
        .collect();
    removed.sort();
    let expected: Vec<_> = [abandoned.as_str(), "dir", "link", "stray"]
        .iter()
        .map(|n| Path::new(n).to_owned())
        .collect();
    assert_eq!(removed, expected, "{report:?}");
    assert_eq!(report.tmp_in_use, vec![receiving_path.clone()]);
    assert_eq!(
        names(&tmp),
        vec![receiving_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()]
    );
    assert!(
        spool.root().join("lock").exists(),
        "a symlink is not followed"
    );
    assert_eq!(report.queued, 1);
    assert!(report.corrupt_moved.is_empty());
    assert_eq!(spool.list().unwrap(), vec![kept]);
    let line = report.to_string();
    assert!(
        line.contains("1 messages queued") && line.contains("removed 4 unfinished"),
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

/// A child process holding an exclusive `flock` on a file (util-linux's `flock(1)`, as a
/// receiving `nullq qmqpd` holds its tmp/ file) until dropped.
struct Holder {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Holder {
    /// Returns once the lock is held: the command flock(1) runs under it says so on stdout.
    /// The command then waits for its stdin to close.
    fn lock(path: &Path) -> Holder {
        use std::io::BufRead;
        let mut child = std::process::Command::new("flock")
            .arg("--exclusive")
            .arg(path)
            .args(["sh", "-c", "echo locked; read x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line, "locked\n", "flock(1) did not take the lock");
        let stdin = child.stdin.take();
        Holder { child, stdin }
    }
}

impl Drop for Holder {
    /// Closing stdin ends the command; flock(1) waits for it, so once flock(1) is reaped no
    /// process holds the lock any more.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A made-up id naming process `pid` as its maker.
fn id_of_pid(pid: u32, seq: u32) -> String {
    format!("0000000000000001.{pid:08x}.{seq:08x}")
}

/// `nullq qmqpd` processes receive into tmp/ while `nullq deliver` may start: a file is judged
/// by its lock, never by the pid in its name. A file nobody holds is removed even though the
/// process its name names is running (a recycled pid, another pid namespace).
#[test]
fn open_removes_an_unlocked_tmp_file_whose_named_maker_runs() {
    let (_dir, spool) = spool();
    let tmp = spool.root().join("tmp");
    let mut live = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let by_live = id_of_pid(live.id(), 1);
    let by_us = id_of_pid(std::process::id(), 2);
    std::fs::write(tmp.join(&by_live), b"abandoned").unwrap();
    std::fs::write(tmp.join(&by_us), b"abandoned").unwrap();

    let (_spool, report) = reopen(spool);
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(names(&tmp), Vec::<String>::new(), "{report:?}");
    let mut expected = vec![tmp.join(&by_live), tmp.join(&by_us)];
    expected.sort();
    assert_eq!(report.tmp_removed, expected);
    assert!(report.tmp_in_use.is_empty(), "{report:?}");
}

/// A file another live process holds locked is kept, even though its name carries the pid of
/// a process that is gone.
#[test]
fn open_keeps_a_tmp_file_another_process_holds_locked() {
    let (_dir, spool) = spool();
    let tmp = spool.root().join("tmp");
    let mut done = std::process::Command::new("true").spawn().unwrap();
    done.wait().unwrap();
    let held = id_of_pid(done.id(), 1);
    let abandoned = id_of_pid(done.id(), 2);
    std::fs::write(tmp.join(&held), b"receiving").unwrap();
    std::fs::write(tmp.join(&abandoned), b"abandoned").unwrap();
    let holder = Holder::lock(&tmp.join(&held));

    let (spool, report) = reopen(spool);
    assert_eq!(names(&tmp), vec![held.clone()], "{report:?}");
    assert_eq!(report.tmp_in_use, vec![tmp.join(&held)]);
    assert_eq!(report.tmp_removed, vec![tmp.join(&abandoned)]);
    assert!(
        report
            .to_string()
            .contains("left 1 files in tmp/ that running processes hold locked"),
        "{report}"
    );
    // Once its writer is gone, it is a leftover.
    drop(holder);
    let (_spool, report) = reopen(spool);
    assert_eq!(report.tmp_removed, vec![tmp.join(&held)], "{report:?}");
    assert!(names(&tmp).is_empty());
}

/// A receiver in a process that only attached to the spool (`nullq qmqpd`, while a `nullq
/// deliver` may start and clean tmp/) locks its tmp/ file from creation until it leaves tmp/:
/// an open elsewhere meanwhile keeps it. (The process that opened the spool needs no such lock:
/// no other process can open it, and so clean its tmp/, while that one holds the spool's lock.)
#[test]
fn a_receiving_message_and_its_lock_last_until_it_leaves_tmp() {
    let (_dir, opened) = spool();
    let spool = Spool::attach(opened.root()).unwrap();
    let tmp = spool.root().join("tmp");
    let mut incoming = spool.receive().unwrap();
    incoming.write(b"Subject: x\n\nbody\n").unwrap();
    let path = tmp.join(incoming.id().to_string());
    // Probed as another process's recovery would: the lock is held.
    let probe = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `probe` keeps open for the call.
    let rc = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, -1, "the receiver's tmp/ file is not locked");
    let id = incoming.finish(&envelope(1)).unwrap().commit().unwrap();
    assert!(names(&tmp).is_empty());
    // The file is in queue/ now and its writer has closed it. Waited for, not asked once: a
    // process another test of this binary forks meanwhile holds a copy of every descriptor,
    // the writer's too, until its exec closes them, and with it the lock.
    // SAFETY: as above.
    let unlocked = || unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    assert!(
        wait_for(std::time::Duration::from_secs(30), unlocked),
        "the queued file is still locked"
    );
    assert_eq!(message(&spool, &id), b"Subject: x\n\nbody\n");
}

/// Flips one byte of the message in `queue/ID`, as bit rot or a stray write would.
fn flip_body_byte(spool: &Spool, id: &QueueId) {
    let path = spool.root().join("queue").join(id.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
}

/// A queue file that turns bad while the spool is open: `verify` says it is corrupt (not an
/// I/O error), and `set_aside` moves it and its state file to corrupt/, as open would.
#[test]
fn a_message_found_corrupt_while_running_is_set_aside_with_its_state() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"Subject: rot\n\nbody body body\n", &envelope(2));
    let other = queue(&spool, b"Subject: fine\n\nbody\n", &envelope(1));
    let mut state = DeliveryState::all_pending(2);
    state.recipients[0].status = Status::Delivered;
    spool.save_state(&id, &state).unwrap();
    spool.verify(&id).unwrap();
    flip_body_byte(&spool, &id);
    // Only the checksum over the whole file can tell.
    assert!(spool.load(&id).is_ok());
    let err = spool.verify(&id).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    // Delivery's load, which checks the file read whole in memory, finds it too.
    let file = std::fs::File::open(spool.root().join("queue").join(id.to_string())).unwrap();
    let in_memory = spool.load_open(&id, &file).unwrap_err();
    assert!(in_memory.is_corrupt(), "{in_memory}");
    assert_eq!(in_memory.to_string(), err.to_string());
    drop(file);

    let moved = spool.set_aside(&id, &err).unwrap();
    let corrupt = spool.root().join("corrupt");
    assert_eq!(names(&corrupt), vec![id.to_string(), format!("{id}.state")]);
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(
        moved[0].from,
        spool.root().join("queue").join(id.to_string())
    );
    assert_eq!(moved[0].to, corrupt.join(id.to_string()));
    assert!(moved[0].reason.contains("checksum"), "{}", moved[0]);
    assert_eq!(moved[1].to, corrupt.join(format!("{id}.state")));
    assert_eq!(spool.list().unwrap(), vec![other]);
    spool.verify(&other).unwrap();
    // Gone is not corrupt.
    let gone = spool.verify(&id).unwrap_err();
    assert!(gone.is_not_found() && !gone.is_corrupt(), "{gone}");
    // Nothing is left for the next open to find.
    let (_spool, report) = reopen(spool);
    assert_eq!((report.queued, report.corrupt.len()), (1, 0), "{report:?}");
}

/// A state file found bad while running goes alone; the message stays, all pending.
#[test]
fn a_state_found_corrupt_while_running_is_set_aside_alone() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"m", &envelope(2));
    let state_path = spool.root().join("state").join(id.to_string());
    std::fs::write(&state_path, b"nullq-state 1\ngarbage\nend 1\n").unwrap();
    let err = spool.load(&id).unwrap_err();
    assert!(err.is_corrupt() && err.path() == state_path, "{err}");
    let moved = spool.set_aside(&id, &err).unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        names(&spool.root().join("corrupt")),
        vec![format!("{id}.state")]
    );
    assert_eq!(
        spool.load(&id).unwrap().state,
        DeliveryState::all_pending(2)
    );
}

/// At open too, a corrupt message's state file follows it into corrupt/ (not deleted as an
/// orphan): the operator sees which recipients were done.
#[test]
fn open_moves_the_state_of_a_corrupt_message_with_it() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"Subject: rot\n\nbody body body\n", &envelope(1));
    spool
        .save_state(&id, &DeliveryState::all_pending(1))
        .unwrap();
    flip_body_byte(&spool, &id);
    let (spool, report) = reopen(spool);
    assert_eq!(report.corrupt.len(), 2, "{report:?}");
    assert!(report.orphan_states_removed.is_empty(), "{report:?}");
    assert_eq!(
        names(&spool.root().join("corrupt")),
        vec![id.to_string(), format!("{id}.state")]
    );
}

#[test]
fn delivery_s_load_finds_what_verify_finds_in_a_broken_file() {
    let (_dir, spool) = spool();
    let path_of = |id: &QueueId| spool.root().join("queue").join(id.to_string());
    type Break = fn(&mut Vec<u8>);
    let breaks: [(&str, Break); 5] = [
        ("one byte short", |b| {
            b.pop();
        }),
        ("one byte more", |b| b.push(b'x')),
        ("no header", |b| b[0] ^= 1),
        ("a trailer byte", |b| {
            let n = b.len();
            b[n - 3] ^= 1
        }),
        ("a few bytes", |b| b.truncate(5)),
    ];
    for (what, damage) in breaks {
        let id = queue(&spool, b"Subject: x\n\nbody\n", &envelope(1));
        let mut bytes = std::fs::read(path_of(&id)).unwrap();
        damage(&mut bytes);
        std::fs::write(path_of(&id), &bytes).unwrap();
        let by_verify = spool.verify(&id).unwrap_err();
        let file = std::fs::File::open(path_of(&id)).unwrap();
        let by_load = spool.load_open(&id, &file).unwrap_err();
        assert!(
            by_verify.is_corrupt() && by_load.is_corrupt(),
            "{what}: {by_load}"
        );
        assert_eq!(by_load.to_string(), by_verify.to_string(), "{what}");
    }
}
