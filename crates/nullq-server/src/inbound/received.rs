//! The Received lines the server puts on top of every message, as qmail does.
//!
//! qmail-qmqpd writes `Received: from HOST (INFO@IP)\n  by LOCALHOST with QMQP; DATE` (qmail's
//! `received()`, in `nullq_mail::trace`) and the qmail-queue it runs adds
//! `Received: (qmail PID invoked from network); DATE` above it; nullq does both jobs, so it writes
//! both, in the same order, with `nullq` for `qmail`. Names come from the network or the
//! environment, so every byte outside qmail-qmqpd's safe set is replaced by `?`, as qmail-qmqpd
//! does, and no header can be injected through them.

use std::time::SystemTime;

use nullq_mail::date::date822;
use nullq_mail::trace::{push_queue_received, push_received, Client};

use crate::inbound::peer::{Peer, TlsInfo};

/// The Received lines for a message from `peer`, arriving at `when`: built in one buffer with
/// one date (they are written for every message a session receives).
pub fn header(peer: &Peer, local_name: &str, when: SystemTime) -> String {
    let date = date822(when);
    let mut lines = String::with_capacity(256);
    push_queue_received(
        &mut lines,
        "nullq",
        nullq_fs::host::process_id(),
        "from network",
        &date,
    );
    let (protocol, comment) = match &peer.tls {
        None => ("QMQP", String::new()),
        // Postfix's place for it: after the client, before `by`.
        Some(tls) => ("QMQPS", tls_comment(tls)),
    };
    let ip = peer.received_ip();
    let client = Client {
        ip: &ip,
        host: &peer.host,
        info: peer.info.as_deref(),
        helo: None,
    };
    push_received(&mut lines, protocol, local_name, &client, &comment, &date);
    lines
}

/// The TLS comment lines, as Postfix writes them (`(using TLSv1.3 with cipher ...)`, and for a
/// verified client certificate `(Client CN "NAME" (verified OK))`), each ending in a newline.
/// The name comes from the certificate: only qmail-qmqpd's safe bytes are kept, so it cannot
/// end the comment or the field.
fn tls_comment(tls: &TlsInfo) -> String {
    let mut text = format!(
        "  (using {} with cipher {})\n",
        safe(&tls.version),
        safe(&tls.cipher)
    );
    if let Some(name) = &tls.client {
        text.push_str(&format!("  (Client CN \"{}\" (verified OK))\n", safe(name)));
    }
    text
}

/// `s` with every byte outside letters, digits and `-._@*` replaced by `?`.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._@*".contains(c) {
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
            ip_text: None,
            info: None,
            env: Vec::new(),
            tls: None,
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

    #[test]
    fn ident_and_tcpserver_address_text() {
        let peer = Peer {
            ip: None,
            host: "unknown".into(),
            ip_text: Some("0127.000.000.001".into()),
            info: Some("joe smith".into()),
            env: Vec::new(),
            tls: None,
        };
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        let h = header(&peer, "", when);
        assert!(
            h.ends_with(
                "Received: from unknown (joe?smith@0127.000.000.001)\n  \
                 by  with QMQP; 22 May 2003 01:41:42 -0000\n"
            ),
            "{h}"
        );
    }

    #[test]
    fn tls_like_postfix_and_cannot_inject_lines() {
        let peer = Peer {
            ip: "10.0.0.7".parse().ok(),
            host: "unknown".into(),
            ip_text: None,
            info: None,
            env: Vec::new(),
            tls: Some(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                client: Some("host1.example.net\")\nX-Evil: 1".into()),
            }),
        };
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_053_567_702);
        let h = header(&peer, "mx.example.net", when);
        assert!(
            h.ends_with(
                "Received: from unknown (10.0.0.7)\n  \
                 (using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\n  \
                 (Client CN \"host1.example.net???X-Evil??1\" (verified OK))\n  \
                 by mx.example.net with QMQPS; 22 May 2003 01:41:42 -0000\n"
            ),
            "{h}"
        );
    }
}
