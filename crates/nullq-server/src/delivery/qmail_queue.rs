//! `qmail-queue:PATH`: hand the message to a qmail-queue-compatible program
//! (`shared/spec/qmail-queue.md`): the message on fd 0 (streamed from the spool, as for `pipe`),
//! the envelope (`Fsender\0Trcpt\0...\0`, the codec of `nullq_proto::envelope`) on fd 1. Exit 0 is delivered; 11–40 are permanent
//! (bounce); any other status, a signal or a timeout is temporary (retry), so an unknown code
//! never loses a message ([`nullq_proto::exit::QueueExit::is_permanent`]). Addresses that
//! begin with `-` are bounced before the program runs, as for `pipe:`
//! ([`crate::delivery::pipe::refuse_options`]): a wrapper that turns the envelope into argv must never
//! meet one.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nullq_proto::envelope::QmailEnvelope;
use nullq_proto::exit::QueueExit;
use tokio::process::Command;

use crate::delivery::backend::{Backend, Delivery};
use crate::delivery::job::smtp_sender;
use crate::delivery::job::{Answer, Job};
use crate::delivery::pipe;

/// A qmail-queue program target.
#[derive(Debug)]
pub struct QmailQueue {
    path: PathBuf,
    timeout: Duration,
}

/// A pipe whose ends close on exec (only the one given to the child survives, as its fd 1).
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which has room for two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl QmailQueue {
    /// Run the program at `path`, killing it after `timeout`.
    pub fn new(path: PathBuf, timeout: Duration) -> QmailQueue {
        QmailQueue { path, timeout }
    }

    /// Queue the message once for all of `job`'s recipients.
    async fn send(&self, job: &Job) -> Vec<Answer> {
        pipe::refuse_options(job, "qmail-queue", |job| self.deliver_all(job)).await
    }

    async fn deliver_all(&self, job: Job) -> Vec<Answer> {
        let job = &job;
        let what = format!("qmail-queue {}", self.path.display());
        let answer = match self.run(job).await {
            Err(e) => Answer::retry_ours(format!("{what}: cannot run: {e}")),
            Ok(end) => {
                let text = end.describe(&what);
                match (end.timed_out, end.code) {
                    (false, Some(0)) => Answer::delivered(text),
                    (false, Some(code)) => match QueueExit::from_code(code) {
                        Some(e) if e.is_permanent() => {
                            Answer::bounce(format!("{text} ({})", e.status_code()))
                        }
                        _ => Answer::retry(text),
                    },
                    _ => Answer::retry(text),
                }
            }
        };
        vec![answer; job.recipients.len()]
    }

    async fn run(&self, job: &Job) -> std::io::Result<pipe::ChildEnd> {
        let envelope = QmailEnvelope {
            sender: smtp_sender(&job.sender).to_vec(),
            recipients: job.recipients.clone(),
        }
        .encode();
        let (read_end, write_end) = pipe_pair()?;
        let mut cmd = Command::new(&self.path);
        cmd.stdout(Stdio::from(read_end));
        // The envelope is small; a blocking thread writes it (and waits for the child to read
        // it, if it is larger than the pipe buffer), then closes the pipe: EOF ends it.
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = File::from(write_end);
            let _ = file.write_all(&envelope);
        });
        let end = pipe::run(cmd, job.message.clone(), self.timeout).await;
        // If the child never read it, the write fails with EPIPE once the child is gone.
        let _ = writer.await;
        end
    }
}

impl Backend for QmailQueue {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        Box::pin(self.send(job))
    }
}
