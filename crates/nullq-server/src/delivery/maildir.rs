//! `maildir:DIR`: delivery into a Maildir (<https://cr.yp.to/proto/maildir.html>), one file per
//! message: written in `tmp/` under a unique name, fsynced, renamed into `new/`, and `new/`
//! fsynced. Deliveries waiting together are written as one batch by the Maildir's writer
//! thread ([`nullq_fs::publish_batch_with`]: the same steps per file, one fsync of `new/` for
//! the batch, the syncs done with the spool's commits: [`crate::delivery::durable`]), so that
//! the cost per message falls as the arrivals rise. The file starts with `Return-Path:` and one `Delivered-To:` per recipient, as
//! qmail-local writes them. This is the embedded default target (`DATA/delivered`).
//!
//! A Maildir never refuses a recipient: every failure here (disk full, permissions) is
//! temporary, and the message waits in the queue until the operator fixes it.
//!
//! A write cut short (`kill -9`, a crash, a power cut) leaves its file in `tmp/`; the message is
//! delivered again under a new name after the restart. [`clean_tmp`], run once per Maildir when
//! the runner starts, removes such leftovers: files of ours whose writer is gone, and (the
//! Maildir convention) any file in `tmp/` untouched for 36 hours. Whether a writer is gone is
//! told by a lock, not by the pid in the name (pids repeat after a reboot and differ between
//! namespaces): the writer holds an exclusive `flock` on its `tmp/` file from its creation until
//! its rename into `new/` (nullq-fs `Options::lock`), and the clean-up removes a file of ours
//! only if it can take that lock (nullq-fs `Cleaning`, which also holds `tmp/`'s creation lock
//! for the scan, so no writer is caught between creating its file and locking it).

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::delivery::backend::{Backend, Delivery};
use crate::delivery::durable::Syncs;
use crate::delivery::group::Group;
use crate::delivery::handover::envelope_head;
use crate::delivery::job::{Answer, Job};

/// A Maildir target.
#[derive(Debug)]
pub struct Maildir {
    dir: PathBuf,
    /// The writer: every delivery waiting when it wakes is written as one batch (their files
    /// synced together, one fsync of `new/` for all; [`nullq_fs::publish_batch_with`]).
    writer: Group<Job, Answer>,
}

/// At most this many files in one batch: each holds two descriptors until it is renamed.
const BATCH_MAX: usize = 64;

/// Writer threads: batches written at the same time, so that their fsyncs overlap.
const WORKERS: usize = 8;

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// The Maildir at `dir` (created with `tmp/`, `new/`, `cur/` on first delivery).
    /// Its files and `new/` are synced by `syncs` (with the spool's commits).
    pub fn new(dir: PathBuf, syncs: Syncs) -> Maildir {
        let d = dir.clone();
        let writer = Group::spawn_bounded(
            "nullq-maildir",
            BATCH_MAX,
            WORKERS,
            || Answer::retry_ours("internal error: the Maildir writer is gone"),
            move |jobs: Vec<Job>| write_batch(&d, &jobs, &syncs),
        );
        Maildir { dir, writer }
    }

    /// The Maildir's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deliver one copy for all of `job`'s recipients (in the writer's next batch).
    async fn send(&self, job: &Job) -> Vec<Answer> {
        let answer = self.writer.submit(job.clone()).await;
        vec![answer; job.recipients.len()]
    }
}

impl Backend for Maildir {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        Box::pin(self.send(job))
    }

    fn clean_leftovers(&self, _spool_root: &Path) {
        clean_tmp(&self.dir);
    }
}

/// This machine's part of a Maildir name: the host name, `/` and `:` escaped as the Maildir
/// convention says.
fn host_part() -> String {
    nullq_fs::host::machine_hostname()
        .unwrap_or_else(|| "localhost".into())
        .replace('/', "\\057")
        .replace(':', "\\072")
}

/// A name no other delivery uses: time, microseconds, pid, a counter, the host.
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Asked of the kernel once, as the pid: neither changes under a running server (a renamed
    // host's new name shows in the names after a restart).
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(host_part);
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        nullq_fs::host::process_id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        host
    )
}

/// A file in `tmp/` untouched (neither read nor written) for this long is a leftover, whoever
/// wrote it: the Maildir convention.
const STALE_AFTER: Duration = Duration::from_secs(36 * 3600);

/// The writer's pid if `name` is exactly a name [`unique_name`] makes on the host whose name
/// part is `host`: `{secs}.M{usec}P{pid}Q{seq}.{host}`, each number plain decimal digits. Only
/// whether the name is ours counts; the pid says nothing about whether its writer lives.
fn our_writer(name: &str, host: &str) -> Option<libc::pid_t> {
    /// Decimal digits without a sign or a leading zero (as `format!` writes them), up to `end`.
    fn number(text: &str, end: char) -> Option<(u64, &str)> {
        let (digits, rest) = text.split_once(end)?;
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !well_formed {
            return None;
        }
        Some((digits.parse().ok()?, rest))
    }
    let (_secs, rest) = number(name, '.')?;
    let (usec, rest) = number(rest.strip_prefix('M')?, 'P')?;
    let (pid, rest) = number(rest, 'Q')?;
    let (_seq, rest) = number(rest, '.')?;
    if usec >= 1_000_000 || rest != host {
        return None;
    }
    // pid 0 or a negative one would name a process group for kill(2): never ours.
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

/// Why a file in `tmp/` is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftover {
    /// A regular file under our name: removed only if its lock is free (its writer is gone).
    Unlocked,
    /// Not a regular file under our name (we write only regular files): removed as the entry.
    NotOurs,
    /// Untouched for [`STALE_AFTER`] (any name).
    Stale,
}

/// Remove the leftovers of interrupted deliveries from `dir/tmp/` (see the module
/// documentation). Blocking; run once per Maildir when the runner starts, before it delivers.
/// A file whose writer still holds it (another `nullq deliver` or server on this Maildir) is
/// never removed; symlinks are not followed (a symlink is judged and removed as the entry it
/// is); directories and other special files are left alone. Errors are logged per file.
pub fn clean_tmp(dir: &Path) {
    clean_tmp_at(dir, SystemTime::now(), &host_part());
}

fn clean_tmp_at(dir: &Path, now: SystemTime, host: &str) {
    let tmp = dir.join("tmp");
    let cleaning = match nullq_fs::Cleaning::start(&tmp) {
        Ok(cleaning) => Some(cleaning),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(target: "nullq::delivery", path = %tmp.display(), "maildir: {e}; files of ours are left for the next start, only the 36-hour rule applies now");
            None
        }
    };
    remove_leftovers_with(&tmp, "maildir", cleaning.as_ref(), |name, meta| {
        Some(match leftover(name, meta, now, host)? {
            Leftover::Unlocked => ("its writer no longer holds its lock".to_owned(), true),
            Leftover::NotOurs => ("not a file we write, under our name".to_owned(), false),
            Leftover::Stale => ("untouched for 36 hours".to_owned(), false),
        })
    });
}

/// Remove each entry of `dir` that `judge` calls a leftover (it is given the name and the
/// entry's lstat, never what a symlink points to, and says why), logging each removal and
/// each error under `target` (`maildir`, `cgp`). A missing `dir` is fine. Shared by the
/// Maildir's `tmp/` clean and the CommuniGate Pro folder's stale `.tmp` clean.
pub(super) fn remove_leftovers(
    dir: &Path,
    target: &str,
    mut judge: impl FnMut(&std::ffi::OsStr, &std::fs::Metadata) -> Option<String>,
) {
    remove_leftovers_with(dir, target, None, |name, meta| {
        judge(name, meta).map(|why| (why, false))
    });
}

/// [`remove_leftovers`] where `judge` may also ask for a removal only if the file's lock is
/// free (`true` with the reason): done through `cleaning`, and skipped without one.
fn remove_leftovers_with(
    dir: &Path,
    target: &str,
    cleaning: Option<&nullq_fs::Cleaning>,
    mut judge: impl FnMut(&std::ffi::OsStr, &std::fs::Metadata) -> Option<(String, bool)>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(target: "nullq::delivery", path = %dir.display(), "{target}: cannot clean: {e}");
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(target: "nullq::delivery", path = %dir.display(), "{target}: cannot read the directory: {e}");
                continue;
            }
        };
        let path = entry.path();
        // lstat: a symlink is looked at as itself, never at what it points to.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Renamed or removed meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(target: "nullq::delivery", path = %path.display(), "{target}: cannot clean: {e}");
                continue;
            }
        };
        let Some((why, if_unlocked)) = judge(&entry.file_name(), &meta) else {
            continue;
        };
        if if_unlocked {
            let Some(cleaning) = cleaning else { continue };
            match cleaning.remove_if_unlocked(&entry.file_name()) {
                Ok(nullq_fs::Leftover::Removed) => {
                    tracing::info!(target: "nullq::delivery", path = %path.display(), "{target}: removed an interrupted delivery: {why}");
                }
                Ok(nullq_fs::Leftover::InUse) => {
                    tracing::debug!(target: "nullq::delivery", path = %path.display(), "{target}: left in tmp/: its writer holds its lock");
                }
                // Renamed into new/ meanwhile, or no longer a regular file: not ours to judge.
                Ok(nullq_fs::Leftover::Gone | nullq_fs::Leftover::NotRegular(_)) => {}
                Err(e) => {
                    tracing::warn!(target: "nullq::delivery", path = %path.display(), "{target}: cannot clean: {e}");
                }
            }
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(target: "nullq::delivery", path = %path.display(), "{target}: removed an interrupted delivery: {why}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(target: "nullq::delivery", path = %path.display(), "{target}: cannot remove a leftover: {e}");
            }
        }
    }
}

/// How long the entry `meta` describes has been untouched (neither read nor written) at
/// `now`; `None` when the system keeps neither time.
pub(super) fn idle(meta: &std::fs::Metadata, now: SystemTime) -> Option<Duration> {
    let touched = [meta.accessed(), meta.modified()]
        .into_iter()
        .filter_map(Result::ok)
        .max()?;
    Some(now.duration_since(touched).unwrap_or_default())
}

/// Whether the `tmp/` entry `name` (lstat'ed as `meta`) is to be removed, and why.
fn leftover(
    name: &std::ffi::OsStr,
    meta: &std::fs::Metadata,
    now: SystemTime,
    host: &str,
) -> Option<Leftover> {
    let kind = meta.file_type();
    if !kind.is_file() && !kind.is_symlink() {
        return None;
    }
    if name.to_str().and_then(|n| our_writer(n, host)).is_some() {
        // By its lock alone: a file its writer still holds is never removed, however old.
        return Some(if kind.is_file() {
            Leftover::Unlocked
        } else {
            Leftover::NotOurs
        });
    }
    // Untouched: the later of the last read and the last write.
    (idle(meta, now)? >= STALE_AFTER).then_some(Leftover::Stale)
}

fn ensure_dirs(dir: &Path) -> std::io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        b.create(dir.join(sub))?;
    }
    Ok(())
}

/// Write one file for each of `jobs` (blocking): one answer each, in order. A delivery is
/// answered delivered only when its file is synced and its name in `new/` durable. A failed
/// fsync of `new/` retries every job of the batch: their files may stay in `new/`, duplicates
/// rather than losses.
fn write_batch(dir: &Path, jobs: &[Job], syncs: &Syncs) -> Vec<Answer> {
    let failed =
        |e: &dyn std::fmt::Display| Answer::retry_ours(format!("maildir {}: {e}", dir.display()));
    if !dir.join("new").is_dir() {
        if let Err(e) = ensure_dirs(dir) {
            return jobs.iter().map(|_| failed(&e)).collect();
        }
    }
    // tmp/ may be writable by others (a shared Maildir): nullq-fs never opens a planted name,
    // sets the mode on the descriptor, fsyncs, checks close, renames without replacing into
    // new/ and fsyncs new/, once for the batch.
    // Locked from its creation until its rename into new/, so that a clean-up at another
    // runner's start leaves it alone while we write it.
    let options = nullq_fs::Options {
        mode: 0o600,
        lock: true,
        ..nullq_fs::Options::default()
    };
    let names: Vec<String> = jobs.iter().map(|_| unique_name()).collect();
    let items = jobs
        .iter()
        .zip(&names)
        .map(|(job, name)| nullq_fs::BatchItem {
            tmp_name: name.clone(),
            final_name: name.clone(),
            fill: Box::new(move |file: &mut std::fs::File| {
                file.write_all(&envelope_head(&job.sender, &job.recipients, "Delivered-To"))?;
                // Streamed from the spool file: only one chunk of the message is in memory.
                job.message.copy_to(file).map(|_| ())
            }),
        })
        .collect();
    nullq_fs::publish_batch_with(&dir.join("tmp"), &dir.join("new"), items, &options, syncs)
        .into_iter()
        .zip(&names)
        .map(|(result, name)| match result {
            Ok(()) => Answer::delivered(format!("maildir: new/{name}")),
            Err(e) => failed(&e),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Child, Command};

    /// A child that runs until the test ends.
    struct Live(Child);

    impl Drop for Live {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn live_pid() -> Live {
        Live(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }

    fn name_for(pid: u32, host: &str) -> String {
        format!("1700000000.M123456P{pid}Q7.{host}")
    }

    /// Set a path's access and modification times to `ago` before now, without following a
    /// symlink.
    fn age(path: &Path, ago: Duration) {
        let when = SystemTime::now() - ago;
        let secs = when
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let t = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        };
        let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs, for the call.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
    }

    fn maildir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_dirs(dir.path()).expect("dirs");
        let tmp = dir.path().join("tmp");
        (dir, tmp)
    }

    fn put(tmp: &Path, name: &str) -> PathBuf {
        let path = tmp.join(name);
        std::fs::write(&path, b"Return-Path: <>\n").expect("write");
        path
    }

    #[test]
    fn our_names_are_parsed_strictly() {
        let host = "host1.example.net";
        assert_eq!(
            our_writer("1700000000.M5P42Q0.host1.example.net", host),
            Some(42)
        );
        let ours = unique_name();
        assert_eq!(
            our_writer(&ours, &host_part()),
            libc::pid_t::try_from(std::process::id()).ok(),
            "{ours}"
        );
        for name in [
            "1700000000.M5P42Q0.host1.example.net.",
            "1700000000.M5P42Q0.other.example.net",
            "1700000000.M5P42Q0.host1",
            "1700000000.M5P42Q0",
            "1700000000.M5P42.host1.example.net",
            "1700000000.M5Q0P42.host1.example.net",
            "1700000000.P42Q0.host1.example.net",
            "1700000000.M1000000P42Q0.host1.example.net",
            "1700000000.M5P0Q0.host1.example.net",
            "1700000000.M5P042Q0.host1.example.net",
            "1700000000.M5P+42Q0.host1.example.net",
            "1700000000.M5P-1Q0.host1.example.net",
            "1700000000.M5P4294967297Q0.host1.example.net",
            "1700000000x.M5P42Q0.host1.example.net",
            "1700000000.M5P42Qx.host1.example.net",
            "1700000000",
            "1700000000.",
            "",
            ".M5P42Q0.host1.example.net",
        ] {
            assert_eq!(our_writer(name, host), None, "{name}");
        }
    }

    /// A child process holding an exclusive `flock` on a file (util-linux's `flock(1)`), as
    /// another runner writing into this Maildir holds its tmp/ file, until dropped.
    struct Holder {
        child: Child,
        stdin: Option<std::process::ChildStdin>,
    }

    impl Holder {
        /// Returns once the lock is held: the command run under it says so on stdout.
        fn lock(path: &Path) -> Holder {
            use std::io::BufRead;
            let mut child = Command::new("flock")
                .arg("--exclusive")
                .arg(path)
                .args(["sh", "-c", "echo locked; read x"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("flock(1) from util-linux");
            let mut line = String::new();
            let out = child.stdout.take().expect("piped stdout");
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .expect("read");
            assert_eq!(line, "locked\n", "flock(1) did not take the lock");
            let stdin = child.stdin.take();
            Holder { child, stdin }
        }
    }

    impl Drop for Holder {
        /// Closing stdin ends the command; flock(1) waits for it, so once it is reaped the lock
        /// is free.
        fn drop(&mut self) {
            drop(self.stdin.take());
            let _ = self.child.wait();
        }
    }

    #[test]
    fn leftovers_are_judged_by_lock_and_stale_files_by_age() {
        let (_dir, tmp) = maildir();
        let host = host_part();
        let live = live_pid();
        let dead = dead_pid();
        let now = SystemTime::now();

        // Named after a running process, but nobody holds it: a leftover (a recycled pid).
        let live_unlocked = put(&tmp, &name_for(live.0.id(), &host));
        let own_unlocked = put(&tmp, &name_for(std::process::id(), &host));
        // Named after a dead process, but held by a live writer: kept, even when old.
        let dead_locked = put(&tmp, &name_for(dead, &host));
        let dead_locked_old = put(&tmp, &format!("1600000000.M1P{dead}Q1.{host}"));
        age(&dead_locked_old, Duration::from_secs(40 * 3600));
        let _holders = [Holder::lock(&dead_locked), Holder::lock(&dead_locked_old)];
        let dead_unlocked = put(&tmp, &format!("1700000000.M1P{dead}Q2.{host}"));
        let foreign_fresh = put(&tmp, "1700000000.12345_1.mail.example.net");
        let foreign_old = put(&tmp, "1700000000.12345_2.mail.example.net");
        age(&foreign_old, Duration::from_secs(37 * 3600));
        let foreign_35h = put(&tmp, "1700000000.12345_3.mail.example.net");
        age(&foreign_35h, Duration::from_secs(35 * 3600));
        // Another host's name with our format: its writer may run over NFS, judged by age only.
        let other_host = put(&tmp, &name_for(dead, "other.example.net"));
        // Digits first, but not our whole pattern.
        let digits_only = put(&tmp, &format!("{dead}"));
        // Directories are left alone, whatever their name or age.
        let subdir = tmp.join(format!("1700000001.M1P{dead}Q9.{host}"));
        std::fs::create_dir(&subdir).expect("mkdir");
        let old_dir = tmp.join("old-directory");
        std::fs::create_dir(&old_dir).expect("mkdir");
        age(&old_dir, Duration::from_secs(40 * 3600));

        clean_tmp_at(tmp.parent().expect("parent"), now, &host);

        assert!(
            !live_unlocked.exists(),
            "unlocked file of a live pid removed"
        );
        assert!(
            !own_unlocked.exists(),
            "unlocked file of our own pid removed"
        );
        assert!(
            !dead_unlocked.exists(),
            "unlocked file of a dead pid removed"
        );
        assert!(dead_locked.exists(), "locked file kept");
        assert!(dead_locked_old.exists(), "locked old file kept");
        assert!(foreign_fresh.exists(), "fresh foreign file kept");
        assert!(!foreign_old.exists(), "37 h old foreign file removed");
        assert!(foreign_35h.exists(), "35 h old foreign file kept");
        assert!(other_host.exists(), "other host's file kept");
        assert!(digits_only.exists(), "a name of digits is not ours");
        assert!(
            subdir.is_dir() && old_dir.is_dir(),
            "directories left alone"
        );
    }

    #[test]
    fn our_own_delivery_in_progress_is_locked() {
        let (dir, tmp) = maildir();
        let job = Job {
            id: "00061a8f3c2b7d10.00003039.00000007".parse().expect("id"),
            sender: b"a@example.net".to_vec(),
            recipients: vec![b"b@example.net".to_vec()],
            message: crate::delivery::message::Message::from_bytes(
                b"Subject: x\n\nbody\n".to_vec(),
            ),
        };
        // A clean-up while a writer is mid-file (its file open and locked, as `write` creates
        // it; a flock conflicts between open files of one process as of two).
        let name = unique_name();
        let tmp_fd = nullq_fs::open_dir(&tmp).expect("open tmp");
        let writing = nullq_fs::create_locked(&tmp_fd, &tmp, &name, 0o600).expect("create");
        clean_tmp_at(dir.path(), SystemTime::now(), &host_part());
        assert!(tmp.join(&name).exists(), "a file being written is kept");
        drop(writing);
        // Its writer gone, it is removed. Another test of this binary may have forked a child
        // (a pipe delivery) while `writing` was open: until that child's exec the copy of the
        // descriptor keeps the lock (the cleaner then rightly keeps the file), and there is no
        // event to wait for, so the clean-up is repeated for a bounded time (seen once under two
        // CPU hogs, bench/stress-suite.sh).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            clean_tmp_at(dir.path(), SystemTime::now(), &host_part());
            if !tmp.join(&name).exists() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "its writer gone, it is removed"
            );
            std::thread::yield_now();
        }
        // And the writer itself leaves nothing behind.
        let answers = write_batch(dir.path(), std::slice::from_ref(&job), &Syncs::default());
        assert_eq!(answers[0].verdict, crate::delivery::job::Verdict::Delivered);
        assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 0);
    }

    #[test]
    fn symlinks_are_judged_as_entries_and_never_followed() {
        let (dir, tmp) = maildir();
        let host = host_part();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep me").expect("write");
        age(&outside, Duration::from_secs(40 * 3600));

        // A fresh link to an old file: the link is what counts, and it is fresh.
        let fresh_link = tmp.join("fresh-link");
        std::os::unix::fs::symlink(&outside, &fresh_link).expect("symlink");
        // An old link: removed as an entry, its target untouched.
        let old_link = tmp.join("old-link");
        std::os::unix::fs::symlink(&outside, &old_link).expect("symlink");
        age(&old_link, Duration::from_secs(37 * 3600));
        // A link with our name and a dead writer; one dangling.
        let ours_link = tmp.join(name_for(dead_pid(), &host));
        std::os::unix::fs::symlink(&outside, &ours_link).expect("symlink");
        let dangling = tmp.join(name_for(std::process::id(), &host));
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");

        clean_tmp_at(dir.path(), SystemTime::now(), &host);

        let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        assert!(present(&fresh_link), "fresh link kept");
        assert!(!present(&old_link), "old link removed");
        assert!(!present(&ours_link), "our dead writer's link removed");
        assert!(!present(&dangling), "our own pid's dangling link removed");
        assert_eq!(std::fs::read(&outside).expect("target"), b"keep me");
    }

    #[test]
    fn a_delivery_lands_whole_in_new_with_mode_0600_and_leaves_tmp_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let job = Job {
            id: "00061a8f3c2b7d10.00003039.00000007".parse().expect("id"),
            sender: b"a@example.net".to_vec(),
            recipients: vec![b"b@example.net".to_vec()],
            message: crate::delivery::message::Message::from_bytes(
                b"Subject: x\n\nbody\n".to_vec(),
            ),
        };
        // Two in one batch: one file each, both whole.
        let answers = write_batch(dir.path(), &[job.clone(), job.clone()], &Syncs::default());
        let names: Vec<&str> = answers
            .iter()
            .map(|a| a.text.strip_prefix("maildir: new/").expect("delivered"))
            .collect();
        assert_ne!(names[0], names[1]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("new"))
                .expect("new")
                .count(),
            2
        );
        let path = dir.path().join("new").join(names[1]);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"Return-Path: <a@example.net>\nDelivered-To: b@example.net\nSubject: x\n\nbody\n"
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }

    #[test]
    fn a_missing_tmp_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        clean_tmp(dir.path());
        clean_tmp(&dir.path().join("does-not-exist"));
        assert!(!dir.path().join("tmp").exists());
    }
}
