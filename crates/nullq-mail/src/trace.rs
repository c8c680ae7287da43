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

/// `s` with every byte outside `[A-Za-z0-9.@%+/=:\-\[\]]` replaced by `?` (qmail's `safeput`),
/// so that a peer's name cannot forge header lines.
fn safe(s: &str) -> String {
    s.bytes()
        .map(|b| if is_safe(b) { b as char } else { '?' })
        .collect()
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
    let mut s = format!("Received: from {}", safe(remote_host));
    if let Some(helo) = helo {
        s.push_str(&format!(" (HELO {})", safe(helo)));
    }
    s.push_str(" (");
    if let Some(info) = remote_info {
        s.push_str(&safe(info));
        s.push('@');
    }
    s.push_str(&format!(
        "{})\n  by {} with {}; {}\n",
        safe(remote_ip),
        safe(local),
        protocol,
        date822(time)
    ));
    s
}

/// qmail-queue's own trace field: `Received: (qmail PID invoked WHO); DATE\n`, where `invoked`
/// is `from network` (qmaild), `by alias`, `for bounce` or `by uid N`.
pub fn queue_received(pid: u32, invoked: &str, time: SystemTime) -> String {
    format!(
        "Received: (qmail {pid} invoked {invoked}); {}\n",
        date822(time)
    )
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
        assert_eq!(safe("a b\r\nc(d)é"), "a?b??c?d???");
        let t = UNIX_EPOCH;
        assert_eq!(
            received("SMTP", "me", "1.2.3.4", "evil\nX-Forged: 1", Some("joe"), Some("h)"), t),
            "Received: from evil?X-Forged:?1 (HELO h?) (joe@1.2.3.4)\n  by me with SMTP; 1 Jan 1970 00:00:00 -0000\n"
        );
    }
}
