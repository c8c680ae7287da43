//! The qmail-queue envelope (qmail-queue(8)): what a program hands qmail-queue on fd 1.
//!
//! `F` + sender + NUL, then `T` + recipient + NUL for each recipient, then one more NUL:
//! `Fjason@example.net\0Tbob@example.net\0\0`. The client reads it on the way in (programs written
//! for qmail call `qmail-queue`), and the server's qmail-queue delivery backend writes it on the
//! way out, so both sides share this one codec.

use std::fmt;

/// qmail-queue's limit on one address, NUL included (its `ADDR` constant is 1003).
pub const MAX_ADDRESS: usize = 1003;

/// An envelope: the sender (empty for bounces) and the recipients.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QmailEnvelope {
    /// The envelope sender; empty is the null sender.
    pub sender: Vec<u8>,
    /// The envelope recipients, in order.
    pub recipients: Vec<Vec<u8>>,
}

/// Why an envelope was refused; each maps to qmail-queue's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The envelope ended before its final NUL: exit 91, as qmail-qmqpc (the qmail-queue of a
    /// null client) exits; qmail's own qmail-queue says 54 there.
    Truncated,
    /// Not in the format above (exit 91).
    Format,
    /// An address of [`MAX_ADDRESS`] bytes or more (exit 11).
    AddressTooLong,
}

impl EnvelopeError {
    /// The qmail-queue exit code for this error.
    pub fn exit(self) -> crate::exit::QueueExit {
        use crate::exit::QueueExit;
        match self {
            EnvelopeError::Truncated | EnvelopeError::Format => QueueExit::EnvelopeFormat,
            EnvelopeError::AddressTooLong => QueueExit::AddressTooLong,
        }
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Truncated => write!(f, "envelope ended before its final NUL"),
            EnvelopeError::Format => write!(f, "envelope format error"),
            EnvelopeError::AddressTooLong => write!(f, "address too long in envelope"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl QmailEnvelope {
    /// Parse a complete envelope. Bytes after the final NUL are ignored: qmail-queue and
    /// qmail-qmqpc both stop reading at the final NUL and never look at what follows.
    pub fn parse(bytes: &[u8]) -> Result<QmailEnvelope, EnvelopeError> {
        QmailEnvelope::parse_prefix(bytes).map(|(envelope, _)| envelope)
    }

    /// Parse the envelope at the start of `bytes`; returns it and how many bytes it took (up to
    /// and with its final NUL).
    pub fn parse_prefix(bytes: &[u8]) -> Result<(QmailEnvelope, usize), EnvelopeError> {
        let (first, mut rest) = take_field(bytes)?;
        let sender = match first {
            [b'F', address @ ..] => check_length(address)?.to_vec(),
            _ => return Err(EnvelopeError::Format),
        };
        let mut recipients = Vec::new();
        loop {
            let (field, after) = take_field(rest)?;
            match field {
                [] => {
                    let used = bytes.len() - after.len();
                    return Ok((QmailEnvelope { sender, recipients }, used));
                }
                [b'T', address @ ..] => recipients.push(check_length(address)?.to_vec()),
                _ => return Err(EnvelopeError::Format),
            }
            rest = after;
        }
    }

    /// Why the null client refuses this envelope, if it does: an address with a control
    /// character ([`crate::qmqp::has_control_byte`]: nullq's QMQP server answers `D`; in
    /// qmail-queue's format a NUL would also end the address and start another field, a
    /// recipient no header showed), or one longer than a QMQP server takes
    /// ([`MAX_QMQP_ADDRESS`]; the fallback queue's reader refuses [`MAX_ADDRESS`] and more).
    /// The message is refused at once (permanently), so that the fallback queue never keeps
    /// what a later flush could only fail, after exit 0 told the sender it was on its way. An
    /// address without a domain is sent as it is: qmail's qmail-qmqpd takes `eve`, and the
    /// client cannot know which server it reaches.
    pub fn bad_address(&self) -> Option<String> {
        let show = |a: &[u8]| String::from_utf8_lossy(a).escape_debug().to_string();
        if let Some(why) = refused_address(&self.sender) {
            return Some(format!("the sender <{}>: {why}", show(&self.sender)));
        }
        self.recipients
            .iter()
            .find_map(|r| refused_address(r).map(|why| format!("a recipient <{}>: {why}", show(r))))
    }

    /// Why qmail-queue's format cannot carry this envelope as it is, if it cannot: an address
    /// with a NUL would end early and start another field. What qmail-inject checks before it
    /// hands the envelope to its queue program (nullq's qmail-qmqpc checks the rest, see
    /// [`QmailEnvelope::bad_address`]; another program gets what qmail's would).
    pub fn unencodable(&self) -> Option<String> {
        let nul = |a: &[u8]| a.contains(&0);
        if nul(&self.sender) {
            return Some("the sender address contains a NUL".to_owned());
        }
        self.recipients.iter().find(|r| nul(r)).map(|r| {
            format!(
                "a recipient address contains a NUL: {}",
                String::from_utf8_lossy(r).escape_debug()
            )
        })
    }

    /// The envelope in qmail-queue's format. Check [`QmailEnvelope::bad_address`] first: an
    /// address with a NUL does not read back the same.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(b'F');
        out.extend_from_slice(&self.sender);
        out.push(0);
        for r in &self.recipients {
            out.push(b'T');
            out.extend_from_slice(r);
            out.push(0);
        }
        out.push(0);
        out
    }
}

/// The bytes up to the next NUL and the bytes after it; no NUL means the envelope was cut short.
fn take_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), EnvelopeError> {
    match bytes.iter().position(|&b| b == 0) {
        Some(nul) => Ok((&bytes[..nul], &bytes[nul + 1..])),
        None => Err(EnvelopeError::Truncated),
    }
}

/// The longest address a QMQP server takes: qmail-qmqpd refuses 1,000 bytes and more, and so
/// does nullq's server by default (`max_address_len`).
pub const MAX_QMQP_ADDRESS: usize = 999;

/// Why the null client refuses `address` in an envelope, if it does (see
/// [`QmailEnvelope::bad_address`]): longer than a QMQP server takes ([`MAX_QMQP_ADDRESS`]), or
/// a control character.
pub fn refused_address(address: &[u8]) -> Option<String> {
    if address.len() > MAX_QMQP_ADDRESS {
        Some(format!(
            "address is {} bytes long, over the {MAX_QMQP_ADDRESS} a QMQP server takes",
            address.len()
        ))
    } else if crate::qmqp::has_control_byte(address) {
        Some(crate::qmqp::AddressProblem::ControlCharacter.to_string())
    } else {
        None
    }
}

fn check_length(address: &[u8]) -> Result<&[u8], EnvelopeError> {
    if address.len() + 1 >= MAX_ADDRESS {
        Err(EnvelopeError::AddressTooLong)
    } else {
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_a_control_character_is_bad() {
        let ok = QmailEnvelope {
            sender: b"a@example.net".to_vec(),
            recipients: vec![b"b@example.net".to_vec()],
        };
        assert_eq!(ok.bad_address(), None);
        for bad in [
            &b"e@x\0Tb@y"[..],
            b"e@x\r",
            b"e\n@x",
            b"e\t@x",
            b"e@x\x1b",
            b"\x7fe@x",
        ] {
            let rcpt = QmailEnvelope {
                recipients: vec![b"b@example.net".to_vec(), bad.to_vec()],
                ..ok.clone()
            };
            assert!(rcpt.bad_address().is_some_and(|w| w.contains("recipient")));
            let sender = QmailEnvelope {
                sender: bad.to_vec(),
                ..ok.clone()
            };
            assert!(sender.bad_address().is_some_and(|w| w.contains("sender")));
        }
    }

    /// Too long is bad too; an address without a domain (qmail's servers take `eve`) and the
    /// empty sender are not. Only a NUL is what qmail-queue's format cannot carry.
    #[test]
    fn a_long_address_is_bad_a_domainless_one_is_not_and_only_a_nul_is_unencodable() {
        let ok = QmailEnvelope {
            sender: Vec::new(),
            recipients: vec![b"b@example.net".to_vec()],
        };
        assert_eq!(ok.bad_address(), None);
        for fine in [&b"eve"[..], b"@example.net", b""] {
            let rcpt = QmailEnvelope {
                recipients: vec![fine.to_vec()],
                ..ok.clone()
            };
            assert_eq!(rcpt.bad_address(), None, "{fine:?}");
        }
        let longest = [vec![b'a'; MAX_QMQP_ADDRESS - 2], b"@x".to_vec()].concat();
        let rcpt = QmailEnvelope {
            recipients: vec![longest],
            ..ok.clone()
        };
        assert_eq!(rcpt.bad_address(), None, "999 bytes are taken");
        let long = [vec![b'a'; MAX_QMQP_ADDRESS - 1], b"@x".to_vec()].concat();
        let rcpt = QmailEnvelope {
            recipients: vec![long],
            ..ok.clone()
        };
        let said = rcpt.bad_address().unwrap_or_default();
        assert!(
            said.contains("recipient") && said.contains("bytes long"),
            "{said}"
        );
        assert_eq!(rcpt.unencodable(), None);
        let tab = QmailEnvelope {
            recipients: vec![b"a\tb@x".to_vec()],
            ..ok.clone()
        };
        assert_eq!(tab.unencodable(), None);
        let nul = QmailEnvelope {
            recipients: vec![b"a\0b@x".to_vec()],
            ..ok.clone()
        };
        assert!(nul.unencodable().is_some_and(|w| w.contains("NUL")));
    }

    #[test]
    fn parses_the_man_page_example() {
        let env = QmailEnvelope::parse(b"Fjason@example.net\0Tbob@example.net\0\0");
        assert_eq!(
            env,
            Ok(QmailEnvelope {
                sender: b"jason@example.net".to_vec(),
                recipients: vec![b"bob@example.net".to_vec()],
            })
        );
    }

    #[test]
    fn round_trips() {
        let env = QmailEnvelope {
            sender: Vec::new(),
            recipients: vec![b"a@b".to_vec(), b"c@d".to_vec()],
        };
        assert_eq!(QmailEnvelope::parse(&env.encode()), Ok(env));
    }

    #[test]
    fn refuses_broken_envelopes() {
        assert_eq!(QmailEnvelope::parse(b""), Err(EnvelopeError::Truncated));
        assert_eq!(
            QmailEnvelope::parse(b"Fa@b\0Tc@d\0"),
            Err(EnvelopeError::Truncated)
        );
        assert_eq!(QmailEnvelope::parse(b"Fa@b"), Err(EnvelopeError::Truncated));
        assert_eq!(
            QmailEnvelope::parse(b"Xa@b\0\0"),
            Err(EnvelopeError::Format)
        );
        assert_eq!(
            QmailEnvelope::parse(b"Fa@b\0Xc@d\0\0"),
            Err(EnvelopeError::Format)
        );
        assert_eq!(
            QmailEnvelope::parse_prefix(b"Fa@b\0\0junk"),
            Ok((
                QmailEnvelope {
                    sender: b"a@b".to_vec(),
                    recipients: Vec::new()
                },
                6
            ))
        );
        let long = [b"F".to_vec(), vec![b'a'; 1002], b"\0\0".to_vec()].concat();
        assert_eq!(
            QmailEnvelope::parse(&long),
            Err(EnvelopeError::AddressTooLong)
        );
    }
}
