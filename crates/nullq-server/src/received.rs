//! The Received lines the server puts on top of every message, as qmail does.
//!
//! qmail-qmqpd writes `Received: from HOST (IP)\n  by LOCALHOST with QMQP; DATE` and the
//! qmail-queue it runs adds `Received: (qmail PID invoked from network); DATE` above it; nullq does
//! both jobs, so it writes both, in the same order, with `nullq` for `qmail`. Names come from the
//! network or the environment, so every character outside qmail-qmqpd's safe set is replaced by
//! `?`, as qmail-qmqpd does, and no header can be injected through them.

use std::time::SystemTime;

use crate::session::Peer;

/// The Received lines for a message from `peer`, arriving at `when`.
pub fn header(peer: &Peer, local_name: &str, when: SystemTime) -> String {
    let date = nullq_mail::date::date822(when);
    format!(
        "Received: (nullq {} invoked from network); {date}\n\
         Received: from {} ({})\n  by {} with QMQP; {date}\n",
        std::process::id(),
        safe(&peer.host),
        safe(&peer.addr_text()),
        safe(local_name),
    )
}

/// qmail-qmqpd's `safeput`: keep `[A-Za-z0-9.@%+/=:-]` and brackets, replace the rest by `?`.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".@%+/=:-[]".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn looks_like_qmail_and_cannot_inject_lines() {
        let peer = Peer {
            ip: "128.164.26.3".parse().ok(),
            host: "lou.example.net\nX-Evil: 1".into(),
            env: Vec::new(),
        };
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        let h = header(&peer, "mail.example.net", when);
        let pid = std::process::id();
        assert_eq!(
            h,
            format!(
                "Received: (nullq {pid} invoked from network); 22 May 2003 01:41:42 -0000\n\
                 Received: from lou.example.net?X-Evil:?1 (128.164.26.3)\n  \
                 by mail.example.net with QMQP; 22 May 2003 01:41:42 -0000\n"
            )
        );
    }
}
