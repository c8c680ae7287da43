//! Receive → finish → commit → list/load/message, for small, empty and large messages.

use std::io::Read;

use nullq_spool::{DeliveryState, Status, Step};

use crate::support::{envelope, message, names, queue, sample_message, spool};

#[test]
fn a_message_written_in_many_chunks_reads_back_exactly() {
    let (_dir, spool) = spool();
    let body = sample_message(10_000);
    let env = envelope(3);
    let mut incoming = spool.receive().unwrap();
    let id = *incoming.id();
    assert_eq!(names(&spool.root().join("tmp")), vec![id.to_string()]);
    for chunk in body.chunks(7) {
        incoming.write(chunk).unwrap();
    }
    incoming.write(b"").unwrap();
    assert_eq!(incoming.bytes_written(), body.len() as u64);
    let renamed = incoming.finish(&env).unwrap();
    assert_eq!(renamed.id(), &id);
    assert!(names(&spool.root().join("tmp")).is_empty());
    assert_eq!(renamed.commit().unwrap(), id);

    assert_eq!(spool.list().unwrap(), vec![id]);
    let loaded = spool.load(&id).unwrap();
    assert_eq!(loaded.id, id);
    assert_eq!(loaded.envelope, env);
    assert_eq!(loaded.message_len, body.len() as u64);
    assert_eq!(loaded.state, DeliveryState::all_pending(3));
    assert!(loaded
        .state
        .recipients
        .iter()
        .all(|r| r.status == Status::Pending && r.attempts == 0));
    let reader = spool.message(&id).unwrap();
    assert_eq!(reader.len(), body.len() as u64);
    assert_eq!(message(&spool, &id), body);
}

#[test]
fn a_20_mb_message_streams_in_and_out() {
    const CHUNK: usize = 64 * 1024;
    const LEN: u64 = 20 * 1024 * 1024;
    // Deterministic pseudo-random chunks, regenerated for the comparison: the test never holds
    // the message in memory either.
    fn chunk(i: u64, buf: &mut [u8]) {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    let (_dir, spool) = spool();
    let mut incoming = spool.receive().unwrap();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..LEN / CHUNK as u64 {
        chunk(i, &mut buf);
        incoming.write(&buf).unwrap();
    }
    let id = incoming.finish(&envelope(1)).unwrap().commit().unwrap();

    let file_len = std::fs::metadata(spool.root().join("queue").join(id.to_string()))
        .unwrap()
        .len();
    assert!(
        file_len > LEN && file_len < LEN + 1024,
        "file is {file_len} bytes"
    );
    assert_eq!(spool.load(&id).unwrap().message_len, LEN);
    let mut reader = spool.message(&id).unwrap();
    assert_eq!(reader.len(), LEN);
    let (mut got, mut want) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    for i in 0..LEN / CHUNK as u64 {
        reader.read_exact(&mut got).unwrap();
        chunk(i, &mut want);
        assert!(got == want, "chunk {i} differs");
    }
    assert_eq!(reader.read(&mut got).unwrap(), 0, "bytes after the message");
}

#[test]
fn an_empty_message_is_valid() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"", &envelope(1));
    let reader = spool.message(&id).unwrap();
    assert!(reader.is_empty());
    assert_eq!(message(&spool, &id), b"");
    assert_eq!(spool.load(&id).unwrap().message_len, 0);
    // ... and survives the checks at open.
    drop(reader);
    let root = spool.root().to_owned();
    drop(spool);
    let (spool, report) = nullq_spool::Spool::open(&root).unwrap();
    assert_eq!((report.queued, report.corrupt_moved.len()), (1, 0));
    assert_eq!(spool.list().unwrap(), vec![id]);
}

#[test]
fn list_is_oldest_first_and_skips_foreign_names() {
    let (_dir, spool) = spool();
    let ids: Vec<_> = (0..20)
        .map(|i| queue(&spool, format!("m{i}").as_bytes(), &envelope(1)))
        .collect();
    std::fs::write(spool.root().join("queue/not-an-id"), b"x").unwrap();
    assert_eq!(spool.list().unwrap(), ids);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(message(&spool, id), format!("m{i}").as_bytes());
    }
}

#[test]
fn finish_never_replaces_a_queued_file() {
    let (_dir, spool) = spool();
    let mut incoming = spool.receive().unwrap();
    let existing = spool.root().join("queue").join(incoming.id().to_string());
    std::fs::write(&existing, b"already here").unwrap();
    incoming.write(b"new").unwrap();
    let err = incoming.finish(&envelope(1)).unwrap_err();
    assert_eq!(err.step(), Step::Rename, "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"already here");
    assert!(names(&spool.root().join("tmp")).is_empty());
}

#[test]
fn a_renamed_but_uncommitted_message_is_queued_anyway() {
    let (_dir, spool) = spool();
    let mut incoming = spool.receive().unwrap();
    incoming.write(b"x").unwrap();
    let renamed = incoming.finish(&envelope(1)).unwrap();
    let id = *renamed.id();
    drop(renamed);
    assert_eq!(spool.list().unwrap(), vec![id]);
    assert_eq!(spool.committer().stats(), (0, 0));
}

#[test]
fn load_and_message_of_an_unknown_id_are_not_found() {
    let (_dir, spool) = spool();
    let id = "0000000000000001.00000001.00000001".parse().unwrap();
    assert!(spool.load(&id).unwrap_err().is_not_found());
    assert!(spool.message(&id).unwrap_err().is_not_found());
}

/// `Spool::store`: the committer thread writes a message that is whole in memory, in every
/// flush mode, from many threads at once; each reads back exactly, and each was answered once
/// it was in `queue/` and durable.
#[test]
fn stored_messages_read_back_exactly_in_every_flush_mode() {
    use nullq_spool::{Flush, Spool};
    for flush in [Flush::Files, Flush::Filesystem] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (spool, _) = Spool::open_with(dir.path().join("spool"), flush).unwrap();
        assert_eq!(spool.flush(), flush);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body = format!("Subject: {t}/{i}\n\n{}\n", "x".repeat(i * 40));
                            let id = spool.store(body.clone().into_bytes(), envelope(2));
                            (id.wait().unwrap(), body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let stored: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(spool.list().unwrap().len(), 200, "{flush}");
        for (id, body) in &stored {
            assert_eq!(message(&spool, id), body.as_bytes(), "{flush}");
            assert_eq!(spool.load(id).unwrap().envelope, envelope(2));
            spool.verify(id).unwrap();
        }
        assert!(names(&spool.root().join("tmp")).is_empty());
        let (flushes, commits) = spool.committer().stats();
        assert_eq!(commits, 200);
        assert!((1..=200).contains(&flushes), "{flushes} flushes");
    }
}

/// `auto` decides by where the spool is: a spool in a plain directory of a filesystem that
/// holds other things too is flushed file by file.
#[test]
fn auto_flushes_file_by_file_in_a_shared_directory() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = dir.path().join("a").join("spool");
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    let (spool, _) = nullq_spool::Spool::open(&root).unwrap();
    assert_eq!(spool.flush(), nullq_spool::Flush::Files);
}

#[test]
fn load_open_reads_a_small_file_once_and_a_large_one_as_load_does() {
    let (_dir, spool) = spool();
    // 64 KiB is where load_open stops reading the file whole: just under and well over it.
    for (len, whole) in [
        (0, true),
        (1000, true),
        (60 * 1024, true),
        (300 * 1024, false),
    ] {
        let bytes = sample_message(len);
        let id = queue(&spool, &bytes, &envelope(3));
        let mut state = DeliveryState::all_pending(3);
        state.recipients[1].status = Status::Delivered;
        spool.save_state(&id, &state).unwrap();
        let file = std::fs::File::open(spool.root().join("queue").join(id.to_string())).unwrap();
        let (queued, kept) = spool.load_open(&id, &file).unwrap();
        let loaded = spool.load(&id).unwrap();
        assert_eq!(queued.envelope, loaded.envelope, "{len}");
        assert_eq!(queued.state, state, "{len}");
        assert_eq!(queued.message_len, len as u64);
        match kept {
            Some(kept) => {
                assert!(whole, "{len} bytes were read whole");
                assert_eq!(kept.as_slice(), &bytes[..], "{len}");
                // A clone shares the bytes and reads the same.
                assert_eq!(kept.clone().as_slice(), message(&spool, &id));
            }
            None => assert!(!whole, "{len} bytes were not kept"),
        }
    }
}
