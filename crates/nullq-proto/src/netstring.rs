//! Netstrings (cr.yp.to/proto/netstrings.txt): `<decimal length>:<bytes>,`.
//!
//! This module owns the length prefix: parsing it strictly (no sign, no blanks, no leading
//! zeros, a cap checked digit by digit so `999999999999:` is refused before anything is buffered)
//! and encoding. The QMQP decoder builds on [`LengthParser`]; [`decode`] reads one whole netstring
//! from a buffer, for short frames such as a QMQP response.

use crate::error::{DecodeError, ErrorKind};

/// Append `data` to `out` as a netstring.
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// `data` as a netstring.
pub fn encoded(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    encode(&mut out, data);
    out
}

/// The progress of parsing a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// More digits (or the `:`) may follow.
    Partial,
    /// The prefix ended with `:`; the payload has this many bytes.
    Done(u64),
}

/// Parses the `<digits>:` prefix of a netstring one byte at a time, under a cap.
///
/// Byte-at-a-time keeps it incremental: a prefix split across two TCP reads needs no buffer.
#[derive(Debug, Clone)]
pub struct LengthParser {
    value: u64,
    digits: u32,
    max: u64,
}

impl LengthParser {
    /// A parser that refuses lengths above `max`.
    pub fn new(max: u64) -> LengthParser {
        LengthParser {
            value: 0,
            digits: 0,
            max,
        }
    }

    /// Feed one byte. `offset` is only used to locate errors.
    pub fn push(&mut self, byte: u8, offset: u64) -> Result<Length, DecodeError> {
        match byte {
            b'0'..=b'9' => {
                if self.digits == 1 && self.value == 0 {
                    return Err(DecodeError::new(ErrorKind::LeadingZero, offset));
                }
                let value = self
                    .value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(byte - b'0')));
                match value {
                    Some(v) if v <= self.max => {
                        self.value = v;
                        self.digits += 1;
                        Ok(Length::Partial)
                    }
                    // Report the announced length as far as it was read: the digits beyond the
                    // cap are never waited for, so `999999999999:` is refused at its 9th digit.
                    _ => Err(DecodeError::new(
                        ErrorKind::LengthOverLimit {
                            length: value.unwrap_or(u64::MAX),
                            limit: self.max,
                        },
                        offset,
                    )),
                }
            }
            b':' if self.digits > 0 => Ok(Length::Done(self.value)),
            b':' => Err(DecodeError::new(ErrorKind::MissingLength, offset)),
            other if self.digits == 0 => Err(DecodeError::new(
                ErrorKind::MissingLengthDigit(other),
                offset,
            )),
            other => Err(DecodeError::new(ErrorKind::MissingColon(other), offset)),
        }
    }
}

/// Decode one whole netstring at the start of `input`.
///
/// Returns `Ok(None)` when `input` ends before the netstring does (read more and call again),
/// else the payload and the number of bytes the netstring took.
pub fn decode(input: &[u8], max: u64) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let mut parser = LengthParser::new(max);
    for (i, &byte) in input.iter().enumerate() {
        if let Length::Done(len) = parser.push(byte, i as u64)? {
            let start = i + 1;
            // `len <= max`, and callers use caps far below usize::MAX; the conversion still
            // cannot wrap because a length that does not fit is simply "more than we have".
            let Ok(len) = usize::try_from(len) else {
                return Ok(None);
            };
            let Some(end) = start.checked_add(len) else {
                return Ok(None);
            };
            return match input.get(end) {
                None => Ok(None),
                Some(b',') => Ok(Some((&input[start..end], end + 1))),
                Some(&other) => Err(DecodeError::new(ErrorKind::MissingComma(other), end as u64)),
            };
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_spec_examples() {
        assert_eq!(encoded(b"hello world!"), b"12:hello world!,");
        assert_eq!(encoded(b""), b"0:,");
    }

    #[test]
    fn decodes_whole_and_partial() {
        assert_eq!(decode(b"3:abc,rest", 10), Ok(Some((&b"abc"[..], 6))));
        assert_eq!(decode(b"0:,", 10), Ok(Some((&b""[..], 3))));
        assert_eq!(decode(b"3:ab", 10), Ok(None));
        assert_eq!(decode(b"12", 100), Ok(None));
    }

    #[test]
    fn refuses_bad_prefixes() {
        fn kind(input: &[u8]) -> Result<Option<(&[u8], usize)>, ErrorKind> {
            decode(input, 1000).map_err(|e| e.kind().clone())
        }
        assert_eq!(kind(b"01:a,"), Err(ErrorKind::LeadingZero));
        assert_eq!(kind(b":"), Err(ErrorKind::MissingLength));
        assert_eq!(kind(b"-1:"), Err(ErrorKind::MissingLengthDigit(b'-')));
        assert_eq!(kind(b"1 :a,"), Err(ErrorKind::MissingColon(b' ')));
        assert_eq!(kind(b"1:ab"), Err(ErrorKind::MissingComma(b'b')));
        assert_eq!(
            kind(b"1001:"),
            Err(ErrorKind::LengthOverLimit {
                length: 1001,
                limit: 1000
            })
        );
    }

    #[test]
    fn huge_lengths_stop_at_the_cap_without_overflow() {
        let err = decode(b"99999999999999999999999999:", 1 << 40);
        assert!(matches!(
            err.map_err(|e| e.kind().clone()),
            Err(ErrorKind::LengthOverLimit { .. })
        ));
    }
}
