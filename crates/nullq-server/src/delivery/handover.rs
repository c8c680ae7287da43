//! How a backend hands the envelope over with a message: the sender as SMTP and qmail send it
//! (the double-bounce marker as the null sender), and the envelope as header fields above a
//! message that is handed over as a file (Maildir, CommuniGate Pro, pipe, qmail-queue).

use crate::delivery::job::smtp_sender;

/// The envelope written as header fields above a message that is handed over as a file:
/// `Return-Path: <sender>`, then `FIELD: recipient` for each recipient (`Delivered-To` for a
/// Maildir), the addresses as they are, as qmail-local writes them. CommuniGate Pro's
/// Submitted folder needs them quoted and its header checked: see `cgp.rs`.
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
