//! The trace fields (`Received`) the QMQP server adds, exactly as qmail-qmqpd and qmail-queue
//! write them (qmail's `received.c` and `qmail-queue.c`).
//!
//! This module owns their text only; the server decides when to add them. The seed's example:
//!
//! ```text
//! Received: (qmail 35693 invoked from network); 22 May 2003 01:41:42 -0000
//! Received: from lou.example.net (128.164.26.3)
//!   by mail.example.net with QMQP; 22 May 2003 01:41:42 -0000
//! ```

use std::time::SystemTime;

use crate::date::date822;

/// qmail's `issafe`: bytes that go into a Received field unchanged; any other becomes `?`.
fn is_safe(ch: u8) -> bool {
    ch.is_ascii_alphanumeric() || b".@%+/=:-[]".contains(&ch)
}

/// Appends `s` to `out` with every byte outside `[A-Za-z0-9.@%+/=:\-\[\]]` replaced by `?`
/// (qmail's `safeput`), so that a peer's name cannot forge header lines.
fn push_safe(out: &mut String, s: &str) {
    out.extend(s.bytes().map(|b| if is_safe(b) { b as char } else { '?' }));
}

/// qmail's `received()`: `Received: from HOST (HELO helo) (info@IP)\n  by LOCAL with PROTO; DATE\n`,
/// where the `(HELO ...)` and `info@` parts appear only when given.
pub fn received(
    protocol: &str,
    local: &str,
    remote_ip: &str,
    remote_host: &str,
    remote_info: Option<&str>,
    helo: Option<&str>,
    time: SystemTime,
) -> String {
    let mut s = String::with_capacity(128);
    let client = Client {
        ip: remote_ip,
        host: remote_host,
        info: remote_info,
        helo,
    };
    push_received(&mut s, protocol, local, &client, "", &date822(time));
    s
}

/// The client as [`received`] names it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Its IP address as text.
    pub ip: &'a str,
    /// Its host name (`unknown` when not known).
    pub host: &'a str,
    /// The ident user name, for `info@`.
    pub info: Option<&'a str>,
    /// What it said in HELO, for `(HELO ...)`.
    pub helo: Option<&'a str>,
}

/// [`received`] appended to `out`, with `comment` (whole lines, each ending in `\n`, or empty:
/// Postfix's place for its TLS comment) between the client and `by`, and `date` as
/// [`date822`] wrote it: the server builds both trace fields of a message in one buffer, with
/// one date.
pub fn push_received(
    out: &mut String,
    protocol: &str,
    local: &str,
    client: &Client<'_>,
    comment: &str,
    date: &str,
) {
    out.push_str("Received: from ");
    push_safe(out, client.host);
    if let Some(helo) = client.helo {
        out.push_str(" (HELO ");
        push_safe(out, helo);
        out.push(')');
    }
    out.push_str(" (");
    if let Some(info) = client.info {
        push_safe(out, info);
        out.push('@');
    }
    push_safe(out, client.ip);
    out.push_str(")\n");
    out.push_str(comment);
    out.push_str("  by ");
    push_safe(out, local);
    out.push_str(" with ");
    out.push_str(protocol);
    out.push_str("; ");
    out.push_str(date);
    out.push('\n');
}

/// qmail-queue's own trace field: `Received: (qmail PID invoked WHO); DATE\n`, where `invoked`
/// is `from network` (qmaild), `by alias`, `for bounce` or `by uid N`.
pub fn queue_received(pid: u32, invoked: &str, time: SystemTime) -> String {
    let mut s = String::with_capacity(64);
    push_queue_received(&mut s, "qmail", pid, invoked, &date822(time));
    s
}

/// [`queue_received`] appended to `out`, naming `program` (nullq's server writes `nullq`) and
/// with `date` as [`date822`] wrote it.
pub fn push_queue_received(out: &mut String, program: &str, pid: u32, invoked: &str, date: &str) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Received: ({program} {pid} invoked {invoked}); {date}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn seed_example() {
        let t = UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        // The two fields a qmail QMQP server puts on top, in message order: qmail-queue's, then
        // qmail-qmqpd's.
        let fields = queue_received(35693, "from network", t)
            + &received(
                "QMQP",
                "mail.example.net",
                "128.164.26.3",
                "lou.example.net",
                None,
                None,
                t,
            );
        assert_eq!(
            fields,
            "Received: (qmail 35693 invoked from network); 22 May 2003 01:41:42 -0000\n\
             Received: from lou.example.net (128.164.26.3)\n  by mail.example.net with QMQP; \
             22 May 2003 01:41:42 -0000\n"
        );
    }

    #[test]
    fn as_notqmail_qmqpd_writes_it() {
        // Output of notqmail's qmail-qmqpd (QMAILQUEUE capturing the message) with
        // TCPREMOTEHOST='evil host(x)', TCPREMOTEIP=128.164.26.3, TCPLOCALHOST=mail.example.net.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_694_841);
        assert_eq!(
            received("QMQP", "mail.example.net", "128.164.26.3", "evil host(x)", None, None, t),
            "Received: from evil?host?x? (128.164.26.3)\n  by mail.example.net with QMQP; 26 Nov 2026 \
             12:07:21 -0000\n"
        );
    }

    #[test]
    fn unsafe_bytes() {
        let mut safe = String::new();
        push_safe(&mut safe, "a b\r\nc(d)é");
        assert_eq!(safe, "a?b??c?d???");
        let t = UNIX_EPOCH;
        assert_eq!(
            received("SMTP", "me", "1.2.3.4", "evil\nX-Forged: 1", Some("joe"), Some("h)"), t),
            "Received: from evil?X-Forged:?1 (HELO h?) (joe@1.2.3.4)\n  by me with SMTP; 1 Jan 1970 00:00:00 -0000\n"
        );
    }
}
