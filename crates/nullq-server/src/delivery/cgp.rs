//! `cgp:DIR`: CommuniGate Pro's Submitted folder, as its PIPE module reads it
//! (`shared/spec/communigate.md`): `ID.tmp` holds `Return-Path: <sender>`, one `Envelope-To:`
//! per recipient, then the message (LF line ends, no dot-stuffing); it is fsynced, closed,
//! renamed to `ID.sub`, and the folder fsynced. The rename is the delivery: CommuniGate Pro never
//! sees a half-written `.sub`.
//!
//! If a `.sub` of ours is already there (an attempt that crashed after the rename but before
//! its result was recorded), the message was submitted: that counts as delivered, and no second
//! copy is written. CommuniGate Pro renames a file it cannot process to `.bad`; the runner scans
//! for those ([`report_bad_files`]), logs each once and counts it in `nullq queue stats`.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nullq_config::server::CgpConfig;
use nullq_spool::QueueId;

use super::maildir::envelope_head;
use super::stats::Stats;
use super::{Answer, Job};

/// A Submitted folder target.
#[derive(Debug)]
pub struct Cgp {
    dir: PathBuf,
    mode: u32,
    gid: Option<libc::gid_t>,
}

impl Cgp {
    /// The Submitted folder `dir`, files written with `config`'s mode and group.
    pub fn new(dir: PathBuf, config: &CgpConfig) -> Result<Cgp, String> {
        let mode = config
            .mode_bits()
            .ok_or_else(|| format!("bad file mode {:?}", config.mode))?;
        let gid = match &config.group {
            None => None,
            Some(g) => Some(match g.parse::<libc::gid_t>() {
                Ok(gid) => gid,
                Err(_) => {
                    let name = CString::new(g.as_str()).map_err(|_| format!("bad group {g:?}"))?;
                    // SAFETY: `name` is NUL-terminated; getgrnam returns NULL or a pointer to a
                    // static record that is read at once.
                    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
                    if gr.is_null() {
                        return Err(format!("unknown group {g:?}"));
                    }
                    // SAFETY: checked non-null just above.
                    unsafe { (*gr).gr_gid }
                }
            }),
        };
        Ok(Cgp { dir, mode, gid })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Submit one file for all of `job`'s recipients.
    pub async fn deliver(&self, job: &Job) -> Vec<Answer> {
        let (dir, mode, gid) = (self.dir.clone(), self.mode, self.gid);
        let job2 = job.clone();
        let answer = match tokio::task::spawn_blocking(move || submit(&dir, mode, gid, &job2)).await
        {
            Ok(Ok(text)) => Answer::delivered(text),
            Ok(Err(e)) => Answer::retry(format!("cgp {}: {e}", self.dir.display())),
            Err(e) => Answer::retry(format!("internal error: {e}")),
        };
        vec![answer; job.recipients.len()]
    }
}

/// An envelope address must not break the header line it goes on.
fn header_safe(addr: &[u8]) -> bool {
    !addr.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0)
}

fn submit(dir: &Path, mode: u32, gid: Option<libc::gid_t>, job: &Job) -> std::io::Result<String> {
    let sub = dir.join(format!("{}.sub", job.id));
    if sub.exists() {
        return Ok(format!("cgp: {} already submitted", sub.display()));
    }
    if !header_safe(&job.sender) || !job.recipients.iter().all(|r| header_safe(r)) {
        return Err(std::io::Error::other("line break in an envelope address"));
    }
    let tmp = dir.join(format!("{}.tmp", job.id));
    let result = (|| {
        // A .tmp left by a crash is ours and incomplete: start it over.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            // SAFETY: fchown on a descriptor we own; uid -1 leaves the owner unchanged.
            if unsafe { libc::fchown(file.as_raw_fd(), u32::MAX, gid) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        file.write_all(&envelope_head(&job.sender, &job.recipients, "Envelope-To"))?;
        // Streamed from the spool file: only one chunk of the message is in memory.
        job.message.copy_to(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &sub)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| format!("cgp: submitted {}", sub.display()))
}

/// Log (once per process) and count each `ID.bad` in `dirs` whose ID is a queue id of ours.
pub fn report_bad_files(dirs: &[PathBuf], seen: &mut HashSet<PathBuf>, stats: &Stats) {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".bad") else {
                continue;
            };
            if stem.parse::<QueueId>().is_err() || seen.contains(&path) {
                continue;
            }
            tracing::error!(
                target: "nullq::delivery",
                id = stem,
                backend = "cgp",
                result = "failed",
                "CommuniGate Pro could not process {}: see its log (the message left our queue when it was submitted)",
                path.display()
            );
            let shown = path.display().to_string();
            stats.update(|s| s.cgp_bad_files.push(shown));
            seen.insert(path);
        }
    }
}
