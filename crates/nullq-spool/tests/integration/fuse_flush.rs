//! `Flush::Auto` on a FUSE mount (found by a red-team review of issue 14). The spool's
//! directory is the root of a mounted filesystem, but `syncfs(2)` there cannot stand for the
//! batch's syncs: on a FUSE filesystem whose daemon does not implement `FUSE_SYNCFS` (libfuse
//! does not; only virtiofs does), the kernel's `fuse_sync_fs` returns 0 without asking the
//! daemon for anything, and a power cut loses every message so "committed". So `Auto` takes
//! syncfs only on ext4, xfs or btrfs, and an explicit `filesystem` is refused elsewhere.
//!
//! The FUSE filesystem is bindfs (a passthrough) over a loop-mounted ext4; the "power cut" is
//! `xfs_io -x -c shutdown` of that ext4 (no log flush), as in the server's power-cut test. The
//! control runs the same with `Flush::Files` (fdatasync is passed through as FUSE_FSYNC, and
//! the directory fsync as FUSE_FSYNCDIR): nothing is lost.
//!
//! Needs root, `bindfs` and `xfs_io` (scripts/test installs them); fails otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nullq_spool::{Flush, Spool};

use crate::support::envelope;

fn sh(script: &str) -> bool {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    if !out.status.success() {
        eprintln!(
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

struct Mounts {
    dir: tempfile::TempDir,
}

impl Mounts {
    /// A temporary directory with the two (empty, not yet mounted) mount points.
    fn new() -> Mounts {
        let m = Mounts {
            dir: tempfile::Builder::new()
                .prefix("nullq-fuse.")
                .tempdir_in("/var/tmp")
                .expect("tempdir"),
        };
        std::fs::create_dir(m.lower()).expect("mkdir");
        std::fs::create_dir(m.fuse()).expect("mkdir");
        m
    }

    fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }
    fn fuse(&self) -> PathBuf {
        self.dir.path().join("fuse")
    }
    fn image(&self) -> PathBuf {
        self.dir.path().join("fs.img")
    }

    /// Mounts bindfs from the lower mount point (whatever is there) on the FUSE one.
    fn bind(&self) -> bool {
        sh(&format!(
            "bindfs {l} {f}",
            l = self.lower().display(),
            f = self.fuse().display()
        ))
    }

    /// Detaches the FUSE mount and waits (at most a minute) for its bindfs daemon to exit:
    /// until it has, the daemon keeps the lower filesystem busy and `umount` of it fails.
    /// The daemon leaves only once the last file of the FUSE mount is closed, after the
    /// (lazy) unmount; `pidwait` waits for that on a pidfd. It exits 1 when the daemon is
    /// already gone, 124 (from `timeout`) when it did not leave in time.
    fn unmount_fuse(&self) -> bool {
        sh(&format!(
            "umount -l {f}; timeout 60 pidwait -f '^bindfs .* {f}$'; [ $? -ne 124 ]",
            f = self.fuse().display()
        ))
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.unmount_fuse();
        let _ = Command::new("umount").arg("-l").arg(self.lower()).output();
    }
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = Path::new("/usr/bin/bindfs").exists() && Path::new("/usr/sbin/xfs_io").exists();
    assert!(
        root && tools,
        "cannot run this test: it needs root, bindfs and xfs_io (scripts/test installs them)"
    );
    true
}

/// Returns (acknowledged, surviving after the cut, the mode Auto/forced resolved to).
fn stored_then_cut(flush: Flush) -> (usize, usize, Flush) {
    let m = Mounts::new();
    assert!(sh(&format!(
        "truncate -s 64M {i} && mkfs.ext4 -q -F -m 0 {i} && mount -o loop {i} {l} && bindfs {l} {f}",
        i = m.image().display(),
        l = m.lower().display(),
        f = m.fuse().display()
    )));
    let root = m.fuse().join("spool");
    let (spool, _) = Spool::open_with(&root, flush).expect("open");
    let mode = spool.flush();
    // Let the creation of the spool's directories reach the disk (not what is tested): FUSE
    // operations are synchronous, so they are in the lower filesystem by now.
    assert!(sh(&format!("sync -f {}", m.lower().display())));

    let mut acked = Vec::new();
    for n in 0..20 {
        let body = format!("Subject: fuse {n}\n\n{}\n", "y".repeat(500));
        if let Ok(id) = spool.store(body.into_bytes(), envelope(1)).wait() {
            acked.push(id);
        }
    }
    // Power cut of the disk under the FUSE filesystem: unflushed data and journal are lost.
    assert!(sh(&format!(
        "xfs_io -x -c shutdown {}",
        m.lower().display()
    )));
    drop(spool);
    assert!(m.unmount_fuse(), "bindfs did not exit after the unmount");
    assert!(sh(&format!(
        "umount {l} && mount -o loop {i} {l}",
        i = m.image().display(),
        l = m.lower().display(),
    )));
    let queue = m.lower().join("spool/queue");
    let survived = acked
        .iter()
        .filter(|id| {
            // Whole: present and of the size it had (at least the message's size).
            std::fs::metadata(queue.join(id.to_string())).is_ok_and(|md| md.len() > 500)
        })
        .count();
    (acked.len(), survived, mode)
}

#[test]
fn control_files_mode_on_fuse_keeps_every_acknowledged_message() {
    if !usable() {
        return;
    }
    let (acked, survived, mode) = stored_then_cut(Flush::Files);
    assert_eq!(mode, Flush::Files);
    assert_eq!(acked, 20);
    assert_eq!(
        survived,
        acked,
        "files mode lost {} of {acked}",
        acked - survived
    );
}

#[test]
fn auto_on_a_fuse_mount_keeps_every_acknowledged_message() {
    if !usable() {
        return;
    }
    let (acked, survived, mode) = stored_then_cut(Flush::Auto);
    assert_eq!(mode, Flush::Files, "FUSE is not ext4, xfs or btrfs");
    assert_eq!(acked, 20);
    assert_eq!(
        survived,
        acked,
        "Auto resolved to {mode} on a FUSE mount: {} of {acked} acknowledged messages lost at a power cut",
        acked - survived
    );
}

#[test]
fn filesystem_asked_for_on_a_fuse_mount_is_refused_at_open() {
    usable();
    let m = Mounts::new();
    assert!(m.bind());
    let e = Spool::open_with(m.fuse().join("spool"), Flush::Filesystem).err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("spool_flush = filesystem cannot make messages durable here")
            && text.contains("not ext4, xfs or btrfs"),
        "{text}"
    );
}

/// Red-team finding (issue 15 review): a delivery's file on a filesystem that stops answering
/// (bindfs with its daemon stopped, as an NFS server gone) must not stop receiving: only files
/// on the spool's own filesystem go to its committer; this one is fsynced by its caller.
#[test]
fn a_stuck_delivery_filesystem_does_not_stop_receiving() {
    use std::io::Write;
    usable();
    let m = Mounts::new();
    assert!(m.bind());
    let pid = Command::new("pgrep")
        .arg("-f")
        .arg(format!("^bindfs .* {}$", m.fuse().display()))
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "the bindfs daemon");
    let (_dir, spool) = crate::support::spool();
    let path = m.fuse().join("delivered");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(b"Subject: x\n\nbody\n").expect("write");
    assert!(sh(&format!("kill -STOP {pid}")));
    // Resumed whatever happens below, so that the mounts can go.
    struct Resume(String);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-CONT", &self.0]).status();
        }
    }
    let resume = Resume(pid);
    let s = spool.clone();
    let sync = std::thread::spawn(move || s.sync_with_batch(file, &path).wait());
    // Once some thread of ours waits for the stopped daemon, the sync is stuck where it is.
    let stuck = crate::support::wait_for(std::time::Duration::from_secs(30), || {
        std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("request_wait_answer"))
            })
        })
    });
    assert!(stuck, "the sync never reached the stopped filesystem");
    let (tx, rx) = std::sync::mpsc::channel();
    let s = spool.clone();
    std::thread::spawn(move || {
        let _ = tx.send(s.store(b"Subject: m\n\nm\n".to_vec(), envelope(1)).wait());
    });
    let answered = rx.recv_timeout(std::time::Duration::from_secs(30));
    drop(resume);
    assert!(sync.join().expect("join").is_ok(), "synced once resumed");
    assert!(
        matches!(answered, Ok(Ok(_))),
        "a commit on the healthy spool was not answered while a delivery's filesystem hung: {answered:?}"
    );
}
