//! `maildir:DIR`: delivery into a Maildir (<https://cr.yp.to/proto/maildir.html>), one file per
//! message: written in `tmp/` under a unique name, fsynced, renamed into `new/`, and `new/`
//! fsynced. The file starts with `Return-Path:` and one `Delivered-To:` per recipient, as
//! qmail-local writes them. This is the embedded default target (`DATA/delivered`).
//!
//! A Maildir never refuses a recipient: every failure here (disk full, permissions) is
//! temporary, and the message waits in the queue until the operator fixes it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Answer, Job};

/// A Maildir target.
#[derive(Debug)]
pub struct Maildir {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// The Maildir at `dir` (created with `tmp/`, `new/`, `cur/` on first delivery).
    pub fn new(dir: PathBuf) -> Maildir {
        Maildir { dir }
    }

    /// Deliver one copy for all of `job`'s recipients.
    pub async fn deliver(&self, job: &Job) -> Vec<Answer> {
        let dir = self.dir.clone();
        let job2 = job.clone();
        let answer = match tokio::task::spawn_blocking(move || write(&dir, &job2)).await {
            Ok(Ok(name)) => Answer::delivered(format!("maildir: new/{name}")),
            Ok(Err(e)) => Answer::retry(format!("maildir {}: {e}", self.dir.display())),
            Err(e) => Answer::retry(format!("internal error: {e}")),
        };
        vec![answer; job.recipients.len()]
    }
}

/// A name no other delivery uses: time, microseconds, pid, a counter, the host.
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = nullq_config::server::machine_hostname()
        .unwrap_or_else(|| "localhost".into())
        .replace('/', "\\057")
        .replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        host
    )
}

fn ensure_dirs(dir: &Path) -> std::io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        b.create(dir.join(sub))?;
    }
    Ok(())
}

fn write(dir: &Path, job: &Job) -> std::io::Result<String> {
    if !dir.join("new").is_dir() {
        ensure_dirs(dir)?;
    }
    let name = unique_name();
    let tmp = dir.join("tmp").join(&name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&envelope_head(&job.sender, &job.recipients, "Delivered-To"))?;
        // Streamed from the spool file: only one chunk of the message is in memory.
        job.message.copy_to(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dir.join("new").join(&name))?;
        File::open(dir.join("new"))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| name)
}

/// The envelope written as header fields above a message that is handed over as a file:
/// `Return-Path: <sender>`, then `FIELD: recipient` for each recipient (`Delivered-To` for a
/// Maildir, `Envelope-To` for CommuniGate Pro's Submitted folder).
pub fn envelope_head(sender: &[u8], recipients: &[Vec<u8>], field: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(64 + recipients.len() * 40);
    head.extend_from_slice(b"Return-Path: <");
    head.extend_from_slice(smtp_sender(sender));
    head.extend_from_slice(b">\n");
    for r in recipients {
        head.extend_from_slice(field.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(r);
        head.push(b'\n');
    }
    head
}

/// The sender as it goes into `Return-Path:` and `MAIL FROM`: the double-bounce marker is
/// written as the null sender.
pub fn smtp_sender(sender: &[u8]) -> &[u8] {
    if sender == super::DOUBLE_BOUNCE_SENDER {
        b""
    } else {
        sender
    }
}
