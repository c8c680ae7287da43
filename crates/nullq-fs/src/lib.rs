//! `nullq-fs`: the one way nullq writes a file that must survive a power cut into a directory
//! that other users may be able to write (a CommuniGate Pro Submitted folder, a Maildir, the
//! client's fallback queue), and the one way it opens a file that someone else may have
//! planted there. Every other crate on the data path (client → QMQP → spool → delivery) calls
//! these instead of writing its own copy.
//!
//! [`publish`] is the durable write, step by step:
//! 1. a stale temporary of ours under the same name (a regular file owned by us, left by a
//!    killed writer) is removed; anything else there (a symlink, a FIFO, someone else's file)
//!    is refused, never followed;
//! 2. the temporary is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so no planted name is ever
//!    opened, and its mode (and owner, if asked) is set on the descriptor, not on a path;
//! 3. the caller fills it; then `fsync`, then `close`, each checked (after a failed `fsync` the
//!    file is deleted, never fsynced again and believed);
//! 4. it is renamed to its final name, without replacing one that exists unless asked
//!    (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks it);
//! 5. the directory is fsynced, so the rename itself is durable.
//!
//! Every error names its step and path ([`Error`]). On any error the temporary is removed.
//! [`publish_to`] is the same with the temporary in another directory (`tmp/` → `new/`), and
//! [`move_to`] moves a file between such directories without ever replacing a name.
//! [`publish_batch`] is [`publish_to`] for many files at once, the same steps per file with the
//! waits shared (one directory fsync for the batch).
//!
//! [`open_planted`] opens a file for reading with `O_NOFOLLOW|O_NONBLOCK` (a symlink or a FIFO
//! can neither redirect nor block the reader), then checks with `fstat` that it is a regular
//! file owned by the expected user.
//!
//! [`host`] holds the one fact about the machine that client and server share (its host name).
//!
//! Inside, one module a job, each re-exported here so that callers name `nullq_fs::publish` and
//! so on: `publish` (the durable write, moves and renames), `dir` (opening and fsyncing a
//! directory, its creation lock, a new file created locked), `cleaning` (removing abandoned
//! temporaries), `planted` ([`open_planted`], [`entry_kind`]) and `error` ([`Step`], [`Error`]).
//!
//! # Temporaries judged by their lock
//! A file being written in a `tmp/` directory is alive exactly as long as its writer holds an
//! exclusive `flock` on it ([`Options::lock`], [`create_locked`]); a clean-up removes only a
//! temporary whose lock it can take ([`Cleaning::remove_if_unlocked`]). Not the pid in its
//! name: pids repeat after a reboot and differ between pid namespaces, a lock dies with its
//! writer. `flock` rather than an OFD lock (`F_OFD_SETLK`): both belong to the open file
//! description, so both survive the writer's own threads and die with its last descriptor;
//! `flock` needs no byte range and is what `flock(1)` takes, so an operator (and a test) can
//! hold or probe one from the shell.
//!
//! The one gap such a scheme has is between `open(O_CREAT|O_EXCL)` and `flock`: a clean-up
//! looking at that moment would find a new, unlocked file. It is closed with a second lock, on
//! the directory itself: a writer holds it shared from before the `open` until after its
//! `flock`, a clean-up holds it exclusively for its whole scan. Every temporary a clean-up sees
//! is therefore either locked by a live writer or abandoned. (Writers that do not know this
//! protocol, e.g. another MDA in a shared Maildir, are not judged by lock at all.)

#![deny(missing_docs)]

mod batch;
mod cleaning;
mod dir;
mod error;
pub mod host;
mod planted;
mod publish;

pub use batch::{publish_batch, publish_batch_with, BatchItem, BatchSync, Fill, OwnSyncs};
pub use cleaning::{Cleaning, Leftover};
pub use dir::{create_locked, create_new, open_dir, sync_dir};
pub use error::{Error, Step};
pub use planted::{entry_kind, open_planted, Refused};
pub use publish::{close, create_in, move_to, publish, publish_to, rename_noreplace, Options};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::DIR_LOCK_WAIT;
    use rustix::fs::{FileType, FlockOperation, Mode, OFlags, CWD};
    use std::io::{self, Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Instant;

    #[test]
    fn publishes_a_whole_file_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            mode: 0o644,
            ..Options::default()
        };
        publish(d.path(), "a.tmp", "a.sub", &opts, |f| f.write_all(b"hello")).unwrap();
        assert_eq!(std::fs::read(d.path().join("a.sub")).unwrap(), b"hello");
        assert!(!d.path().join("a.tmp").exists());
        let mode = std::fs::metadata(d.path().join("a.sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("a.tmp")).unwrap();
        let e = publish(d.path(), "a.tmp", "a.sub", &Options::default(), |f| {
            f.write_all(b"evil")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Planted, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert!(!d.path().join("a.sub").exists());
    }

    #[test]
    fn an_existing_final_name_is_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("a.sub")).unwrap();
        let e = publish(d.path(), "a.tmp", "a.sub", &Options::default(), |f| {
            f.write_all(b"x")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!d.path().join("a.tmp").exists(), "temporary removed");
    }

    #[test]
    fn publish_to_moves_between_directories_and_refuses_a_planted_final_name() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, new) = (d.path().join("tmp"), d.path().join("new"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&new).unwrap();
        publish_to(&tmp, "m", &new, "m", &Options::default(), |f| {
            f.write_all(b"mail")
        })
        .unwrap();
        assert_eq!(std::fs::read(new.join("m")).unwrap(), b"mail");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, new.join("n")).unwrap();
        let e = publish_to(&tmp, "n", &new, "n", &Options::default(), |f| {
            f.write_all(b"evil")
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "temporary removed"
        );
    }

    #[test]
    fn a_stale_temporary_of_ours_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.tmp"), b"half").unwrap();
        publish(d.path(), "a.tmp", "a", &Options::default(), |f| {
            f.write_all(b"whole")
        })
        .unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"whole");
    }

    #[test]
    fn a_failed_fill_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let e = publish(d.path(), "a.tmp", "a", &Options::default(), |_| {
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(e.step, Step::Write);
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn move_to_never_replaces_a_planted_name() {
        let d = tempfile::tempdir().unwrap();
        let (new, failed) = (d.path().join("new"), d.path().join("failed"));
        std::fs::create_dir(&new).unwrap();
        std::fs::create_dir(&failed).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::write(new.join("a"), b"msg a").unwrap();
        std::fs::write(new.join("b"), b"msg b").unwrap();
        std::os::unix::fs::symlink(&victim, failed.join("b")).unwrap();
        move_to(&new, "a", &failed, "a").unwrap();
        assert_eq!(std::fs::read(failed.join("a")).unwrap(), b"msg a");
        assert!(!new.join("a").exists());
        let e = move_to(&new, "b", &failed, "b").unwrap_err();
        assert_eq!(e.step, Step::Rename, "{e}");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(std::fs::symlink_metadata(failed.join("b"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(new.join("b")).unwrap(), b"msg b");
    }

    #[test]
    fn a_clean_up_removes_unlocked_temporaries_and_keeps_locked_ones() {
        let d = tempfile::tempdir().unwrap();
        let dirfd = open_dir(d.path()).unwrap();
        let writing = create_locked(&dirfd, d.path(), "writing", 0o600).unwrap();
        // A file of a writer that is gone: nothing holds its lock.
        std::fs::write(d.path().join("abandoned"), b"half").unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep me").unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("link")).unwrap();

        let cleaning = Cleaning::start(d.path()).unwrap();
        let judge = |name: &str| cleaning.remove_if_unlocked(name.as_ref()).unwrap();
        assert_eq!(judge("writing"), Leftover::InUse);
        assert_eq!(judge("abandoned"), Leftover::Removed);
        assert_eq!(judge("link"), Leftover::NotRegular("a symlink"));
        assert_eq!(judge("none"), Leftover::Gone);
        drop(cleaning);
        assert!(d.path().join("writing").exists());
        assert!(!d.path().join("abandoned").exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");

        // The lock goes with the writer's descriptor.
        drop(writing);
        let cleaning = Cleaning::start(d.path()).unwrap();
        assert_eq!(
            cleaning.remove_if_unlocked("writing".as_ref()).unwrap(),
            Leftover::Removed
        );
    }

    #[test]
    fn a_held_creation_lock_delays_a_writer_but_does_not_stop_it() {
        // Someone who may read tmp/ holds its lock (as a clean-up would, but for ever): the
        // writer waits DIR_LOCK_WAIT, then creates and locks its file all the same.
        let d = tempfile::tempdir().unwrap();
        let dirfd = open_dir(d.path()).unwrap();
        let _held = Cleaning::start(d.path()).unwrap();
        let started = Instant::now();
        let file = create_locked(&dirfd, d.path(), "mine", 0o600).unwrap();
        assert!(started.elapsed() >= DIR_LOCK_WAIT);
        assert!(d.path().join("mine").exists());
        // And it is locked: another descriptor cannot take the lock.
        let other = std::fs::File::open(d.path().join("mine")).unwrap();
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(file);
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_ok());
    }

    #[test]
    fn a_locked_publish_holds_its_temporary_locked_and_releases_it_after() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, new) = (d.path().join("tmp"), d.path().join("new"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&new).unwrap();
        let opts = Options {
            lock: true,
            ..Options::default()
        };
        publish_to(&tmp, "m", &new, "m", &opts, |f| {
            // Anyone probing the lock now (a clean-up in another process) finds it held.
            let other = open_dir(&tmp).unwrap();
            let probe = rustix::fs::openat(&other, "m", OFlags::RDONLY, Mode::empty()).unwrap();
            assert_eq!(
                rustix::fs::flock(&probe, FlockOperation::NonBlockingLockExclusive),
                Err(rustix::io::Errno::WOULDBLOCK)
            );
            f.write_all(b"mail")
        })
        .unwrap();
        assert_eq!(std::fs::read(new.join("m")).unwrap(), b"mail");
        // The delivered file is not left locked.
        let done = std::fs::File::open(new.join("m")).unwrap();
        rustix::fs::flock(&done, FlockOperation::NonBlockingLockExclusive).unwrap();
    }

    #[test]
    fn open_planted_refuses_symlinks_fifos_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let me = rustix::process::geteuid().as_raw();
        let mut s = String::new();
        open_planted(&file, Some(me))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "data");
        let meta = std::fs::metadata(&file).unwrap();
        assert!(matches!(
            open_planted(&file, Some(meta.uid() + 1)),
            Err(Refused::Owner { .. })
        ));
        std::os::unix::fs::symlink(&file, d.path().join("l")).unwrap();
        assert!(matches!(
            open_planted(&d.path().join("l"), None),
            Err(Refused::Symlink)
        ));
        let fifo = d.path().join("p");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(
            open_planted(&fifo, None),
            Err(Refused::NotRegular("a FIFO"))
        ));
        assert_eq!(entry_kind(&fifo).unwrap(), Some("a FIFO"));
        assert_eq!(entry_kind(&d.path().join("none")).unwrap(), None);
    }
}
