//! The site's address rewriting, in CommuniGate Pro Router syntax ([`nullq_mail::rewrite`]):
//! each envelope address (the null sender excepted) and each address in `From:`, `To:`,
//! `Cc:`, `Reply-To:` (and their `Resent-` forms); the first record that matches wins, and its
//! result is not rewritten again. Shared by the admission policy (relay control judges the
//! rewritten recipient) and the delivery runner (which applies it to what it hands a backend:
//! the spool keeps what the client sent).

use std::fmt;

use nullq_config::server::{ConfigError, PolicyConfig};
use nullq_mail::rewrite::RewriteRules;
use nullq_mail::token822::{self, Token};

/// The header fields whose addresses are rewritten.
const ADDRESS_FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "reply-to",
    "resent-from",
    "resent-to",
    "resent-cc",
    "resent-reply-to",
];

/// Why the rewriting records could not be used: `[policy] rewrite_file` cannot be read, or a
/// record in it cannot be parsed (the configuration's error, naming the file and line).
#[derive(Debug)]
pub struct RewritingError(pub ConfigError);

impl fmt::Display for RewritingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RewritingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The text is the configuration error's own: what lies under it is its source.
        std::error::Error::source(&self.0)
    }
}

/// The rewriting records of a server (`[policy] rewrite_file`).
#[derive(Debug, Clone, Default)]
pub struct Rewriting {
    rules: RewriteRules,
}

impl Rewriting {
    /// No records: nothing is rewritten.
    pub fn none() -> Rewriting {
        Rewriting::default()
    }

    /// The records `[policy]` names (reads `rewrite_file`).
    pub fn from_config(config: &PolicyConfig) -> Result<Rewriting, RewritingError> {
        let rules = config.rewrite_rules().map_err(RewritingError)?;
        Ok(Rewriting { rules })
    }

    /// True when there are rewriting records.
    pub fn rewrites(&self) -> bool {
        !self.rules.is_empty()
    }

    /// An envelope address after rewriting (unchanged when no record matches).
    pub fn rewrite_address(&self, addr: &[u8]) -> Vec<u8> {
        if addr.is_empty() {
            return Vec::new();
        }
        self.rules
            .rewrite_bytes(addr)
            .unwrap_or_else(|| addr.to_vec())
    }

    /// The message with the addresses of its address fields rewritten, or `None` when nothing
    /// changed (no records, or no address matched). Only changed fields are re-written (in
    /// qmail's token form, folded at 80 columns); every other byte stays as it was.
    pub fn rewrite_header(&self, message: &[u8]) -> Option<Vec<u8>> {
        if self.rules.is_empty() {
            return None;
        }
        let (fields, body_at) = split_header(message);
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for (start, end) in fields {
            let field = &message[start..end];
            let Some(new) = self.rewrite_field(field) else {
                continue;
            };
            let o = out.get_or_insert_with(|| Vec::with_capacity(message.len() + 64));
            o.extend_from_slice(&message[copied..start]);
            o.extend_from_slice(&new);
            copied = end;
        }
        let mut o = out?;
        o.extend_from_slice(&message[copied..body_at]);
        o.extend_from_slice(&message[body_at..]);
        Some(o)
    }

    fn rewrite_field(&self, field: &[u8]) -> Option<Vec<u8>> {
        let name_end = field.iter().position(|&b| b == b':')?;
        let name = String::from_utf8_lossy(&field[..name_end])
            .trim()
            .to_ascii_lowercase();
        if !ADDRESS_FIELDS.contains(&name.as_str()) {
            return None;
        }
        let tokens = token822::parse(field).ok()?;
        let mut changed = false;
        let out = token822::addrlist(&tokens, |reversed: &mut Vec<Token>| {
            let mut forward = reversed.clone();
            forward.reverse();
            let addr = token822::unquote(&forward);
            if let Some(new) = self.rules.rewrite_bytes(&addr) {
                if let Ok(mut toks) = token822::parse_envelope_address(&new) {
                    toks.reverse();
                    *reversed = toks;
                    changed = true;
                }
            }
        })
        .ok()?;
        changed.then(|| token822::unparse(&out, 80))
    }
}

/// Byte ranges of the header fields (each with its continuation lines and final newline), and
/// where the body starts (after the empty line).
pub(crate) fn split_header(message: &[u8]) -> (Vec<(usize, usize)>, usize) {
    let mut fields = Vec::new();
    let mut pos = 0;
    let mut current: Option<usize> = None;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |n| pos + n + 1);
        let line = &message[pos..end];
        if line == b"\n" || line == b"\r\n" {
            if let Some(s) = current.take() {
                fields.push((s, pos));
            }
            return (fields, pos);
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = current.take() {
                fields.push((s, pos));
            }
            if !line.contains(&b':') {
                // Not a header line: the header ended without an empty line.
                return (fields, pos);
            }
            current = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = current {
        fields.push((s, message.len()));
    }
    (fields, message.len())
}
