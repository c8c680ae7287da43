//! What a backend is handed and what it answers: a [`Job`] (one message, some recipients) and
//! one [`Answer`] per recipient. The types every backend, the decision and the runner share.

use nullq_spool::QueueId;

use crate::delivery::message::Message;

/// The sender of a double bounce sent to the postmaster (qmail's `#@[]`): a message with this
/// sender that fails is dropped, never bounced again. Backends that speak SMTP send it as `<>`.
pub const DOUBLE_BOUNCE_SENDER: &[u8] = b"#@[]";

/// The sender as it goes into `Return-Path:` and `MAIL FROM`: the double-bounce marker is
/// written as the null sender.
pub fn smtp_sender(sender: &[u8]) -> &[u8] {
    if sender == DOUBLE_BOUNCE_SENDER {
        b""
    } else {
        sender
    }
}

/// What a backend is asked to deliver: one message to some of its recipients.
#[derive(Debug, Clone)]
pub struct Job {
    /// The message's queue id (for file names and logs).
    pub id: QueueId,
    /// The envelope sender after rewriting (empty: the null sender).
    pub sender: Vec<u8>,
    /// The recipients for this backend, after rewriting.
    pub recipients: Vec<Vec<u8>>,
    /// The message, header rewritten (LF line ends, as received): read it with
    /// [`Message::open`] or [`Message::chunks`].
    pub message: Message,
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered: done.
    Delivered,
    /// Not now: try again later (until the queue lifetime ends).
    Retry,
    /// Never: bounce.
    Bounce,
}

impl Verdict {
    /// The word in log lines.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "deferred",
            Verdict::Bounce => "failed",
        }
    }
}

/// A backend's answer for one recipient: the verdict and the remote answer or exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What to do with the recipient.
    pub verdict: Verdict,
    /// The remote answer (`250 2.0.0 Ok`), exit status and stderr, or our own reason.
    pub text: String,
    /// The trouble is this host's (a local target's disk full or failing, a program that
    /// cannot be run), not a remote's answer: the runner logs it at WARN, not INFO, so that
    /// whoever watches for warnings sees it.
    pub ours: bool,
}

impl Answer {
    /// Delivered, with this text.
    pub fn delivered(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Delivered,
            text: text.into(),
            ours: false,
        }
    }
    /// Try again later, because of this.
    pub fn retry(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Retry,
            text: text.into(),
            ours: false,
        }
    }
    /// Try again later, because of this trouble of this host's (see [`Answer::ours`]).
    pub fn retry_ours(text: impl Into<String>) -> Answer {
        Answer {
            ours: true,
            ..Answer::retry(text)
        }
    }
    /// Failed for good, because of this.
    pub fn bounce(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Bounce,
            text: text.into(),
            ours: false,
        }
    }
}

/// Deliver `job` through `run` with only the addresses the backend may be handed. `refused`
/// says why an address (`"the sender"` or `"the recipient"`, and its bytes) must not be: such a
/// recipient is bounced with that reason, and if the sender is refused, every recipient is.
/// The others go to `run` (not called if none is left). The answers come back one per
/// recipient, in `job`'s order. The sender is judged as backends send it: the double-bounce
/// marker as the null sender.
pub async fn deliver_refusing<F, Fut>(
    job: &Job,
    refused: impl Fn(&str, &[u8]) -> Option<Answer>,
    run: F,
) -> Vec<Answer>
where
    F: FnOnce(Job) -> Fut,
    Fut: std::future::Future<Output = Vec<Answer>>,
{
    let sender = smtp_sender(&job.sender);
    if let Some(answer) = refused("the sender", sender) {
        return vec![answer; job.recipients.len()];
    }
    let verdicts: Vec<Option<Answer>> = job
        .recipients
        .iter()
        .map(|r| refused("the recipient", r))
        .collect();
    if verdicts.iter().all(Option::is_none) {
        return run(job.clone()).await;
    }
    let passed: Vec<Vec<u8>> = job
        .recipients
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_none())
        .map(|(r, _)| r.clone())
        .collect();
    let wanted = passed.len();
    let mut answers = if passed.is_empty() {
        Vec::new()
    } else {
        run(Job {
            recipients: passed,
            ..job.clone()
        })
        .await
    };
    if answers.len() != wanted {
        // Matched by position, a missing or extra answer would land on the wrong recipient
        // (one marked delivered that was not): all of them are retried instead, as
        // `backend::deliver` does for a whole job.
        let why = format!(
            "the backend gave {} answers for {wanted} recipients",
            answers.len()
        );
        answers = vec![Answer::retry(why); wanted];
    }
    let mut answers = answers.into_iter();
    verdicts
        .into_iter()
        .map(|v| {
            v.unwrap_or_else(|| {
                answers
                    .next()
                    .unwrap_or_else(|| Answer::retry("the backend gave no answer"))
            })
        })
        .collect()
}
