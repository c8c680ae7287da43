//! Bounces and delay warnings: RFC 3464 delivery status notifications
//! (`multipart/report; report-type=delivery-status`), with the original's header attached as
//! `text/rfc822-headers`, queued as new spool messages from the null sender to the original
//! envelope sender, so they go out through the same routes as any other message.
//!
//! Loops are impossible by construction: a message from the null sender is never bounced; its
//! failure (a double bounce) goes to the configured postmaster from the sender `#@[]`, or is
//! logged and dropped; a message from `#@[]` that fails is dropped.

use std::fmt;
use std::time::SystemTime;

use nullq_spool::{DeliveryState, Envelope, QueueId, QueuedMessage, Spool, SpoolError};

use crate::delivery::decide::{BounceTo, Failure};
use crate::delivery::job::DOUBLE_BOUNCE_SENDER;
use crate::delivery::message::ORIGINAL_HEADER_MAX;

/// What [`queue_bounce`] did.
#[derive(Debug)]
pub enum Queued {
    /// A bounce to the sender was queued with this id.
    Bounce(QueueId),
    /// The failed message was itself a bounce: a double bounce went to the postmaster.
    DoubleBounce(QueueId),
    /// A double bounce with no postmaster configured, or a triple bounce: logged, dropped.
    Dropped,
}

impl fmt::Display for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Queued::Bounce(id) => write!(f, "bounce queued as {id}"),
            Queued::DoubleBounce(id) => {
                write!(f, "double bounce queued as {id} for the postmaster")
            }
            Queued::Dropped => f.write_str("double bounce: nobody to tell, dropped"),
        }
    }
}

/// Queue the bounce for `failures` of `original` to `to` (durably: it is committed when this
/// returns; [`BounceTo::Nobody`] queues nothing). `message`: the start of the original message,
/// at least its first [`ORIGINAL_HEADER_MAX`] bytes (or all of it), from which the header is
/// taken.
pub fn queue_bounce(
    spool: &Spool,
    local_name: &str,
    original: &QueuedMessage,
    message: &[u8],
    failures: &[Failure],
    to: &BounceTo,
    now: SystemTime,
) -> Result<Queued, SpoolError> {
    let (from, to, double) = match to {
        BounceTo::Sender(sender) => (Vec::new(), sender.clone(), false),
        BounceTo::Postmaster(pm) => (DOUBLE_BOUNCE_SENDER.to_vec(), pm.clone(), true),
        BounceTo::Nobody => return Ok(Queued::Dropped),
    };
    let items: Vec<Item> = failures
        .iter()
        .map(|f| Item {
            recipient: f.recipient.clone(),
            text: f.text.clone(),
            status: status_code(&f.text, f.expired),
            action: "failed",
        })
        .collect();
    let intro = "I'm afraid I wasn't able to deliver your message to the following addresses.\n\
                 This is a permanent error; I've given up. Sorry it didn't work out.";
    let body = report(
        local_name,
        original,
        message,
        &items,
        &to,
        "failure notice",
        intro,
        now,
    );
    let id = enqueue(spool, &from, &to, &body)?;
    Ok(if double {
        Queued::DoubleBounce(id)
    } else {
        Queued::Bounce(id)
    })
}

/// Queue a delay warning for the recipients at `pending` of `original` (`message` as for
/// [`queue_bounce`]).
pub fn queue_warning(
    spool: &Spool,
    local_name: &str,
    original: &QueuedMessage,
    message: &[u8],
    state: &DeliveryState,
    pending: &[usize],
    now: SystemTime,
) -> Result<QueueId, SpoolError> {
    let items: Vec<Item> = pending
        .iter()
        .filter_map(|&i| {
            Some(Item {
                recipient: original.envelope.recipients.get(i)?.clone(),
                text: state.recipients.get(i)?.last_result.clone(),
                status: "4.0.0".into(),
                action: "delayed",
            })
        })
        .collect();
    let intro = "Your message has not been delivered yet to the following addresses.\n\
                 I'll keep trying; you need not send it again. This is only a warning.";
    let to = original.envelope.sender.clone();
    let body = report(
        local_name,
        original,
        message,
        &items,
        &to,
        "delivery delayed",
        intro,
        now,
    );
    enqueue(spool, b"", &to, &body)
}

struct Item {
    recipient: Vec<u8>,
    text: String,
    status: String,
    action: &'static str,
}

/// The RFC 3463 status code in a remote answer (`550 5.1.1 ...`), else one that fits.
fn status_code(text: &str, expired: bool) -> String {
    for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            // An expired temporary failure is reported as failed with its 4.x.x code.
            return word.to_owned();
        }
    }
    if expired {
        "4.4.7".into()
    } else {
        "5.0.0".into()
    }
}

/// Header text must not carry raw control bytes or 8-bit bytes.
fn clean(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The original's header (up to the first empty line), at most [`ORIGINAL_HEADER_MAX`] bytes.
fn original_header(message: &[u8]) -> &[u8] {
    let limit = message.len().min(ORIGINAL_HEADER_MAX);
    let head = &message[..limit];
    let end = head
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(head.len(), |p| p + 1);
    &head[..end]
}

#[allow(clippy::too_many_arguments)]
fn report(
    local_name: &str,
    original: &QueuedMessage,
    message: &[u8],
    items: &[Item],
    to: &[u8],
    subject: &str,
    intro: &str,
    now: SystemTime,
) -> Vec<u8> {
    let boundary = format!("nullq-{}", original.id);
    let date = nullq_mail::date::date822(now);
    let mut out = String::with_capacity(2048);
    out.push_str(&format!("From: MAILER-DAEMON@{local_name}\n"));
    out.push_str(&format!("To: {}\n", clean(to)));
    out.push_str(&format!("Subject: {subject}\n"));
    out.push_str(&format!("Date: {date}\n"));
    out.push_str(&format!(
        "Message-ID: <{}.{}.bounce@{local_name}>\n",
        original.id,
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    ));
    out.push_str("Auto-Submitted: auto-replied\n");
    out.push_str("MIME-Version: 1.0\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n boundary=\"{boundary}\"\n\n"
    ));
    out.push_str("This is a MIME-encapsulated message.\n\n");
    // 1. For people.
    out.push_str(&format!(
        "--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n\
         Hi. This is the nullq delivery program at {local_name}.\n{intro}\n\n"
    ));
    for item in items {
        out.push_str(&format!(
            "<{}>:\n{}\n\n",
            clean(&item.recipient),
            clean(item.text.as_bytes())
        ));
    }
    // 2. For programs (RFC 3464 section 2).
    out.push_str(&format!(
        "--{boundary}\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; {local_name}\n\
         X-Nullq-Queue-ID: {}\n\
         Arrival-Date: {}\n",
        original.id,
        nullq_mail::date::date822(original.envelope.arrival)
    ));
    for item in items {
        let diag_type =
            if item.text.len() >= 3 && item.text.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                "smtp"
            } else {
                "x-nullq"
            };
        out.push_str(&format!(
            "\nFinal-Recipient: rfc822; {}\nAction: {}\nStatus: {}\nDiagnostic-Code: {diag_type}; {}\nLast-Attempt-Date: {date}\n",
            clean(&item.recipient),
            item.action,
            item.status,
            clean(item.text.as_bytes())
        ));
    }
    out.push('\n');
    // 3. The original's header.
    out.push_str(&format!(
        "--{boundary}\nContent-Type: text/rfc822-headers\n\n"
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(original_header(message));
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    bytes
}

/// Commit a new message to the spool (as a session would, without the network).
pub fn enqueue(
    spool: &Spool,
    sender: &[u8],
    to: &[u8],
    body: &[u8],
) -> Result<QueueId, SpoolError> {
    let mut incoming = spool.receive()?;
    incoming.write(body)?;
    let envelope = Envelope {
        arrival: SystemTime::now(),
        client_addr: "local".into(),
        client_host: "nullq-delivery".into(),
        sender: sender.to_vec(),
        recipients: vec![to.to_vec()],
    };
    incoming.finish(&envelope)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_code("550 5.1.1 <x>: unknown user", false), "5.1.1");
        assert_eq!(status_code("554 no", false), "5.0.0");
        assert_eq!(status_code("451 4.3.0 later (gave up)", true), "4.3.0");
        assert_eq!(status_code("connection refused", true), "4.4.7");
    }

    #[test]
    fn header_stops_at_blank_line() {
        assert_eq!(original_header(b"A: b\nC: d\n\nbody\n"), b"A: b\nC: d\n");
        assert_eq!(original_header(b"A: b\n"), b"A: b\n");
    }
}
