//! The pieces of an SMTP client (RFC 5321) that are pure functions, shared by the server's
//! `smtp://` delivery backend (async) and the null client's `smtp://` last-resort relay
//! (blocking): reply parsing, EHLO capabilities, base64 for AUTH (RFC 4954), and DATA's
//! dot-stuffing with CRLF line ends (section 4.5.2). No I/O: the callers own their sockets.

use std::fmt;

/// Why `address` cannot go into `MAIL FROM:<...>` or `RCPT TO:<...>` as it is, if it cannot:
/// a CR, LF or NUL would end the command line early (command injection), a blank, `<` or `>`
/// would end the path and start ESMTP parameters of ours (`RCPT TO:<a@x> NOTIFY=SUCCESS>`,
/// `MAIL FROM:<a> AUTH=<x@y>`), other control characters have no place in a path (RFC 5321
/// section 4.1.2). A quoted local part with a blank or `<>` is valid SMTP, but the null client's
/// `smtp://` lines refuse it rather than quote it (the server's `smtp://` delivery quotes, as
/// qmail-remote does).
pub fn unsendable(address: &[u8]) -> Option<&'static str> {
    address.iter().find_map(|&b| match b {
        b'\r' | b'\n' | 0 => Some("contains a line break or NUL, which SMTP cannot carry"),
        b' ' | b'\t' => Some("contains a blank, which would end the SMTP path"),
        b'<' | b'>' => Some("contains < or >, which would end the SMTP path"),
        0..=0x1f | 0x7f => Some("contains a control character, which SMTP cannot carry"),
        _ => None,
    })
}

/// Longest reply line accepted (RFC 5321 says 512; servers write longer ones).
pub const MAX_LINE: usize = 8192;

/// One SMTP reply: the code and its lines' text joined by blanks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code (200..=599).
    pub code: u16,
    /// The text after the code of every line, joined by one blank.
    pub text: String,
}

impl Reply {
    /// The first digit: 2 success, 3 go on, 4 temporary, 5 permanent.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// `CODE TEXT`, for logs and error lines.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// Most bytes of one (multi-line) reply: an EHLO reply is a few hundred; a server that never
/// ends its reply is cut here instead of filling memory.
pub const MAX_REPLY: usize = 64 * 1024;

/// Most lines of one reply (an endless `250-` is refused here).
pub const MAX_REPLY_LINES: usize = 1000;

/// Why the bytes from the server are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`] without its end.
    LineTooLong,
    /// A reply of more than [`MAX_REPLY`] bytes or [`MAX_REPLY_LINES`] lines.
    ReplyTooLong,
    /// A line that does not start with a code in 200..=599.
    NotAReply(String),
    /// A continuation line with another code than the first line's.
    CodeChanged(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => write!(f, "reply line too long"),
            ReplyError::ReplyTooLong => write!(
                f,
                "reply too long (over {MAX_REPLY} bytes or {MAX_REPLY_LINES} lines)"
            ),
            ReplyError::NotAReply(line) => write!(f, "not an SMTP reply: {line:?}"),
            ReplyError::CodeChanged(line) => write!(f, "reply code changed mid-reply: {line:?}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Decode one (possibly multi-line) reply from the start of `buf`: `Ok(Some((reply, used)))`
/// once its last line is complete, `Ok(None)` when more bytes are needed (nothing is consumed
/// then), an error when the bytes cannot be a reply. For a reply read a piece at a time, a
/// [`ReplyParser`] kept between the reads looks at each byte once.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    ReplyParser::new().parse(buf)
}

/// The incremental form of [`parse_reply`]: it remembers the complete lines of the reply it
/// has seen and how far it looked for the next newline, so a reply that arrives a byte at a
/// time costs its length, not its length squared. Give [`ReplyParser::parse`] the same buffer
/// (grown at its end) until it returns a reply or an error, then start a new parser (or
/// [`ReplyParser::reset`]) for the next reply, after draining the bytes used.
#[derive(Debug, Default, Clone)]
pub struct ReplyParser {
    /// The code of the lines so far.
    code: Option<u16>,
    /// Their text, joined by blanks.
    text: String,
    /// How many complete lines were seen.
    lines: usize,
    /// Where the first incomplete line starts (the bytes before it are parsed).
    line_start: usize,
    /// How far the incomplete line was searched for its newline.
    searched: usize,
}

impl ReplyParser {
    /// A parser at the start of a reply.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Back to the start of a reply.
    pub fn reset(&mut self) {
        *self = ReplyParser::default();
    }

    /// As [`parse_reply`], for `buf` holding the reply from its first byte: what was looked at
    /// by an earlier call on the same (grown) buffer is not looked at again.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        loop {
            let from = self.searched.max(self.line_start);
            let rest = buf.get(from..).unwrap_or_default();
            let Some(nl) = rest.iter().position(|&b| b == b'\n').map(|i| from + i) else {
                self.searched = buf.len();
                if buf.len() - self.line_start > MAX_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                if buf.len() > MAX_REPLY {
                    return Err(ReplyError::ReplyTooLong);
                }
                return Ok(None);
            };
            if nl - self.line_start > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            if nl + 1 > MAX_REPLY || self.lines >= MAX_REPLY_LINES {
                return Err(ReplyError::ReplyTooLong);
            }
            let raw = String::from_utf8_lossy(&buf[self.line_start..nl]);
            let line = raw.trim_end_matches(['\r', '\n']);
            self.line_start = nl + 1;
            self.searched = self.line_start;
            self.lines += 1;
            let digits = line.get(..3).and_then(|d| d.parse::<u16>().ok());
            let Some(this) = digits.filter(|c| (200..600).contains(c)) else {
                return Err(ReplyError::NotAReply(line.to_owned()));
            };
            if self.code.is_some_and(|c| c != this) {
                return Err(ReplyError::CodeChanged(line.to_owned()));
            }
            self.code = Some(this);
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                let text = std::mem::take(&mut self.text);
                let used = self.line_start;
                self.reset();
                return Ok(Some((Reply { code: this, text }, used)));
            }
        }
    }
}

/// What the server said it can do (EHLO keywords).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Caps {
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub eightbit: bool,
    /// AUTH PLAIN (RFC 4616).
    pub auth_plain: bool,
    /// AUTH LOGIN (the old, undocumented one every server has).
    pub auth_login: bool,
}

impl Caps {
    /// The capabilities in a 250 reply to EHLO. The keywords are the words that start each
    /// line after the first; [`parse_reply`] joined the lines with blanks, so every word is
    /// looked at (a false positive needs a hostile greeting).
    pub fn from_ehlo(reply: &Reply) -> Caps {
        let mut caps = Caps::default();
        let mut in_auth = false;
        for w in reply.text.split_whitespace().map(str::to_ascii_uppercase) {
            match w.as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbit = true,
                "AUTH" => in_auth = true,
                "PLAIN" if in_auth => caps.auth_plain = true,
                "LOGIN" if in_auth => caps.auth_login = true,
                _ => {}
            }
            if w.starts_with("AUTH=") {
                caps.auth_login |= w.contains("LOGIN");
                caps.auth_plain |= w.contains("PLAIN");
            }
        }
        caps
    }
}

/// Base64 (RFC 4648, with padding), for AUTH's tokens.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The message as SMTP DATA, a chunk at a time: CRLF line ends, a line starting with `.` gets
/// another `.` (RFC 5321 section 4.5.2), a last line without a newline gets one, then `.` ends
/// it. A line ends at LF, at CRLF, and at a CR that no LF follows: a bare CR becomes CRLF, as
/// a bare LF does, so no byte sequence of the message can be read by the next hop as another
/// line end than ours (SMTP smuggling: `\n.\r\n` or `\r.\r\n` taken as the end of data by
/// a lax server), and a `.` after a bare CR is stuffed like any line's. It keeps the little it
/// needs between chunks (at a line start? a CR held back?), so a chunk may end anywhere: inside
/// a CRLF, just before a line's first `.`.
#[derive(Debug)]
pub struct DotStuffer {
    /// The next byte starts a line.
    line_start: bool,
    /// A CR was read and not written yet: with an LF after it, it is that line end's CR;
    /// with anything else (or nothing) after it, a line end of its own.
    cr: bool,
    /// Any byte at all was read (an empty message is just the final dot).
    any: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            cr: false,
            any: false,
        }
    }

    /// Append the encoding of `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        self.any |= !chunk.is_empty();
        for &b in chunk {
            if self.cr && b != b'\n' {
                // A bare CR: a line end of its own.
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
            }
            self.cr = false;
            match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                b'\r' => {
                    self.cr = true;
                    self.line_start = false;
                }
                _ => {
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    self.line_start = false;
                    out.push(b);
                }
            }
        }
    }

    /// Append the end: a newline if the last line had none (a CR held back there is that
    /// newline), then `.`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.any && (self.cr || !self.line_start) {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn replies_single_multi_partial_and_bad() {
        let r = |code, text: &str| Reply {
            code,
            text: text.to_owned(),
        };
        assert_eq!(parse_reply(b"220 hi\r\nrest"), Ok(Some((r(220, "hi"), 8))));
        let ehlo = b"250-sink\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n";
        let (reply, used) = parse_reply(ehlo).unwrap().unwrap();
        assert_eq!(used, ehlo.len());
        assert_eq!(reply, r(250, "sink PIPELINING AUTH PLAIN LOGIN"));
        let caps = Caps::from_ehlo(&reply);
        assert!(caps.pipelining && caps.auth_plain && caps.auth_login && !caps.starttls);
        // Every split of a reply before its last newline needs more.
        for i in 0..ehlo.len() {
            assert_eq!(parse_reply(&ehlo[..i]), Ok(None), "at {i}");
        }
        assert_eq!(parse_reply(b"354\n"), Ok(Some((r(354, ""), 4))));
        assert!(matches!(
            parse_reply(b"hello\r\n"),
            Err(ReplyError::NotAReply(_))
        ));
        assert!(matches!(
            parse_reply(b"199 x\r\n"),
            Err(ReplyError::NotAReply(_))
        ));
        assert!(matches!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeChanged(_))
        ));
        assert_eq!(
            parse_reply(&vec![b'2'; MAX_LINE + 1]),
            Err(ReplyError::LineTooLong)
        );
    }

    #[test]
    fn an_endless_continued_reply_is_refused_at_the_cap() {
        // Lines: 1000 short `250-` lines are refused at the next one, whatever follows.
        let line = b"250-x\r\n";
        let mut lots = line.repeat(MAX_REPLY_LINES);
        assert_eq!(parse_reply(&lots), Ok(None), "1000 lines, not ended: more");
        lots.extend_from_slice(line);
        assert_eq!(parse_reply(&lots), Err(ReplyError::ReplyTooLong));
        let mut ended = line.repeat(MAX_REPLY_LINES - 1);
        ended.extend_from_slice(b"250 end\r\n");
        assert!(matches!(parse_reply(&ended), Ok(Some((r, _))) if r.code == 250));
        // Bytes: long (legal) lines reach 64 KiB before 1000 lines.
        let long = [b"250-".as_slice(), &[b'a'; 4000], b"\r\n"].concat();
        let big = long.repeat(MAX_REPLY / long.len() + 1);
        assert_eq!(parse_reply(&big), Err(ReplyError::ReplyTooLong));
        // Incomplete, over the cap: refused without waiting for the line's end.
        let open = [
            long.repeat(MAX_REPLY / long.len()),
            b"250-".to_vec(),
            vec![b'b'; 5000],
        ]
        .concat();
        assert_eq!(parse_reply(&open), Err(ReplyError::ReplyTooLong));
    }

    #[test]
    fn the_incremental_parser_gives_the_same_answers_fed_a_byte_at_a_time() {
        let input = b"250-sink\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n354 go\r\n";
        let mut parser = ReplyParser::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in input {
            buf.push(b);
            if let Some((reply, used)) = parser.parse(&buf).unwrap() {
                buf.drain(..used);
                got.push(reply);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], parse_reply(input).unwrap().unwrap().0);
        assert_eq!(got[1].line(), "354 go");
        assert!(buf.is_empty());
        // An endless reply fed in small pieces hits the cap (and looks at each byte once).
        let mut parser = ReplyParser::new();
        let mut buf = Vec::new();
        let refused = (0..MAX_REPLY_LINES + 1).find_map(|_| {
            buf.extend_from_slice(b"250-y\r\n");
            parser.parse(&buf).err()
        });
        assert_eq!(refused, Some(ReplyError::ReplyTooLong));
    }

    /// The whole-message encoder the streaming one must match byte for byte.
    /// Line ends are LF, CRLF, and a CR without an LF after it (a bare CR).
    fn dot_stuff(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 8);
        let mut lf = Vec::with_capacity(message.len());
        let mut i = 0;
        while i < message.len() {
            match (message[i], message.get(i + 1)) {
                (b'\r', Some(b'\n')) => {}
                (b'\r', _) => lf.push(b'\n'),
                (b, _) => lf.push(b),
            }
            i += 1;
        }
        let message = &lf[..];
        if !message.is_empty() {
            for line in message
                .strip_suffix(b"\n")
                .unwrap_or(message)
                .split(|&b| b == b'\n')
            {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.first() == Some(&b'.') {
                    out.push(b'.');
                }
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn stream(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn streaming_dot_stuffing_matches_the_whole_message_encoder_at_every_split() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\n",
            b".",
            b"\r",
            b"\r\n",
            b"a\n.b\n..\n",
            b"no newline",
            b"crlf\r\n",
            b".\r\n.\n\r.\r\r\n..\r",
            b"x\r\ry\n.\n\n.end",
            b"H: v\r\n\r\n.body\r\n\xe9t\xe9\n.\n",
            b"\n\n..\r\n.\r",
            b"a\r.\r\nb\r\r.\r",
            b"x\r.\r\n.\r\ny\n.\r.\r\n",
            b"\r\r\r.",
            b".\r..\r\r\n\r.\n",
        ];
        for input in inputs {
            let want = dot_stuff(input);
            assert_eq!(stream(&[input]), want, "{input:?}");
            for i in 0..=input.len() {
                assert_eq!(
                    stream(&[&input[..i], &input[i..]]),
                    want,
                    "{input:?} at {i}"
                );
                for j in i..=input.len() {
                    let got = stream(&[&input[..i], &input[i..j], &[], &input[j..]]);
                    assert_eq!(got, want, "{input:?} at {i}, {j}");
                }
            }
            // One byte at a time: every boundary at once.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(stream(&bytes), want, "{input:?} bytewise");
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\n.b\n..\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"crlf\r\n"), b"crlf\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(stream(&[b"a\n.b\n..\n"]), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(stream(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(stream(&[b"crlf\r\n"]), b"crlf\r\n.\r\n");
        assert_eq!(stream(&[]), b".\r\n");
    }

    #[test]
    fn a_bare_cr_is_a_line_end_and_the_dot_after_it_is_stuffed() {
        // The smuggling payload: a lax next hop must not see an end of data inside the message.
        assert_eq!(
            stream(&[b"a\r.\r\nMAIL FROM:<x>\r\n"]),
            b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"
        );
        assert_eq!(stream(&[b"a\r", b".\r", b"\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(stream(&[b"x\r\ry"]), b"x\r\n\r\ny\r\n.\r\n");
        assert_eq!(stream(&[b"end\r"]), b"end\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r.b"), b"a\r\n..b\r\n.\r\n");
        // No bare CR and no bare LF in the output, at any split.
        let input = b"1\r.\r2\r\r\n.3\n\r\r";
        for i in 0..=input.len() {
            let out = stream(&[&input[..i], &input[i..]]);
            for (k, &b) in out.iter().enumerate() {
                if b == b'\r' {
                    assert_eq!(out.get(k + 1), Some(&b'\n'), "bare CR at {k} of {out:?}");
                }
                if b == b'\n' {
                    assert_eq!(out.get(k.wrapping_sub(1)), Some(&b'\r'), "bare LF at {k}");
                }
            }
        }
    }
}
