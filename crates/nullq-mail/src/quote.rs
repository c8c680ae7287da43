//! Quoting of envelope addresses for header text, as qmail's `quote.c` does it.
//!
//! This module owns the reverse of token822's `unquote`: an envelope address such as
//! `a b@example.net` becomes `"a b"@example.net` when written into a header or parsed back into
//! tokens. Only the local part (before the last `@`) is ever quoted, and only when it must be.

/// qmail's table of bytes that may stand unquoted in a local part.
fn ok(ch: u8) -> bool {
    matches!(ch,
        b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'/' | b'0'..=b'9' | b'=' | b'?'
        | b'A'..=b'Z' | b'^' | b'_' | b'`' | b'a'..=b'z' | b'{' | b'|' | b'}' | b'~')
}

/// Must `s` be quoted to stand as a local part? (qmail's `quote_need`): when empty, when it
/// holds a byte outside qmail's safe set or any 8-bit byte, or when it begins or ends with a
/// dot or has two dots in a row.
pub fn quote_need(s: &[u8]) -> bool {
    if s.is_empty() {
        return true;
    }
    if s.iter().any(|&ch| !ok(ch)) {
        return true;
    }
    s.starts_with(b".") || s.ends_with(b".") || s.windows(2).any(|w| w == b"..")
}

/// `s` as a local part: unchanged, or in double quotes with `\r`, `\n`, `"` and `\` escaped
/// (qmail's `quote`).
pub fn quote(s: &[u8]) -> Vec<u8> {
    if !quote_need(s) {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &ch in s {
        if matches!(ch, b'\r' | b'\n' | b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(ch);
    }
    out.push(b'"');
    out
}

/// An envelope address in header form (qmail's `quote2`): the part before the last `@` is
/// quoted as needed, the rest kept; the empty address stays empty.
pub fn quote2(s: &[u8]) -> Vec<u8> {
    if s.is_empty() {
        return Vec::new();
    }
    match s.iter().rposition(|&b| b == b'@') {
        None => quote(s),
        Some(at) => {
            let mut out = quote(&s[..at]);
            out.extend_from_slice(&s[at..]);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote2(b"bob@example.net"), b"bob@example.net");
        assert_eq!(quote2(b"a b@example.net"), b"\"a b\"@example.net");
        assert_eq!(quote2(b"x@y@z"), b"\"x@y\"@z");
        assert_eq!(quote2(b".bob@x"), b"\".bob\"@x");
        assert_eq!(quote2(b"a..b"), b"\"a..b\"");
        assert_eq!(quote2(b"a\"b@x"), b"\"a\\\"b\"@x");
        assert_eq!(quote2(b"@x"), b"\"\"@x");
        assert_eq!(quote2(b""), b"");
        assert!(quote_need(b"caf\xc3\xa9"));
        assert!(!quote_need(b"a+b=c/d?e{f}g|h~i`j^k_l!m#n$o%p&q'r*s-t"));
    }
}
