//! A full disk, for real: a 64 KiB tmpfs. Needs root to mount (CI runs as root); fails otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nullq_spool::{DeliveryState, RecipientState, Spool, Status, Step};

use crate::support::{envelope, names};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            panic!("cannot run this test: mounting a tmpfs needs root (CI runs this as root) (scripts/test runs the suite as root)");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "root, but mount -t tmpfs failed: {status}"
        );
        Some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem with `path` until a write fails; returns how much was written.
fn fill(path: &Path) -> usize {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0;
    let block = [0u8; 512];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    written
}

fn assert_spool_empty(spool: &Spool) {
    assert!(
        names(&spool.root().join("tmp")).is_empty(),
        "tmp/ not empty"
    );
    assert!(
        names(&spool.root().join("queue")).is_empty(),
        "queue/ not empty"
    );
}

#[test]
fn a_full_disk_fails_with_is_full_and_leaves_nothing_behind() {
    let Some(fs) = Tmpfs::mount("64k") else {
        return;
    };
    let (spool, _) = Spool::open(fs.path.join("spool")).unwrap();

    // 1. A message larger than the disk: some write (or the flush in finish) fails.
    let mut incoming = spool.receive().unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let mut error = None;
    for _ in 0..16 {
        if let Err(e) = incoming.write(&chunk) {
            error = Some(e);
            break;
        }
    }
    let err = match error {
        Some(e) => {
            // After a failed write the message is abandoned.
            assert!(incoming.write(b"more").is_err());
            assert!(incoming.finish(&envelope(1)).is_err());
            e
        }
        None => incoming.finish(&envelope(1)).unwrap_err(),
    };
    assert!(err.is_full(), "{err}");
    assert_eq!(err.step(), Step::Write);
    assert!(err.path().starts_with(spool.root().join("tmp")), "{err}");
    assert_spool_empty(&spool);

    // 2. A small message that fits in the write buffer: the failure shows in finish.
    let filler = fs.path.join("filler");
    assert!(fill(&filler) > 0);
    let mut incoming = spool.receive().unwrap();
    incoming
        .write(b"Subject: small\n\nfits in the buffer\n")
        .unwrap();
    let err = incoming.finish(&envelope(2)).unwrap_err();
    assert!(err.is_full(), "{err}");
    assert_spool_empty(&spool);

    // 2b. The same message stored whole (the committer thread writes it): refused alone, with
    //     nothing left, and the spool still works.
    let err = spool
        .store(
            b"Subject: small\n\nfits in the buffer\n".to_vec(),
            envelope(2),
        )
        .wait()
        .unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(!err.is_poisoned(), "{err}");
    assert_spool_empty(&spool);

    // 3. With room again, the same spool works; a state update on a full disk fails and the
    //    old state stands.
    std::fs::remove_file(&filler).unwrap();
    let mut incoming = spool.receive().unwrap();
    incoming.write(b"ok").unwrap();
    let id = incoming.finish(&envelope(1)).unwrap().commit().unwrap();
    assert_eq!(spool.list().unwrap(), vec![id]);
    let stored = spool.store(b"ok too".to_vec(), envelope(1)).wait().unwrap();
    assert_eq!(spool.list().unwrap(), vec![id, stored]);
    assert!(spool.remove(&stored).is_ok());
    fill(&filler);
    let long = RecipientState {
        status: Status::Failed,
        attempts: 1,
        next_attempt: None,
        last_result: "x".repeat(64 * 1024),
        warned: false,
    };
    let err = spool
        .save_state(
            &id,
            &DeliveryState {
                recipients: vec![long],
            },
        )
        .unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(names(&spool.root().join("tmp")).is_empty());
    assert_eq!(
        spool.load(&id).unwrap().state,
        DeliveryState::all_pending(1)
    );
}
