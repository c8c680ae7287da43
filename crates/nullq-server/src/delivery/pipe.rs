//! `pipe:COMMAND ARGS`: run a command per message, the message on its standard input (LF line
//! ends, as received; streamed from the spool file a chunk at a time), the envelope in its arguments and environment:
//! - in an argument, `%s` becomes the sender, an argument `%r` becomes one argument per
//!   recipient (the configuration refuses `%r` inside other text: a recipient may hold a comma
//!   or a blank, so no joined list could be split back), and `%%` a `%`;
//! - `SENDER`, `RECIPIENT` (the first recipient) and `RECIPIENTS` (all, one per line: no
//!   address holds a newline, QMQP refuses them).
//!
//! An envelope address that begins with `-` would read as an option to the program
//! (`-oProgram=/bin/sh@x`): such a recipient fails (bounced, with the reason), and a sender
//! that begins with `-` fails every recipient; the program never sees them. The same rule
//! holds for the `qmail-queue:` target ([`refuse_options`]).
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

use crate::delivery::backend::{Backend, Delivery};
use crate::delivery::job::smtp_sender;
use crate::delivery::job::{Answer, Job};
use crate::delivery::message::Message;

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

    /// Run the command once for all of `job`'s recipients that may be passed to it.
    async fn send(&self, job: &Job) -> Vec<Answer> {
        refuse_options(job, "pipe", |job| self.run_once(job)).await
    }

    async fn run_once(&self, job: Job) -> Vec<Answer> {
        let job = &job;
        let argv = self.expand(job);
        let Some((program, args)) = argv.split_first() else {
            return vec![Answer::retry_ours("pipe: empty command"); job.recipients.len()];
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdout(Stdio::null())
            .env("SENDER", OsStr::from_bytes(smtp_sender(&job.sender)))
            .env(
                "RECIPIENT",
                OsStr::from_bytes(job.recipients.first().map_or(&b""[..], |r| r)),
            )
            .env(
                "RECIPIENTS",
                OsString::from_vec(job.recipients.join(&b'\n')),
            );
        let what = format!("pipe {}", program.to_string_lossy());
        let answer = match run(cmd, job.message.clone(), self.timeout).await {
            Err(e) => Answer::retry_ours(format!("{what}: cannot run: {e}")),
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

/// Why an address may not reach a program's argv or envelope: it begins with `-`.
fn option_like(address: &[u8]) -> bool {
    address.first() == Some(&b'-')
}

/// Deliver `job` through `run` with only the recipients a program may be handed: a recipient
/// that begins with `-` is bounced, and if the sender does, every recipient is. The answers
/// come back one per recipient, in `job`'s order.
pub async fn refuse_options<F, Fut>(job: &Job, target: &str, run: F) -> Vec<Answer>
where
    F: FnOnce(Job) -> Fut,
    Fut: std::future::Future<Output = Vec<Answer>>,
{
    let refused = |what: &str, address: &[u8]| {
        option_like(address).then(|| {
            Answer::bounce(format!(
                "{target}: {what} <{}> begins with '-' and would read as an option: not passed to the program",
                String::from_utf8_lossy(address)
            ))
        })
    };
    crate::delivery::job::deliver_refusing(job, refused, run).await
}

impl Backend for Pipe {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        Box::pin(self.send(job))
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
                "100%%".into(),
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
        assert_eq!(got, ["/bin/x", "-f", "a@b", "c@d", "e@f", "100%"]);
    }

    fn job(sender: &[u8], rcpts: &[&[u8]]) -> Job {
        Job {
            id: "0000000000000001.00000001.00000001".parse().unwrap(),
            sender: sender.to_vec(),
            recipients: rcpts.iter().map(|r| r.to_vec()).collect(),
            message: Message::from_bytes(Vec::new()),
        }
    }

    fn verdicts(answers: &[Answer]) -> Vec<&'static str> {
        answers.iter().map(|a| a.verdict.word()).collect()
    }

    #[tokio::test]
    async fn a_backend_answering_too_few_retries_every_passed_recipient() {
        // Matched by position, a missing answer would land on the wrong recipient.
        let j = job(b"a@b", &[b"ok@x", b"-o@x", b"ok2@x"]);
        let answers = refuse_options(&j, "pipe", |_| async move {
            vec![Answer::delivered("only one")]
        })
        .await;
        assert_eq!(verdicts(&answers), ["deferred", "failed", "deferred"]);
        assert!(
            answers[0].text.contains("1 answers for 2 recipients"),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn option_like_recipients_never_reach_the_program() {
        let j = job(b"a@b", &[b"ok@x", b"-oProgram=/bin/sh@x", b"ok2@x"]);
        let seen = std::sync::Mutex::new(Vec::new());
        let answers = refuse_options(&j, "pipe", |passed| {
            seen.lock().unwrap().push(passed.recipients.clone());
            async move { vec![Answer::delivered("ok"); passed.recipients.len()] }
        })
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![b"ok@x".to_vec(), b"ok2@x".to_vec()]]
        );
        assert_eq!(verdicts(&answers), ["delivered", "failed", "delivered"]);
        assert!(
            answers[1].text.contains("would read as an option"),
            "{}",
            answers[1].text
        );
    }

    #[tokio::test]
    async fn an_option_like_sender_fails_every_recipient_and_runs_nothing() {
        let j = job(b"-fevil@x", &[b"ok@x", b"ok2@x"]);
        let answers = refuse_options(&j, "qmail-queue", |_| async {
            panic!("the program must not run")
        })
        .await;
        assert_eq!(verdicts(&answers), ["failed", "failed"]);
    }
}
