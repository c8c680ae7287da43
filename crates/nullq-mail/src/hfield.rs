//! Header field names qmail knows, and what makes a line a header field (qmail's `hfield.c`).
//!
//! This module owns field recognition: [`known`] says which of qmail-inject's fields a raw
//! field is (case-insensitively, blanks allowed before the colon), [`valid`] whether a line can
//! start a header field at all. Which fields hold addresses, and which are removed, is decided
//! by the caller (qmail-inject's rewriting, the `injector` module).

/// The header fields qmail-inject treats specially (qmail's `H_*`, same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `Sender:`
    Sender,
    /// `From:`
    From,
    /// `Reply-To:`
    ReplyTo,
    /// `To:`
    To,
    /// `Cc:`
    Cc,
    /// `Bcc:`
    Bcc,
    /// `Date:`
    Date,
    /// `Message-ID:`
    MessageId,
    /// `Subject:`
    Subject,
    /// `Resent-Sender:`
    ResentSender,
    /// `Resent-From:`
    ResentFrom,
    /// `Resent-Reply-To:`
    ResentReplyTo,
    /// `Resent-To:`
    ResentTo,
    /// `Resent-Cc:`
    ResentCc,
    /// `Resent-Bcc:`
    ResentBcc,
    /// `Resent-Date:`
    ResentDate,
    /// `Resent-Message-ID:`
    ResentMessageId,
    /// `Return-Receipt-To:`
    ReturnReceiptTo,
    /// `Errors-To:`
    ErrorsTo,
    /// `Apparently-To:`
    ApparentlyTo,
    /// `Received:`
    Received,
    /// `Return-Path:`
    ReturnPath,
    /// `Delivered-To:`
    DeliveredTo,
    /// `Content-Length:`
    ContentLength,
    /// `Content-Type:`
    ContentType,
    /// `Content-Transfer-Encoding:`
    ContentTransferEncoding,
    /// `Notice-Requested-Upon-Delivery-To:`
    NoticeRequestedUponDeliveryTo,
    /// `Mail-Followup-To:`
    MailFollowupTo,
}

/// Every known field with its lower-case name, in qmail's order (the first match wins).
pub const FIELDS: [(Field, &str); 28] = [
    (Field::Sender, "sender"),
    (Field::From, "from"),
    (Field::ReplyTo, "reply-to"),
    (Field::To, "to"),
    (Field::Cc, "cc"),
    (Field::Bcc, "bcc"),
    (Field::Date, "date"),
    (Field::MessageId, "message-id"),
    (Field::Subject, "subject"),
    (Field::ResentSender, "resent-sender"),
    (Field::ResentFrom, "resent-from"),
    (Field::ResentReplyTo, "resent-reply-to"),
    (Field::ResentTo, "resent-to"),
    (Field::ResentCc, "resent-cc"),
    (Field::ResentBcc, "resent-bcc"),
    (Field::ResentDate, "resent-date"),
    (Field::ResentMessageId, "resent-message-id"),
    (Field::ReturnReceiptTo, "return-receipt-to"),
    (Field::ErrorsTo, "errors-to"),
    (Field::ApparentlyTo, "apparently-to"),
    (Field::Received, "received"),
    (Field::ReturnPath, "return-path"),
    (Field::DeliveredTo, "delivered-to"),
    (Field::ContentLength, "content-length"),
    (Field::ContentType, "content-type"),
    (Field::ContentTransferEncoding, "content-transfer-encoding"),
    (
        Field::NoticeRequestedUponDeliveryTo,
        "notice-requested-upon-delivery-to",
    ),
    (Field::MailFollowupTo, "mail-followup-to"),
];

impl Field {
    /// Is this one of the `Resent-` fields whose presence makes qmail-inject treat the message
    /// as resent (Resent-Sender, -From, -Reply-To, -To, -Cc, -Bcc, -Date, -Message-ID)?
    pub fn is_resent(self) -> bool {
        matches!(
            self,
            Field::ResentSender
                | Field::ResentFrom
                | Field::ResentReplyTo
                | Field::ResentTo
                | Field::ResentCc
                | Field::ResentBcc
                | Field::ResentDate
                | Field::ResentMessageId
        )
    }
}

/// qmail's `hmatch`: does field `s` have the name `name` (lower case), the letters matched
/// without regard to case, followed by optional blanks and a colon?
fn hmatch(s: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    if s.len() <= name.len() {
        return false;
    }
    for (&want, &got) in name.iter().zip(s) {
        // qmail compares `ch - 32` for any name byte but `-`, which for lower-case letters is
        // the upper-case letter; the names hold nothing else.
        if want != got && (want == b'-' || want.wrapping_sub(32) != got) {
            return false;
        }
    }
    for &ch in &s[name.len()..] {
        match ch {
            b':' => return true,
            b' ' | b'\t' => {}
            _ => return false,
        }
    }
    false
}

/// Which known field `s` (a whole field: name, colon, value) is, if any.
pub fn known(s: &[u8]) -> Option<Field> {
    FIELDS
        .iter()
        .find(|(_, name)| hmatch(s, name))
        .map(|&(f, _)| f)
}

/// Can line `s` be a header field (qmail's `hfield_valid`)? It needs a colon, and before it
/// a non-empty name of printable non-blank ASCII, optionally followed by blanks.
pub fn valid(s: &[u8]) -> bool {
    let Some(colon) = s.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &s[..colon];
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    end > 0 && name[..end].iter().all(|&ch| (33..127).contains(&ch))
}

/// What a line prefix tells about [`valid`] before the whole line has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The line is a header field whatever follows.
    Valid,
    /// The line is not a header field whatever follows.
    Invalid,
    /// It depends on bytes not yet read.
    Undecided,
}

/// Decide [`valid`] from the first bytes of a line, so that an overlong first body line can be
/// streamed instead of held: only the name and the blanks before its colon matter.
pub fn valid_prefix(s: &[u8]) -> Prefix {
    let mut name = 0usize;
    let mut blanks = false;
    for &ch in s {
        match ch {
            b':' => {
                return if name > 0 {
                    Prefix::Valid
                } else {
                    Prefix::Invalid
                }
            }
            b' ' | b'\t' => blanks = true,
            33..=126 if !blanks => name += 1,
            _ => return Prefix::Invalid,
        }
    }
    Prefix::Undecided
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(known(b"To: bob\n"), Some(Field::To));
        assert_eq!(known(b"TO :bob\n"), Some(Field::To));
        assert_eq!(known(b"to\t: bob\n"), Some(Field::To));
        assert_eq!(known(b"Tox: bob\n"), None);
        assert_eq!(
            known(b"Resent-Message-Id: <x>\n"),
            Some(Field::ResentMessageId)
        );
        assert_eq!(known(b"resent_to: x\n"), None);
        assert_eq!(known(b"Return-Path: <>\n"), Some(Field::ReturnPath));
        assert_eq!(known(b"To"), None);
    }

    #[test]
    fn validity() {
        assert!(valid(b"X-Foo: bar\n"));
        assert!(valid(b"X-Foo : bar\n"));
        assert!(!valid(b"X Foo: bar\n"));
        assert!(!valid(b": bar\n"));
        assert!(!valid(b" X: bar\n"));
        assert!(!valid(b"no colon\n"));
        assert!(!valid(b"\n"));
        assert!(!valid(b"caf\xc3\xa9: x\n"));
        for line in [
            &b"X-Foo: bar\n"[..],
            b"X Foo: bar",
            b": x",
            b"ab \t:",
            b"ab c",
            b"\xff:",
        ] {
            match valid_prefix(line) {
                Prefix::Valid => assert!(valid(line)),
                Prefix::Invalid => assert!(!valid(line)),
                Prefix::Undecided => panic!("{line:?} is decided"),
            }
        }
        assert_eq!(valid_prefix(b"abc"), Prefix::Undecided);
        assert_eq!(valid_prefix(b"abc  "), Prefix::Undecided);
    }
}
