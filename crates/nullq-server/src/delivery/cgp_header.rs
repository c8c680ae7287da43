//! The header fields of a CommuniGate Pro submission: our envelope fields written in RFC 5322
//! form ([`header_address`], read back by [`parse_header_address`]) and a message's own
//! envelope fields renamed so that CommuniGate Pro sees only ours ([`neutralize`]). Text only,
//! no I/O; [`crate::delivery::cgp`] writes the files.

/// The fields CommuniGate Pro takes the envelope from, wherever they stand in the header, and
/// the names a message's own copies are renamed to.
const ENVELOPE_FIELDS: [(&str, &str); 3] = [
    ("return-path", "X-Original-Return-Path"),
    ("envelope-to", "X-Original-Envelope-To"),
    ("envelope-ignore", "X-Original-Envelope-Ignore"),
];

/// `header` (a message's whole header, LF or CRLF lines, written with LF) with its own envelope fields renamed
/// to `X-Original-...` (any case, with or without space before the colon; their continuation
/// lines follow them unchanged), so that the only `Return-Path:`/`Envelope-To:`/
/// `Envelope-Ignore:` CommuniGate Pro sees are the ones nullq writes above it. A line start
/// after a lone CR counts too (a reader that takes CR for a line end must not find a field
/// there). A header that starts with continuation lines (which would continue our last field)
/// gets an `X-Nullq-Folded:` field for them to belong to. The result always ends with an
/// empty line, so what follows is the body for every reader (a header that ended without one,
/// before a line that is no field, gets one).
pub fn neutralize(header: &[u8]) -> Vec<u8> {
    // CommuniGate Pro reads the file in the system's line ends (LF): a CRLF header could end,
    // for it, at a different line than for us (a line of only CR). Written with LF, the header
    // ends at the same empty line for every reader.
    let lf = crlf_to_lf(header);
    let header = &lf[..];
    let mut out = Vec::with_capacity(header.len() + 64);
    if matches!(header.first(), Some(b' ' | b'\t')) {
        out.extend_from_slice(b"X-Nullq-Folded:\n");
    }
    let mut ended = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        ended = line == b"\n" || line == b"\r\n";
        let mut start = 0;
        for at in 0..=line.len() {
            let line_start = at == 0 || (line[at - 1] == b'\r' && line.get(at) != Some(&b'\n'));
            if !line_start {
                continue;
            }
            if let Some((name_len, new)) = envelope_field_at(&line[at..]) {
                out.extend_from_slice(&line[start..at]);
                out.extend_from_slice(new.as_bytes());
                start = at + name_len;
            }
        }
        out.extend_from_slice(&line[start..]);
    }
    if !ended {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// `text` with every CRLF made LF (a lone CR stays).
fn crlf_to_lf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\r' && text.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// If `text` starts with one of [`ENVELOPE_FIELDS`] (any case) followed by optional blanks and
/// a colon: the name's length and its new name.
fn envelope_field_at(text: &[u8]) -> Option<(usize, &'static str)> {
    ENVELOPE_FIELDS.iter().find_map(|&(name, new)| {
        let head = text.get(..name.len())?;
        if !head.eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let rest = &text[name.len()..];
        let colon = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
        (rest[colon] == b':').then_some((name.len(), new))
    })
}

/// An envelope address as an RFC 5322 header address: the local part (before the last `@`)
/// as it is when it is a dot-atom, else a quoted string with `"` and `\` escaped; the domain
/// must be a dot-atom or a domain literal. An address with a control character (a CR, LF or
/// NUL would break the header; QMQP refuses them all before `K`, but a message queued by an
/// older server may hold one), or whose domain is neither, cannot be written without breaking
/// the header or changing its meaning: an error.
pub fn header_address(addr: &[u8]) -> Result<Vec<u8>, AddressError> {
    if nullq_proto::qmqp::has_control_byte(addr) {
        return Err(AddressError::ControlCharacter);
    }
    let (local, domain) = match addr.iter().rposition(|&b| b == b'@') {
        Some(at) => (&addr[..at], Some(&addr[at + 1..])),
        None => (addr, None),
    };
    if let Some(domain) = domain {
        let atom = |label: &[u8]| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
        };
        let literal = domain.len() >= 2
            && domain.starts_with(b"[")
            && domain.ends_with(b"]")
            && domain[1..domain.len() - 1]
                .iter()
                .all(|&b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'\\'));
        if !literal && !domain.split(|&b| b == b'.').all(atom) {
            return Err(AddressError::Domain(domain.to_vec()));
        }
    }
    let mut out = nullq_mail::quote::quote(local);
    if let Some(domain) = domain {
        out.push(b'@');
        out.extend_from_slice(domain);
    }
    Ok(out)
}

/// Why [`header_address`] cannot write an address (the bounce's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    /// A control character (CR, LF, NUL, TAB, ESC, ..., DEL) in the address.
    ControlCharacter,
    /// The domain (these bytes) is neither a dot-atom nor a domain literal.
    Domain(Vec<u8>),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::ControlCharacter => {
                write!(
                    f,
                    "a control character (a line break, NUL, ...) in the address"
                )
            }
            AddressError::Domain(d) => write!(
                f,
                "the domain {:?} is neither a domain name nor an address literal",
                String::from_utf8_lossy(d)
            ),
        }
    }
}

impl std::error::Error for AddressError {}

/// The reverse of [`header_address`] for one address as nullq writes it (`"a b"@example.net`
/// → `a b@example.net`); `None` if it is not in that form.
pub fn parse_header_address(text: &[u8]) -> Option<Vec<u8>> {
    let text = text.trim_ascii();
    let Some(quoted) = text.strip_prefix(b"\"") else {
        return Some(text.to_vec());
    };
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = quoted.iter();
    loop {
        match bytes.next()? {
            b'\\' => out.push(*bytes.next()?),
            b'"' => break,
            &b => out.push(b),
        }
    }
    let rest = bytes.as_slice();
    if !rest.is_empty() && !rest.starts_with(b"@") {
        return None;
    }
    out.extend_from_slice(rest);
    Some(out)
}
