//! `cgp:DIR`: CommuniGate Pro's Submitted folder, as its PIPE module reads it
//! (`shared/spec/communigate.md`): `ID.tmp` holds `Return-Path: <sender>`, one `Envelope-To:`
//! per recipient, then the message (LF line ends, no dot-stuffing); it is fsynced, closed,
//! renamed to `ID.sub`, and the folder fsynced. The rename is the delivery: CommuniGate Pro never
//! sees a half-written `.sub`. Submissions waiting together are written as one batch by the
//! folder's writer thread ([`nullq_fs::publish_batch_with`]: the same steps per file, one fsync
//! of the folder for the batch, with the spool's commits: [`crate::delivery::durable`]).
//!
//! The folder is a trust boundary twice over (docs/delivery.md, "CommuniGate Pro"):
//! - other members of its group can write it, so every name we create or look at there may
//!   have been planted: the file is written by [`nullq_fs::publish_batch`] (`O_CREAT|O_EXCL|
//!   O_NOFOLLOW`, mode and group set on the descriptor, no-replace rename), and an existing
//!   `ID.sub` is looked at without following it;
//! - CommuniGate Pro trusts the envelope fields it finds anywhere in the header, so the
//!   message's own `Envelope-To:`, `Envelope-Ignore:` and `Return-Path:` fields are renamed
//!   to `X-Original-...` before ours are written ([`neutralize`]), and the envelope addresses
//!   are written in RFC 5322 form, a local part that is no dot-atom quoted ([`header_address`]).
//!   A header longer than [`HEAD_MAX`] cannot be checked in memory: such a message is
//!   refused for good (a bounce), never submitted unchecked.
//!
//! If a `.sub` of ours is already there (an attempt that crashed after the rename but before
//! its result was recorded), the message was submitted: that counts as delivered, and no second
//! copy is written. "Ours" means a regular file, not a symlink, owned by our user with one link;
//! anything else under that name is an error (temporary, logged).
//!
//! CommuniGate Pro renames a file it cannot process to `.bad`; the runner scans for those
//! ([`handle_bad_files`]): each is logged at ERROR and counted in `nullq queue stats`, and, as
//! `[delivery.cgp] on_bad` says, bounced to its sender and renamed to `ID.bad.done`, or kept.
//! [`clean_stale_tmp`] removes the `ID.tmp` files a killed writer of ours left.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nullq_config::server::{CgpConfig, OnBad};
use nullq_spool::{DeliveryState, Envelope, QueueId, QueuedMessage, Spool};

use crate::delivery::backend::{Backend, BackendError, Delivery};
use crate::delivery::bounce;
pub use crate::delivery::cgp_header::{
    header_address, neutralize, parse_header_address, AddressError,
};
use crate::delivery::decide::{bounce_to, Failure};
use crate::delivery::durable::Syncs;
use crate::delivery::group::Group;
use crate::delivery::job::smtp_sender;
use crate::delivery::job::{Answer, Job, Verdict};
use crate::delivery::lock::MessageLock;
use crate::delivery::maildir::{idle, remove_leftovers};
use crate::delivery::message::{Message, HEAD_MAX, ORIGINAL_HEADER_MAX};
use crate::delivery::stats::Stats;

/// A Submitted folder target.
#[derive(Debug)]
pub struct Cgp {
    dir: PathBuf,
    on_bad: OnBad,
    /// The writer: every submission waiting when it wakes is written as one batch (files
    /// synced together, one fsync of the folder for all; [`nullq_fs::publish_batch_with`]).
    writer: Group<Job, Vec<Answer>>,
}

/// At most this many files in one batch (each holds a descriptor until it is renamed).
const BATCH_MAX: usize = 64;

/// Writer threads: batches written at the same time, so that their fsyncs overlap.
const WORKERS: usize = 8;

impl Cgp {
    /// The Submitted folder `dir`, files written with `config`'s mode and group.
    /// Its files and the folder are synced by `syncs` (with the spool's commits).
    pub fn new(dir: PathBuf, config: &CgpConfig, syncs: Syncs) -> Result<Cgp, BackendError> {
        // The same reentrant look-up as the privilege drop (the runtime's threads are running).
        let gid = config
            .group
            .as_deref()
            .map(crate::process::privilege::group_id)
            .transpose()
            .map_err(BackendError::Group)?;
        let options = nullq_fs::Options {
            mode: config.mode,
            // Group only: the owner stays our own user.
            owner: gid.map(|gid| (euid(), gid)),
            replace: false,
            // `ID.tmp` names are ours alone and judged as they always were (clean_stale_tmp).
            lock: false,
            sync_dir: true,
        };
        let folder = dir.clone();
        // An empty answer list: the runner retries every recipient (a wrong count).
        let writer = Group::spawn_bounded("nullq-cgp", BATCH_MAX, WORKERS, Vec::new, move |jobs| {
            submit_batch(&folder, &options, &jobs, &syncs)
        });
        Ok(Cgp {
            dir,
            on_bad: config.on_bad,
            writer,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What becomes of the `.bad` files in the folder.
    pub fn on_bad(&self) -> OnBad {
        self.on_bad
    }

    /// Submit one file for all of `job`'s recipients (in the writer's next batch).
    async fn send(&self, job: &Job) -> Vec<Answer> {
        self.writer.submit(job.clone()).await
    }
}

impl Backend for Cgp {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        Box::pin(self.send(job))
    }

    fn clean_leftovers(&self, spool_root: &Path) {
        clean_stale_tmp(&self.dir, spool_root);
    }

    fn bad_files(&self) -> Option<(PathBuf, OnBad)> {
        Some((self.dir.clone(), self.on_bad))
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Submit `job` into `dir`: one answer per recipient, in order.
#[cfg(test)]
fn submit(dir: &Path, options: &nullq_fs::Options, job: &Job) -> Vec<Answer> {
    submit_batch(dir, options, std::slice::from_ref(job), &Syncs::default())
        .pop()
        .unwrap_or_default()
}

/// What is left to do for one job once its addresses are checked.
enum Plan {
    /// Nothing to write: every recipient has its answer, or this one is for those left.
    Done(Option<Answer>),
    /// Write this (our envelope fields, then the message) as `ID.sub`.
    Write(Message),
}

/// Submit each of `jobs` into `dir` (blocking), the files written as one batch: one list of
/// answers per job (one per recipient, in order).
fn submit_batch(
    dir: &Path,
    options: &nullq_fs::Options,
    jobs: &[Job],
    syncs: &dyn nullq_fs::BatchSync,
) -> Vec<Vec<Answer>> {
    let mut plans: Vec<(Vec<Option<Answer>>, Plan)> = jobs.iter().map(prepare).collect();
    let mut items = Vec::new();
    let mut written = Vec::new();
    // Jobs whose `ID.sub` of ours is there already (a crash, or a failed folder sync, after
    // its rename): delivered only once the folder is synced, as for a rename of this batch.
    let mut already = Vec::new();
    for (i, ((_, plan), job)) in plans.iter_mut().zip(jobs).enumerate() {
        let Plan::Write(message) = plan else { continue };
        if let Some(answer) = sub_in_the_way(dir, job.id) {
            if answer.verdict == Verdict::Delivered {
                already.push(i);
            }
            *plan = Plan::Done(Some(answer));
            continue;
        }
        let message = message.clone();
        written.push(job.id);
        items.push(nullq_fs::BatchItem {
            tmp_name: format!("{}.tmp", job.id),
            final_name: format!("{}.sub", job.id),
            fill: Box::new(move |file: &mut std::fs::File| message.copy_to(file).map(|_| ())),
        });
    }
    let mut results = written.into_iter().zip(nullq_fs::publish_batch_with(
        dir, dir, items, options, syncs,
    ));
    if !already.is_empty() {
        let synced = nullq_fs::open_dir(dir)
            .map_err(|e| e.to_string())
            .and_then(|fd| {
                syncs
                    .dir(std::fs::File::from(fd), dir)
                    .map_err(|e| format!("fsync {}: {e}", dir.display()))
            });
        if let Err(e) = synced {
            for &i in &already {
                if let Some((_, plan)) = plans.get_mut(i) {
                    *plan = Plan::Done(Some(Answer::retry_ours(format!("cgp: {e}"))));
                }
            }
        }
    }
    plans
        .into_iter()
        .map(|(answers, plan)| {
            let outcome = match plan {
                Plan::Done(outcome) => outcome,
                Plan::Write(_) => Some(match results.next() {
                    Some((id, result)) => written_answer(dir, id, result),
                    None => Answer::retry_ours("internal error: no result"),
                }),
            };
            answers
                .into_iter()
                .map(|a| {
                    a.or_else(|| outcome.clone())
                        .unwrap_or_else(|| Answer::retry_ours("internal error: no answer"))
                })
                .collect()
        })
        .collect()
}

/// Check `job`'s addresses: the answers of the recipients that cannot be written (the rest
/// `None`), and what is left to do for the others.
fn prepare(job: &Job) -> (Vec<Option<Answer>>, Plan) {
    let n = job.recipients.len();
    // The null sender and the double bounce marker are `<>`.
    let sender = match smtp_sender(&job.sender) {
        b"" => Ok(Vec::new()),
        s => header_address(s),
    };
    let sender = match sender {
        Ok(s) => s,
        Err(e) => {
            let answer = Answer::bounce(format!("cgp: the sender cannot be written: {e}"));
            return (vec![None; n], Plan::Done(Some(answer)));
        }
    };
    let mut answers: Vec<Option<Answer>> = vec![None; n];
    let mut head = Vec::with_capacity(64 + n * 40);
    head.extend_from_slice(b"Return-Path: <");
    head.extend_from_slice(&sender);
    head.extend_from_slice(b">\n");
    let mut any = false;
    for (r, answer) in job.recipients.iter().zip(answers.iter_mut()) {
        match header_address(r) {
            Ok(addr) => {
                head.extend_from_slice(b"Envelope-To: ");
                head.extend_from_slice(&addr);
                head.push(b'\n');
                any = true;
            }
            Err(e) => {
                *answer = Some(Answer::bounce(format!(
                    "cgp: the recipient cannot be written: {e}"
                )))
            }
        }
    }
    let plan = if !any {
        Plan::Done(None)
    } else {
        match job.message.header() {
            None => Plan::Done(Some(Answer::bounce(format!(
                "cgp: the message's header is longer than {HEAD_MAX} bytes; CommuniGate Pro \
                 would take envelope fields from all of it, so it is not submitted unchecked"
            )))),
            Some(header) => {
                head.extend_from_slice(&neutralize(header));
                match job.message.with_header(head) {
                    Some(message) => Plan::Write(message),
                    None => Plan::Done(Some(Answer::retry_ours(
                        "internal error: the header went away",
                    ))),
                }
            }
        }
    };
    (answers, plan)
}

/// Whether `ID.sub` is already there as ours (`Ok(true)`), absent (`Ok(false)`), or held by
/// something else (`Err`, with what it is).
fn our_sub(sub: &Path) -> Result<bool, String> {
    match std::fs::symlink_metadata(sub) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.to_string()),
        Ok(meta) if meta.file_type().is_file() && meta.uid() == euid() && meta.nlink() == 1 => {
            Ok(true)
        }
        Ok(meta) => Err(format!(
            "{} owned by uid {} with {} link(s), not a submission of ours",
            if meta.file_type().is_symlink() {
                "a symlink"
            } else if meta.file_type().is_file() {
                "a regular file"
            } else {
                "a special file"
            },
            meta.uid(),
            meta.nlink()
        )),
    }
}

/// The answer when `ID.sub` is already there: ours (a crash after the rename: submitted), or
/// something else (in the way, never followed). `None` when the name is free.
fn sub_in_the_way(dir: &Path, id: QueueId) -> Option<Answer> {
    let sub = dir.join(format!("{id}.sub"));
    match our_sub(&sub) {
        Ok(true) => Some(Answer::delivered(format!(
            "cgp: {} already submitted",
            sub.display()
        ))),
        Ok(false) => None,
        Err(what) => {
            tracing::error!(target: "nullq::delivery", id = %id, path = %sub.display(), "cgp: {what} is in the way; not followed, the message stays queued");
            Some(Answer::retry(format!(
                "cgp {}: {what} is in the way",
                sub.display()
            )))
        }
    }
}

/// The answer for `ID.sub` after its write: submitted, or why not.
fn written_answer(dir: &Path, id: QueueId, result: Result<(), nullq_fs::Error>) -> Answer {
    let sub = dir.join(format!("{id}.sub"));
    match result {
        Ok(()) => Answer::delivered(format!("cgp: submitted {}", sub.display())),
        Err(e) => {
            let planted = e.step == nullq_fs::Step::Planted
                || (e.step == nullq_fs::Step::Rename
                    && e.kind() == std::io::ErrorKind::AlreadyExists);
            if planted {
                tracing::error!(target: "nullq::delivery", id = %id, "cgp: a planted name in the Submitted folder: {e}; not followed, the message stays queued");
            }
            Answer::retry_ours(format!("cgp {}: {e}", dir.display()))
        }
    }
}

/// A `.tmp` of ours untouched this long is a leftover even when its message is not in our
/// spool (another spool's runner may write into the same folder; its writes touch the file).
const STALE_TMP_AFTER: Duration = Duration::from_secs(3600);

/// Remove the `ID.tmp` files a killed writer of ours left in `dir`: regular files owned by us
/// whose name is a queue id and `.tmp`, and either untouched for an hour, or whose message is
/// in the spool at `spool_root` and not being delivered (we hold its lock while removing).
/// Anything else (symlinks, others' files, other names) is left alone. Blocking; run when the
/// runner starts.
pub fn clean_stale_tmp(dir: &Path, spool_root: &Path) {
    let now = SystemTime::now();
    let me = euid();
    remove_leftovers(dir, "cgp", |name, meta| {
        let id: QueueId = name.to_str()?.strip_suffix(".tmp")?.parse().ok()?;
        if !meta.file_type().is_file() || meta.uid() != me {
            return None;
        }
        if idle(meta, now).is_some_and(|d| d >= STALE_TMP_AFTER) {
            return Some("a temporary of ours untouched for an hour".into());
        }
        // The lock is free: no delivery of the message runs (a runner holds it while it
        // writes), and ours has not started delivering yet.
        match MessageLock::try_lock(spool_root, &id) {
            Ok(_lock) => Some("its message is queued and no delivery of it is running".into()),
            Err(_) => None,
        }
    });
}

/// What a `.bad` file says of the submission: the envelope nullq wrote above the message.
#[derive(Debug, PartialEq, Eq)]
struct BadEnvelope {
    sender: Vec<u8>,
    recipients: Vec<Vec<u8>>,
    /// The message's own header, without our envelope fields (for the bounce's copy).
    header: Vec<u8>,
}

/// Parse the envelope back from the start of a `.bad` file: the `Return-Path:` and
/// `Envelope-To:` fields of its header (any case, unfolded), which after [`neutralize`] are
/// all ours. `None` without a `Return-Path:`.
fn parse_bad(start: &[u8]) -> Option<BadEnvelope> {
    // Only the block nullq itself wrote at the top is envelope: exactly one `Return-Path: <..>`
    // line, then one `Envelope-To: ..` line per recipient, byte for byte as `submit` writes
    // them. Nothing below it is read as envelope, however it is spelled: the message's own
    // fields (renamed, or oddly spelled so that a looser reader might take them) must never
    // choose where a bounce goes.
    let mut lines = start.split_inclusive(|&b| b == b'\n');
    let first = lines.next()?.strip_suffix(b"\n")?;
    let inner = first.strip_prefix(b"Return-Path: <")?.strip_suffix(b">")?;
    let sender = parse_header_address(inner)?;
    let mut recipients = Vec::new();
    let mut header = Vec::new();
    let mut in_block = true;
    for line in lines {
        if in_block {
            if let Some(addr) = line
                .strip_prefix(b"Envelope-To: ")
                .and_then(|l| l.strip_suffix(b"\n"))
            {
                recipients.push(parse_header_address(addr)?);
                continue;
            }
            in_block = false;
        }
        // The message's own header, for the bounce's text/rfc822-headers part.
        if line == b"\n" || line == b"\r\n" {
            break;
        }
        header.extend_from_slice(line);
    }
    Some(BadEnvelope {
        sender,
        recipients,
        header,
    })
}

/// Log at ERROR (once per process) and count each `ID.bad` in the `folders` whose ID is a
/// queue id; with [`OnBad::Bounce`], bounce it to its sender through the spool (the null
/// sender gets none: such a file is kept) and rename it to `ID.bad.done`, so it is handled
/// once. Only a regular file owned by us (one we wrote, renamed by CommuniGate Pro) is
/// bounced; anything else is logged and left. Returns the ids of the bounces queued.
pub fn handle_bad_files(
    folders: &[(PathBuf, OnBad)],
    seen: &mut HashSet<PathBuf>,
    stats: &Stats,
    bouncer: &Bouncer<'_>,
) -> Vec<QueueId> {
    let mut queued = Vec::new();
    for (dir, on_bad) in folders {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(id) = name
                .strip_suffix(".bad")
                .and_then(|s| s.parse::<QueueId>().ok())
            else {
                continue;
            };
            if seen.contains(&path) {
                continue;
            }
            let what = match on_bad {
                OnBad::Keep => Ok("kept for the operator".to_owned()),
                OnBad::Bounce => bounce_bad(&path, id, bouncer).map(|(text, new)| {
                    queued.extend(new);
                    text
                }),
            };
            let (done, what) = match what {
                Ok(what) => (matches!(on_bad, OnBad::Bounce), what),
                Err(BadError::Later(e)) => {
                    // Not seen: the next scan tries again.
                    tracing::error!(target: "nullq::delivery", id = %id, "cgp: {}: {e}", path.display());
                    continue;
                }
                Err(BadError::Kept(e)) => (false, format!("kept: {e}")),
            };
            // Counted before the line, so that whoever has seen the line sees the count.
            stats.bad_file(path.display().to_string());
            tracing::error!(
                target: "nullq::delivery",
                id = %id,
                backend = "cgp",
                result = "failed",
                "CommuniGate Pro could not process {} (see its log; the message left our queue when it was submitted): {what}",
                path.display()
            );
            if done {
                let to = dir.join(format!("{name}.done"));
                if let Err(e) = std::fs::rename(&path, &to) {
                    tracing::error!(target: "nullq::delivery", id = %id, "cgp: cannot rename {} to {}: {e}", path.display(), to.display());
                }
            }
            seen.insert(path);
        }
    }
    queued
}

/// What a bounce of a `.bad` file needs from the runner.
pub struct Bouncer<'a> {
    /// The spool the bounce is queued in.
    pub spool: &'a Spool,
    /// Our name, in the report.
    pub local_name: &'a str,
    /// Where double bounces go (`None`: dropped).
    pub postmaster: Option<&'a [u8]>,
}

/// Why a `.bad` file was not bounced.
enum BadError {
    /// For good: it is kept, and logged once.
    Kept(String),
    /// For now (the bounce could not be queued): the next scan tries again.
    Later(String),
}

impl From<String> for BadError {
    fn from(e: String) -> BadError {
        BadError::Kept(e)
    }
}

impl From<&str> for BadError {
    fn from(e: &str) -> BadError {
        BadError::Kept(e.to_owned())
    }
}

/// Bounce the submission in the `.bad` file `path`: its text for the log and the new queue id.
fn bounce_bad(
    path: &Path,
    id: QueueId,
    bouncer: &Bouncer<'_>,
) -> Result<(String, Option<QueueId>), BadError> {
    let mut file = nullq_fs::open_planted(path, Some(euid()))
        .map_err(|e| format!("not bounced, the file is {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| BadError::Later(e.to_string()))?;
    // One link, as for `our_sub`: a second name would be someone else's hold on our file.
    if std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        return Err("not bounced, the file has more than one link".into());
    }
    let mut start = Vec::new();
    (&mut file)
        .take((HEAD_MAX + ORIGINAL_HEADER_MAX) as u64)
        .read_to_end(&mut start)
        .map_err(|e| BadError::Later(format!("cannot read it: {e}")))?;
    let bad = parse_bad(&start).ok_or("not bounced: no Return-Path or envelope field to read")?;
    if bad.sender.is_empty() {
        return Err("from the null sender: not bounced".into());
    }
    if bad.recipients.is_empty() {
        return Err("not bounced: no Envelope-To field".into());
    }
    let n = bad.recipients.len();
    let original = QueuedMessage {
        id,
        envelope: Envelope {
            arrival: meta.modified().unwrap_or_else(|_| SystemTime::now()),
            client_addr: "local".into(),
            client_host: "nullq-delivery".into(),
            sender: bad.sender,
            recipients: bad.recipients.clone(),
        },
        message_len: meta.len(),
        state: DeliveryState::all_pending(n),
    };
    let text = format!(
        "cgp: CommuniGate Pro could not process the submission ({}); see its System Log",
        path.display()
    );
    let to = bounce_to(&original.envelope.sender, bouncer.postmaster);
    let failures: Vec<Failure> = bad
        .recipients
        .into_iter()
        .enumerate()
        .map(|(index, recipient)| Failure {
            index,
            recipient,
            text: text.clone(),
            expired: false,
        })
        .collect();
    let mut header = bad.header;
    header.push(b'\n');
    let outcome = bounce::queue_bounce(
        bouncer.spool,
        bouncer.local_name,
        &original,
        &header,
        &failures,
        &to,
        SystemTime::now(),
    )
    .map_err(|e| BadError::Later(format!("cannot queue the bounce, will try again: {e}")))?;
    let new = match &outcome {
        bounce::Queued::Bounce(id) | bounce::Queued::DoubleBounce(id) => Some(*id),
        bounce::Queued::Dropped => None,
    };
    Ok((format!("{outcome}"), new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::job::Verdict;
    use std::os::unix::fs::PermissionsExt;

    fn job(sender: &[u8], rcpts: &[&[u8]], message: &[u8]) -> Job {
        Job {
            id: "00061a8f3c2b7d10.00003039.00000007".parse().expect("id"),
            sender: sender.to_vec(),
            recipients: rcpts.iter().map(|r| r.to_vec()).collect(),
            message: Message::from_bytes(message.to_vec()),
        }
    }

    fn opts() -> nullq_fs::Options {
        nullq_fs::Options {
            mode: 0o640,
            ..nullq_fs::Options::default()
        }
    }

    /// Syncs files but fails every directory sync (as a failed folder fsync).
    struct FolderSyncFails;

    impl nullq_fs::BatchSync for FolderSyncFails {
        fn files(&self, files: Vec<(std::fs::File, PathBuf)>) -> Vec<std::io::Result<()>> {
            nullq_fs::OwnSyncs.files(files)
        }
        fn dir(&self, _dir: std::fs::File, _path: &Path) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        }
    }

    /// Red-team finding (issue 15 review): an `ID.sub` of ours left by a failed folder sync (or
    /// a crash after the rename) is answered delivered only once the folder's sync succeeds:
    /// until then its name may not survive a power cut, and the queue file must stay.
    #[test]
    fn a_sub_already_there_is_delivered_only_after_the_folder_is_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = job(b"a@x", &[b"b@x"], b"Subject: s\n\nbody\n");
        let first = submit_batch(
            dir.path(),
            &opts(),
            std::slice::from_ref(&j),
            &FolderSyncFails,
        );
        assert_eq!(first[0][0].verdict, Verdict::Retry, "{first:?}");
        assert!(
            dir.path().join(format!("{}.sub", j.id)).exists(),
            "left in the folder"
        );
        let again = submit_batch(
            dir.path(),
            &opts(),
            std::slice::from_ref(&j),
            &FolderSyncFails,
        );
        assert_eq!(again[0][0].verdict, Verdict::Retry, "{again:?}");
        assert!(again[0][0].text.contains("Input/output error"), "{again:?}");
        let synced = submit(dir.path(), &opts(), &j);
        assert_eq!(synced[0].verdict, Verdict::Delivered, "{synced:?}");
        assert!(synced[0].text.contains("already submitted"), "{synced:?}");
    }

    #[test]
    fn the_messages_own_envelope_fields_are_renamed_in_the_header_only() {
        let header = b"Received: by x\nEnvelope-To: victim@elsewhere.example\nenvelope-to:\n  other@elsewhere.example\nENVELOPE-IGNORE : a@b\nReturn-Path: <evil@x>\nSubject: Envelope-To: in a value\nX-Envelope-To: kept\n\n";
        let got = neutralize(header);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "Received: by x\nX-Original-Envelope-To: victim@elsewhere.example\nX-Original-Envelope-To:\n  other@elsewhere.example\nX-Original-Envelope-Ignore : a@b\nX-Original-Return-Path: <evil@x>\nSubject: Envelope-To: in a value\nX-Envelope-To: kept\n\n"
        );
        // CRLF lines (written with LF), a lone CR as a line end, leading continuation lines.
        assert_eq!(
            neutralize(b"Return-Path: <a>\r\nSubject: x\rEnvelope-To: e@x\r\n\r\n"),
            b"X-Original-Return-Path: <a>\nSubject: x\rX-Original-Envelope-To: e@x\n\n"
        );
        assert_eq!(
            neutralize(b" , evil@x\nA: b\n\n"),
            b"X-Nullq-Folded:\n , evil@x\nA: b\n\n"
        );
        // A header that ended without an empty line gets one; an empty header is one.
        assert_eq!(neutralize(b"A: b\n"), b"A: b\n\n");
        assert_eq!(neutralize(b"A: b"), b"A: b\n\n");
        assert_eq!(neutralize(b""), b"\n");
        assert_eq!(neutralize(b"\n"), b"\n");
    }

    #[test]
    fn addresses_are_written_in_rfc5322_form() {
        let ok = |a: &[u8]| String::from_utf8(header_address(a).expect("ok")).expect("utf8");
        assert_eq!(ok(b"jason@example.net"), "jason@example.net");
        assert_eq!(ok(b"a b@example.net"), "\"a b\"@example.net");
        assert_eq!(ok(b"a\"b\\c@example.net"), "\"a\\\"b\\\\c\"@example.net");
        assert_eq!(ok(b"x@y, evil@example.net"), "\"x@y, evil\"@example.net");
        assert_eq!(ok(b"postmaster"), "postmaster");
        assert_eq!(ok(b"a..b@[10.0.0.1]"), "\"a..b\"@[10.0.0.1]");
        assert_eq!(ok(b""), "\"\"");
        for bad in [
            &b"a@example.net,b"[..],
            b"a@exa mple.net",
            b"a@",
            b"a@x..y",
            b"a\n@x",
            b"a\r@x",
            b"a\0@x",
            b"a\t@x",
            b"a@x\x1b",
            b"\x7fa@x",
        ] {
            assert!(header_address(bad).is_err(), "{bad:?}");
        }
        // The texts the bounces carry.
        assert_eq!(
            header_address(b"a\n@x").unwrap_err().to_string(),
            "a control character (a line break, NUL, ...) in the address"
        );
        assert_eq!(
            header_address(b"a@x..y").unwrap_err().to_string(),
            "the domain \"x..y\" is neither a domain name nor an address literal"
        );
        for a in [&b"a b@example.net"[..], b"a\"b\\c@x", b"plain@x", b"\"\""] {
            let written = header_address(a).expect("ok");
            assert_eq!(parse_header_address(&written).as_deref(), Some(a));
        }
    }

    #[test]
    fn a_submission_carries_only_our_envelope_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = job(
            b"a b@example.net",
            &[b"x@example.net", b"y z@example.org", b"bad@exa mple"],
            b"Envelope-To: victim@elsewhere.example\nSubject: s\n\nEnvelope-To: body@x\n",
        );
        let answers = submit(dir.path(), &opts(), &j);
        assert_eq!(
            answers.iter().map(|a| a.verdict).collect::<Vec<_>>(),
            [Verdict::Delivered, Verdict::Delivered, Verdict::Bounce]
        );
        let sub = dir.path().join(format!("{}.sub", j.id));
        assert_eq!(
            std::fs::read_to_string(&sub).expect("sub"),
            "Return-Path: <\"a b\"@example.net>\nEnvelope-To: x@example.net\nEnvelope-To: \"y z\"@example.org\nX-Original-Envelope-To: victim@elsewhere.example\nSubject: s\n\nEnvelope-To: body@x\n"
        );
        let mode = std::fs::metadata(&sub).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        // Again: already submitted, no second file.
        let again = submit(dir.path(), &opts(), &j);
        assert!(again[0].text.contains("already submitted"), "{again:?}");
        // The double bounce marker and the null sender are written as <>.
        let d = job(
            crate::delivery::job::DOUBLE_BOUNCE_SENDER,
            &[b"pm@x"],
            b"A: b\n\n",
        );
        let dir2 = tempfile::tempdir().expect("tempdir");
        submit(dir2.path(), &opts(), &d);
        let text = std::fs::read_to_string(dir2.path().join(format!("{}.sub", d.id))).expect("sub");
        assert!(
            text.starts_with("Return-Path: <>\nEnvelope-To: pm@x\n"),
            "{text}"
        );
    }

    #[test]
    fn a_header_too_long_to_check_is_bounced_not_submitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = job(b"a@x", &[b"b@x"], b"");
        j.message = Message::unchecked_for_test(b"Envelope-To: e@x\n\n".to_vec());
        let answers = submit(dir.path(), &opts(), &j);
        assert_eq!(answers[0].verdict, Verdict::Bounce);
        assert!(answers[0].text.contains("longer than"), "{answers:?}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn planted_names_are_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let folder = dir.path().join("Submitted");
        std::fs::create_dir(&folder).expect("mkdir");
        let j = job(b"a@x", &[b"b@x"], b"A: b\n\n");
        for planted in ["tmp", "sub"] {
            let link = folder.join(format!("{}.{planted}", j.id));
            std::os::unix::fs::symlink(&victim, &link).expect("symlink");
            let answers = submit(&folder, &opts(), &j);
            assert_eq!(answers[0].verdict, Verdict::Retry, "{planted}");
            assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
            let mode = std::fs::metadata(&victim)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o600);
            assert!(std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink());
            std::fs::remove_file(&link).expect("rm");
        }
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&folder).expect("dir") {
            entries.push(e.expect("entry").file_name());
        }
        assert!(entries.is_empty(), "{entries:?}");
    }

    #[test]
    fn a_bad_file_gives_back_its_envelope() {
        let file: &[u8] =
            b"Return-Path: <\"a b\"@example.net>\nEnvelope-To: x@example.net\nEnvelope-To: \"y z\"@example.org\nX-Original-Envelope-To: v@e\nSubject: s\n\nEnvelope-To: body@x\n";
        let bad = parse_bad(file).expect("parsed");
        assert_eq!(bad.sender, b"a b@example.net");
        assert_eq!(
            bad.recipients,
            [b"x@example.net".to_vec(), b"y z@example.org".to_vec()]
        );
        assert_eq!(bad.header, b"X-Original-Envelope-To: v@e\nSubject: s\n");
        assert!(parse_bad(b"Envelope-To: x@y\n\n").is_none());
        assert_eq!(parse_bad(b"Return-Path: <>\n\n").expect("null").sender, b"");
    }

    /// The attack: a CRLF header that ends (for a CRLF reader) before a field that an LF
    /// reader would still count as header.
    #[test]
    fn a_crlf_header_is_written_with_lf_so_it_ends_where_it_ends_for_every_reader() {
        let out = neutralize(b"Subject: x\r\nEnvelope-To: e@x\r\n\r\n");
        assert_eq!(out, b"Subject: x\nX-Original-Envelope-To: e@x\n\n");
        assert!(!out.contains(&b'\r'));
        // A lone CR is not a line end here and stays (and a field after it is renamed).
        let out = neutralize(b"Subject: x\rEnvelope-To: e@x\n\n");
        assert_eq!(out, b"Subject: x\rX-Original-Envelope-To: e@x\n\n");
    }

    /// The attack: fields a looser reader would take (a form feed before the name, a CR
    /// before the colon) below nullq's block must not redirect the bounce of a `.bad` file.
    #[test]
    fn a_bad_files_bounce_goes_only_to_the_envelope_nullq_wrote() {
        for hostile in [
            &b"Subject: x\n\x0cEnvelope-To: e3@x\n\x0cReturn-Path: <e3rp@x>\n\nb\n"[..],
            b"Envelope-To\r: e4@x\nReturn-Path\r: <e4rp@x>\n\nb\n",
            b"Return-Path: <rp@x>\nEnvelope-To: e5@x\n\nb\n",
        ] {
            let mut file = b"Return-Path: <a@b.c>\nEnvelope-To: r@d.e\n".to_vec();
            file.extend_from_slice(&neutralize(hostile));
            let bad = parse_bad(&file).expect("parsed");
            assert_eq!(
                bad.sender,
                b"a@b.c",
                "{:?}",
                String::from_utf8_lossy(hostile)
            );
            assert_eq!(bad.recipients, [b"r@d.e".to_vec()]);
        }
    }

    #[test]
    fn stale_temporaries_of_ours_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool_root = dir.path().join("spool");
        std::fs::create_dir_all(spool_root.join("queue")).expect("mkdir");
        let folder = dir.path().join("Submitted");
        std::fs::create_dir(&folder).expect("mkdir");
        let queued: QueueId = "00061a8f3c2b7d10.00003039.00000007".parse().expect("id");
        let other: QueueId = "00061a8f3c2b7d10.00003039.00000008".parse().expect("id");
        std::fs::write(spool_root.join("queue").join(queued.to_string()), b"x").expect("q");
        let ours_queued = folder.join(format!("{queued}.tmp"));
        std::fs::write(&ours_queued, b"half").expect("write");
        // Not in our spool and fresh: perhaps another runner's, kept.
        let fresh_other = folder.join(format!("{other}.tmp"));
        std::fs::write(&fresh_other, b"half").expect("write");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let link = folder.join("00061a8f3c2b7d10.00003039.00000009.tmp");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let foreign_name = folder.join("someone.tmp");
        std::fs::write(&foreign_name, b"x").expect("write");
        clean_stale_tmp(&folder, &spool_root);
        assert!(
            !ours_queued.exists(),
            "our leftover of a queued message removed"
        );
        assert!(
            fresh_other.exists(),
            "a fresh temporary of another spool kept"
        );
        assert!(
            std::fs::symlink_metadata(&link).is_ok(),
            "symlink left alone"
        );
        assert!(foreign_name.exists());
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    }
}
