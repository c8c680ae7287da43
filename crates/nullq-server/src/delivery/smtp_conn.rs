//! One SMTP client connection of the `smtp://` backend: replies and their codes, EHLO
//! capabilities, STARTTLS, AUTH PLAIN and LOGIN, pipelined MAIL and RCPT, and DATA through
//! [`DotStuffer`], which dot-stuffs and turns line ends into CRLF a chunk at a time.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest reply line we accept (RFC 5321 says 512; servers write longer ones).
pub(crate) const MAX_LINE: usize = 8192;

/// One SMTP reply: the code and its lines' text joined by blanks.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn class(&self) -> u16 {
        self.code / 100
    }
    pub(crate) fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// What the server said it can do (EHLO keywords).
#[derive(Debug, Default, Clone)]
pub(crate) struct Caps {
    pub(crate) starttls: bool,
    pub(crate) pipelining: bool,
    pub(crate) eightbit: bool,
    pub(crate) auth_plain: bool,
    pub(crate) auth_login: bool,
}

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection, greeted and (if so configured) encrypted and authenticated.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) buf: Vec<u8>,
    pub(crate) caps: Caps,
    pub(crate) tls: bool,
    pub(crate) messages: u32,
    pub(crate) last_used: Instant,
    pub(crate) timeout: Duration,
}

/// A connection-level failure: the text for every recipient still open.
#[derive(Debug)]
pub(crate) struct ConnError(pub(crate) String);

pub(crate) type Result<T> = std::result::Result<T, ConnError>;

impl Conn {
    pub(crate) async fn read_some(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
            }
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(0)) => Err(ConnError("connection closed by the server".into())),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError(format!("read error: {e}"))),
            Err(_) => Err(ConnError(format!(
                "timeout after {}s waiting for the server",
                self.timeout.as_secs()
            ))),
        }
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
            }
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnError(format!("write error: {e}"))),
            Err(_) => Err(ConnError(format!(
                "timeout after {}s sending",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Read one (possibly multi-line) reply.
    pub(crate) async fn reply(&mut self) -> Result<Reply> {
        let mut code: Option<u16> = None;
        let mut text = String::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Err(ConnError("reply line too long".into()));
                }
                self.read_some().await?;
                continue;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let digits = line.get(..3).and_then(|d| d.parse::<u16>().ok());
            let Some(this) = digits.filter(|c| (200..600).contains(c)) else {
                return Err(ConnError(format!("not an SMTP reply: {line:?}")));
            };
            if code.is_some_and(|c| c != this) {
                return Err(ConnError(format!("reply code changed mid-reply: {line:?}")));
            }
            code = Some(this);
            let rest = line.get(4..).unwrap_or("");
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(rest);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code: this, text });
            }
        }
    }

    pub(crate) async fn command(&mut self, line: &[u8]) -> Result<Reply> {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.reply().await
    }

    pub(crate) async fn ehlo(&mut self, helo: &str) -> Result<()> {
        let r = self.command(format!("EHLO {helo}").as_bytes()).await?;
        self.caps = Caps::default();
        if r.class() != 2 {
            let r = self.command(format!("HELO {helo}").as_bytes()).await?;
            if r.class() != 2 {
                return Err(ConnError(format!("{} (in reply to HELO)", r.line())));
            }
            return Ok(());
        }
        // The keywords are the words that start each line after the first; `reply` joined the
        // lines with blanks, so look at every word (a false positive needs a hostile greeting).
        let words: Vec<String> = r
            .text
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let mut in_auth = false;
        for w in &words {
            match w.as_str() {
                "STARTTLS" => self.caps.starttls = true,
                "PIPELINING" => self.caps.pipelining = true,
                "8BITMIME" => self.caps.eightbit = true,
                "AUTH" => in_auth = true,
                "PLAIN" if in_auth => self.caps.auth_plain = true,
                "LOGIN" if in_auth => self.caps.auth_login = true,
                _ => {}
            }
            if w.starts_with("AUTH=") {
                self.caps.auth_login |= w.contains("LOGIN");
                self.caps.auth_plain |= w.contains("PLAIN");
            }
        }
        Ok(())
    }
}

pub(crate) fn base64(input: &[u8]) -> String {
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

/// The message as SMTP DATA, a chunk at a time: CRLF line ends (a CR before an LF is dropped,
/// so CRLF stays CRLF), a line starting with `.` gets another `.` (RFC 5321 section 4.5.2), a
/// last line without a newline gets one, then `.` ends it. It keeps the little it needs between
/// chunks (at a line start? a CR held back?), so a chunk may end anywhere: inside a CRLF, just
/// before a line's first `.`.
#[derive(Debug)]
pub(crate) struct DotStuffer {
    /// The next byte starts a line.
    pub(crate) line_start: bool,
    /// A CR was read and not written yet: it is dropped if an LF follows.
    pub(crate) cr: bool,
    /// Any byte at all was read (an empty message is just the final dot).
    pub(crate) any: bool,
}

impl DotStuffer {
    pub(crate) fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            cr: false,
            any: false,
        }
    }

    /// Append the encoding of `chunk` to `out`.
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        self.any |= !chunk.is_empty();
        for &b in chunk {
            match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.cr = false;
                    self.line_start = true;
                }
                b'\r' => {
                    if self.cr {
                        out.push(b'\r');
                    }
                    self.cr = true;
                    self.line_start = false;
                }
                _ => {
                    if self.cr {
                        out.push(b'\r');
                        self.cr = false;
                    }
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    self.line_start = false;
                    out.push(b);
                }
            }
        }
    }

    /// Append the end: a newline if the last line had none (a CR held back there is dropped,
    /// as the whole-message rule strips one from every line), then `.`.
    pub(crate) fn finish(self, out: &mut Vec<u8>) {
        if self.any && !self.line_start {
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

    /// The whole-message encoder the streaming one must match byte for byte.
    fn dot_stuff(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 8);
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
}
