//! Which flush `auto` takes, and where `filesystem` is refused: one `syncfs` per batch only
//! where it keeps the promise (ext4, xfs, btrfs) and only on a filesystem made for the spool (its
//! directory is the mount root: a spool in a subdirectory of a shared mount would wait, at every
//! commit, for everything anyone else wrote there). Needs root (mount); fails otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nullq_spool::{Flush, Spool};

use crate::support::envelope;

/// A filesystem mounted for the test (`mkfs.ext4` on a loop file, or a tmpfs), unmounted when
/// dropped.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(kind: &str) -> Mounted {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "cannot run this test: mounting needs root (scripts/test runs the suite as root)"
        );
        let dir = tempfile::Builder::new()
            .prefix("nullq-flush-mode.")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let script = match kind {
            "ext4" => format!(
                "truncate -s 64M {i} && mkfs.ext4 -q -F {i} && mount -o loop {i} {m}",
                i = dir.path().join("fs.img").display(),
                m = mnt.display()
            ),
            _ => format!("mount -t tmpfs -o size=8m tmpfs {}", mnt.display()),
        };
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{script}: {out:?}");
        Mounted { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.root()).output();
    }
}

fn opened(root: &Path, flush: Flush) -> Flush {
    let (spool, _) = Spool::open_with(root, flush).expect("open");
    // Whatever the mode, a message commits.
    let id = spool
        .store(b"Subject: m\n\nm\n".to_vec(), envelope(1))
        .wait();
    assert!(id.is_ok(), "{id:?}");
    spool.flush()
}

#[test]
fn auto_takes_syncfs_on_an_ext4_made_for_the_spool_and_only_there() {
    let fs = Mounted::new("ext4");
    assert_eq!(opened(&fs.root(), Flush::Auto), Flush::Filesystem);
    let inside = fs.root().join("shared").join("nullq");
    std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
    assert_eq!(
        opened(&inside, Flush::Auto),
        Flush::Files,
        "a subdirectory of a mount"
    );
    assert_eq!(
        opened(&inside, Flush::Filesystem),
        Flush::Filesystem,
        "asked for"
    );
    assert_eq!(opened(&fs.root(), Flush::Files), Flush::Files);
}

#[test]
fn filesystem_is_refused_where_syncfs_cannot_stand_for_the_syncs() {
    let fs = Mounted::new("tmpfs");
    assert_eq!(
        opened(&fs.root(), Flush::Auto),
        Flush::Files,
        "tmpfs is a mount root, not ext4"
    );
    let e = Spool::open_with(fs.root(), Flush::Filesystem).err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("cannot make messages durable here")
            && text.contains("not ext4, xfs or btrfs"),
        "{text}"
    );
}
