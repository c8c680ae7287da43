//! `pipe:COMMAND ARGS`: run a command per message, the message on its standard input (LF line
//! ends, as received; streamed from the spool file a chunk at a time), the envelope in its arguments and environment:
//! - in an argument, `%s` becomes the sender, `%r` the recipients (an argument that is exactly
//!   `%r` becomes one argument per recipient; inside other text they are joined with commas),
//!   and `%%` a `%`;
//! - `SENDER`, `RECIPIENT` (the first recipient) and `RECIPIENTS` (all, separated by blanks).
//!
//! No shell runs: the words were split when the configuration was read. Exit 0 is delivered,
//! 75 (`EX_TEMPFAIL`) and death by a signal or timeout are "try again", any other status fails
//! the recipients, with the command's stderr (its first 2000 bytes) in the bounce, as qmail's
//! `|command` deliveries do.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;

use super::maildir::smtp_sender;
use super::{Answer, Job, Message};

/// How much of a child's stderr is kept for the log and the bounce.
const STDERR_KEPT: usize = 2000;

/// A pipe target.
#[derive(Debug)]
pub struct Pipe {
    argv: Vec<String>,
    timeout: Duration,
}

/// How a child ended.
#[derive(Debug)]
pub struct ChildEnd {
    /// Its exit code, or `None` if a signal killed it (or we did, on timeout).
    pub code: Option<i32>,
    /// The first bytes of its stderr, as text.
    pub stderr: String,
    /// It ran out of time and was killed.
    pub timed_out: bool,
}

impl ChildEnd {
    /// `exit N: stderr` for logs and bounces.
    pub fn describe(&self, what: &str) -> String {
        let status = match (self.timed_out, self.code) {
            (true, _) => "timed out, killed".to_owned(),
            (false, Some(c)) => format!("exit {c}"),
            (false, None) => "killed by a signal".to_owned(),
        };
        let err = self.stderr.trim();
        if err.is_empty() {
            format!("{what}: {status}")
        } else {
            format!("{what}: {status}: {err}")
        }
    }
}

/// Run `cmd` with `input` on its stdin, keep its stderr, kill it after `timeout`. `cmd` must
/// not have stdin or stderr set; stdout goes nowhere unless the caller set it.
///
/// The message is streamed to the child a chunk at a time. If reading it from the spool fails,
/// the child is killed before its stdin is closed (so it never takes a cut message for a whole
/// one) and the error is returned: the recipients are tried again.
pub async fn run(mut cmd: Command, input: Message, timeout: Duration) -> std::io::Result<ChildEnd> {
    cmd.stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    drop(cmd);
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let feed = async move {
        let Some(mut stdin) = stdin else {
            return (None, None);
        };
        let mut chunks = input.chunks();
        while let Some(chunk) = chunks.recv().await {
            match chunk {
                Ok(bytes) => {
                    if stdin.write_all(&bytes).await.is_err() {
                        // A child that exits without reading everything is judged by its
                        // exit status.
                        return (None, None);
                    }
                }
                Err(e) => {
                    // Keep stdin open until the child is dead: EOF now would end the message.
                    let _ = abort_tx.send(());
                    return (Some(e), Some(stdin));
                }
            }
        }
        let _ = stdin.shutdown().await;
        (None, None)
    };
    let collect = async move {
        let mut kept = Vec::new();
        if let Some(mut stderr) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    };
    let wait = async {
        tokio::select! {
            status = child.wait() => status,
            Ok(()) = abort_rx => {
                let _ = child.kill().await;
                Err(std::io::Error::other("killed: the message could not be read"))
            }
        }
    };
    let work = async {
        let ((failed, stdin), kept, status) = tokio::join!(feed, collect, wait);
        drop(stdin);
        (failed, kept, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((Some(e), _, _)) => Err(std::io::Error::other(format!(
            "reading the queued message: {e}"
        ))),
        Ok((None, kept, status)) => {
            let status = status?;
            Ok(ChildEnd {
                code: status.code(),
                stderr: String::from_utf8_lossy(&kept).replace(['\n', '\r'], " "),
                timed_out: false,
            })
        }
        Err(_) => {
            let _ = child.kill().await;
            Ok(ChildEnd {
                code: None,
                stderr: String::new(),
                timed_out: true,
            })
        }
    }
}

impl Pipe {
    /// Run `argv` (program first) for each message, killing it after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Pipe {
        Pipe { argv, timeout }
    }

    /// The command line for `job`, expanded.
    fn expand(&self, job: &Job) -> Vec<OsString> {
        let sender = smtp_sender(&job.sender);
        let mut out = Vec::with_capacity(self.argv.len() + job.recipients.len());
        for arg in &self.argv {
            if arg == "%r" {
                out.extend(job.recipients.iter().map(|r| OsString::from_vec(r.clone())));
                continue;
            }
            let mut bytes = Vec::with_capacity(arg.len());
            let mut rest = arg.as_bytes();
            while let Some((&b, tail)) = rest.split_first() {
                match (b, tail.first()) {
                    (b'%', Some(b's')) => bytes.extend_from_slice(sender),
                    (b'%', Some(b'r')) => bytes.extend_from_slice(&job.recipients.join(&b',')),
                    (b'%', Some(b'%')) => bytes.push(b'%'),
                    _ => {
                        bytes.push(b);
                        rest = tail;
                        continue;
                    }
                }
                rest = &tail[1..];
            }
            out.push(OsString::from_vec(bytes));
        }
        out
    }

    /// Run the command once for all of `job`'s recipients.
    pub async fn deliver(&self, job: &Job) -> Vec<Answer> {
        let argv = self.expand(job);
        let Some((program, args)) = argv.split_first() else {
            return vec![Answer::retry("pipe: empty command"); job.recipients.len()];
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdout(Stdio::null())
            .env("SENDER", OsStr::from_bytes(smtp_sender(&job.sender)))
            .env(
                "RECIPIENT",
                OsStr::from_bytes(job.recipients.first().map_or(&b""[..], |r| r)),
            )
            .env("RECIPIENTS", OsString::from_vec(job.recipients.join(&b' ')));
        let what = format!("pipe {}", program.to_string_lossy());
        let answer = match run(cmd, job.message.clone(), self.timeout).await {
            Err(e) => Answer::retry(format!("{what}: cannot run: {e}")),
            Ok(end) => {
                let text = end.describe(&what);
                match (end.timed_out, end.code) {
                    (false, Some(0)) => Answer::delivered(text),
                    (false, Some(75)) | (true, _) | (false, None) => Answer::retry(text),
                    (false, Some(_)) => Answer::bounce(text),
                }
            }
        };
        vec![answer; job.recipients.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let p = Pipe::new(
            vec![
                "/bin/x".into(),
                "-f".into(),
                "%s".into(),
                "%r".into(),
                "to=%r;100%%".into(),
            ],
            Duration::from_secs(1),
        );
        let job = Job {
            id: "0000000000000001.00000001.00000001".parse().unwrap(),
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec(), b"e@f".to_vec()],
            message: Message::from_bytes(Vec::new()),
        };
        let got: Vec<String> = p
            .expand(&job)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            ["/bin/x", "-f", "a@b", "c@d", "e@f", "to=c@d,e@f;100%"]
        );
    }
}
