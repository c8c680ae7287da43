//! The split of a message into header fields and body, as qmail's `headerbody.c` does it.
//!
//! This module owns reading a message's header into memory, bounded, and streaming its body
//! without ever holding it: [`read_header`] returns the header fields (continuation lines joined,
//! each ending in `\n`) and the first bytes that already belong to the body; [`copy_body`] then
//! copies the rest of the input, whatever its size, in fixed-size chunks.
//!
//! qmail's rules: the header ends at an empty line, or at the first line that cannot be a header
//! field, in which case a blank line is inserted before it; a leading `From ` line (an mbox
//! separator) becomes the field `MBOX-Line: From ...`; a last line without a newline gets one.

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::hfield::{self, Prefix};

/// A header held in memory, and where the body begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The header fields in order, each with its continuation lines and final `\n`.
    pub fields: Vec<Vec<u8>>,
    /// The first body bytes, consumed while looking for the end of the header: `\n` for the
    /// empty separator line, `\n` plus the line that ended the header when it was not a field,
    /// empty when the input ended inside the header. The rest of the body is still unread.
    pub body_start: Vec<u8>,
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// Reading the input failed.
    Io(io::Error),
    /// The header is longer than the limit given to [`read_header`].
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Io(e) => write!(f, "read error: {e}"),
            HeaderError::TooLarge { limit } => write!(f, "header longer than {limit} bytes"),
        }
    }
}

impl std::error::Error for HeaderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HeaderError::Io(e) => Some(e),
            HeaderError::TooLarge { .. } => None,
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// How far past the header limit a line that may end the header is read before deciding.
const LINE_SLACK: usize = 1024;

/// How one bounded line read ended.
enum Line {
    /// End of input before any byte.
    Eof,
    /// A whole line, `\n` included (added when the input ended without one).
    Whole(Vec<u8>),
    /// `limit` bytes without a newline: the line goes on in the input.
    Cut(Vec<u8>),
}

fn read_line<R: BufRead>(r: &mut R, limit: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(Line::Eof);
            }
            line.push(b'\n');
            return Ok(Line::Whole(line));
        }
        let room = limit.saturating_sub(line.len());
        let window = &buf[..buf.len().min(room)];
        if let Some(nl) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..=nl]);
            r.consume(nl + 1);
            return Ok(Line::Whole(line));
        }
        let n = window.len();
        line.extend_from_slice(window);
        r.consume(n);
        if line.len() >= limit {
            return Ok(Line::Cut(line));
        }
    }
}

/// Read the header of a message (at most `limit` bytes of it) from `r`, leaving the body,
/// after [`Header::body_start`], unread in `r`.
pub fn read_header<R: BufRead>(r: &mut R, limit: usize) -> Result<Header, HeaderError> {
    let mut header = Header::default();
    let mut current: Option<Vec<u8>> = None;
    let mut used = 0usize;
    let too_large = || HeaderError::TooLarge { limit };
    loop {
        // Lines that end the header (the blank line, a first body line) may go past the limit
        // by a little; only what is kept as header counts against it.
        let next = match read_line(r, limit.saturating_sub(used) + LINE_SLACK)? {
            Line::Eof => {
                header.fields.extend(current.take());
                return Ok(header);
            }
            Line::Whole(l) => l,
            Line::Cut(l) => {
                // Too long to keep as a header line; fine as long as it is the first body line.
                let continues = current.is_some() && (l[0] == b' ' || l[0] == b'\t');
                if continues
                    || l.starts_with(b"From ")
                    || hfield::valid_prefix(&l) != Prefix::Invalid
                {
                    return Err(too_large());
                }
                header.fields.extend(current.take());
                header.body_start.push(b'\n');
                header.body_start.extend_from_slice(&l);
                return Ok(header);
            }
        };
        let keep = |used: &mut usize, n: usize| {
            *used += n;
            if *used > limit {
                Err(too_large())
            } else {
                Ok(())
            }
        };
        if let Some(field) = current.as_mut() {
            if next[0] == b' ' || next[0] == b'\t' {
                keep(&mut used, next.len())?;
                field.extend_from_slice(&next);
                continue;
            }
            header.fields.extend(current.take());
        }
        if next == b"\n" {
            header.body_start = next;
            return Ok(header);
        }
        if next.starts_with(b"From ") {
            keep(&mut used, next.len())?;
            let mut field = b"MBOX-Line: ".to_vec();
            field.extend_from_slice(&next);
            current = Some(field);
        } else if hfield::valid(&next) {
            keep(&mut used, next.len())?;
            current = Some(next);
        } else {
            header.body_start.push(b'\n');
            header.body_start.extend_from_slice(&next);
            return Ok(header);
        }
    }
}

/// Write `start` and then everything left in `r` to `w`, in chunks, adding a final `\n` when
/// the body does not end with one (as qmail's line reader does). Returns the bytes written.
pub fn copy_body<R: BufRead, W: Write>(r: &mut R, w: &mut W, start: &[u8]) -> io::Result<u64> {
    w.write_all(start)?;
    let mut written = start.len() as u64;
    let mut last = start.last().copied();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        w.write_all(buf)?;
        written += buf.len() as u64;
        last = buf.last().copied();
        let n = buf.len();
        r.consume(n);
    }
    if last.is_some_and(|b| b != b'\n') {
        w.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], limit: usize) -> (Vec<String>, String) {
        let mut r = input;
        let h = read_header(&mut r, limit).unwrap();
        let mut body = Vec::new();
        copy_body(&mut r, &mut body, &h.body_start).unwrap();
        (
            h.fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[test]
    fn plain() {
        let (f, b) = split(b"To: bob\nSubject: a\n  b\n\nbody\nmore", 1000);
        assert_eq!(f, vec!["To: bob\n", "Subject: a\n  b\n"]);
        assert_eq!(b, "\nbody\nmore\n");
    }

    #[test]
    fn header_only_without_newline() {
        let (f, b) = split(b"To: bob", 1000);
        assert_eq!(f, vec!["To: bob\n"]);
        assert_eq!(b, "");
    }

    #[test]
    fn non_field_line_ends_header_with_inserted_blank() {
        let (f, b) = split(b"To: bob\nhello world\nx\n", 1000);
        assert_eq!(f, vec!["To: bob\n"]);
        assert_eq!(b, "\nhello world\nx\n");
    }

    #[test]
    fn mbox_line() {
        let (f, _) = split(b"From bob Tue\nTo: x\n\n", 1000);
        assert_eq!(f, vec!["MBOX-Line: From bob Tue\n", "To: x\n"]);
    }

    #[test]
    fn empty_input() {
        assert_eq!(split(b"", 1000), (vec![], String::new()));
        assert_eq!(split(b"\n", 1000), (vec![], "\n".to_owned()));
    }

    #[test]
    fn limits() {
        let mut r = &b"To: aaaaaaaaaaaaaaaaaaaaaaaaa\n\n"[..];
        assert!(matches!(
            read_header(&mut r, 10),
            Err(HeaderError::TooLarge { limit: 10 })
        ));
        // A long first body line is streamed, not refused.
        let long = format!("To: x\nthis is {} long\n", "very ".repeat(400));
        let (f, b) = split(long.as_bytes(), 50);
        assert_eq!(f, vec!["To: x\n"]);
        assert_eq!(b, format!("\nthis is {} long\n", "very ".repeat(400)));
    }
}
