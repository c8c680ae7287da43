//! The message a backend sends: its header in memory (rewritten), its body streamed from the
//! queue file, and the reading of a queued message's head that an attempt starts with.

use std::io::Read;
use std::sync::Arc;

use nullq_spool::{MessageBytes, MessageReader, QueueId, Spool};
use tokio::sync::mpsc;

/// Most of a message's header kept in memory for rewriting. A header that does not end within
/// this many bytes is delivered as received (not rewritten), streamed with the body.
pub const HEAD_MAX: usize = 1 << 20;

/// How much of the original message a bounce looks at for its header (the runner keeps this
/// much of each message's start in memory, the rest stays in the spool file).
pub const ORIGINAL_HEADER_MAX: usize = 64 * 1024;

/// The size of the buffers a message is streamed through (and of each chunk).
pub const CHUNK: usize = 64 * 1024;

/// A message to deliver: its header (rewritten) in memory, its body read from the spool file
/// each time it is sent. Why: a 100 MB message must not cost 100 MB per delivery; the file is
/// immutable once committed and the runner holds the message's lock while backends read it.
#[derive(Debug, Clone)]
pub struct Message {
    head: Arc<Vec<u8>>,
    /// `head[..n]` is the message's whole header (up to and with the empty line that ends
    /// it, if any); `None` when the header did not end within [`HEAD_MAX`] bytes, so part of
    /// it is in the body.
    header_len: Option<usize>,
    body: Body,
}

/// Where the bytes after [`Message`]'s head come from.
#[derive(Debug, Clone)]
enum Body {
    /// The queue file of `id`, from byte `offset` of the message to its end (`len` bytes).
    Spool {
        spool: Spool,
        id: QueueId,
        offset: u64,
        len: u64,
    },
    /// A small message's bytes, read whole with its queue file when it was loaded, from byte
    /// `offset` on: sending it reads nothing from the disk again.
    Memory { bytes: MessageBytes, offset: usize },
    /// Nothing: the head is the whole message (also for messages built in memory).
    Empty,
}

impl Message {
    /// A message held in memory whole (tests, and callers that built it themselves).
    pub fn from_bytes(bytes: Vec<u8>) -> Message {
        let header_len = header_end(&bytes, &mut 0, true);
        Message {
            head: Arc::new(bytes),
            header_len,
            body: Body::Empty,
        }
    }

    /// `head` followed by the message `id`'s bytes from `offset` on: from `bytes` when the
    /// message was read whole, else read from `spool` as it is sent. `complete`: `head` is the
    /// whole header.
    pub(crate) fn spooled(
        head: Vec<u8>,
        complete: bool,
        spool: Spool,
        id: QueueId,
        (offset, message_len): (u64, u64),
        bytes: Option<MessageBytes>,
    ) -> Self {
        let body = match bytes {
            Some(bytes) => Body::Memory {
                offset: usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.as_slice().len()),
                bytes,
            },
            None => Body::Spool {
                spool,
                id,
                offset,
                len: message_len.saturating_sub(offset),
            },
        };
        Message {
            header_len: complete.then_some(head.len()),
            head: Arc::new(head),
            body,
        }
    }

    /// A message whose header is not known to be whole (as one longer than [`HEAD_MAX`]).
    #[cfg(test)]
    pub(crate) fn unchecked_for_test(bytes: Vec<u8>) -> Message {
        Message {
            head: Arc::new(bytes),
            header_len: None,
            body: Body::Empty,
        }
    }

    /// The message's whole header (with the empty line that ends it, if there is one), or
    /// `None` when it was longer than [`HEAD_MAX`] and is only partly in memory.
    pub fn header(&self) -> Option<&[u8]> {
        self.head.get(..self.header_len?)
    }

    /// The same message with `header` in place of its header (`None` when the header is not
    /// wholly in memory: see [`Message::header`]). The body is still read from the spool.
    pub fn with_header(&self, header: Vec<u8>) -> Option<Message> {
        let old = self.header_len?;
        let mut head = header;
        let new_len = head.len();
        head.extend_from_slice(self.head.get(old..)?);
        Some(Message {
            head: Arc::new(head),
            header_len: Some(new_len),
            body: self.body.clone(),
        })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        let body = match &self.body {
            Body::Spool { len, .. } => *len,
            Body::Memory { bytes, offset } => (bytes.as_slice().len() - offset) as u64,
            Body::Empty => 0,
        };
        self.head.len() as u64 + body
    }

    /// True for a message of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new reader of the whole message (blocking file reads: call it off the async threads).
    /// Each delivery, and each retry of one, opens its own, so they never share a position.
    pub fn open(&self) -> std::io::Result<MessageStream> {
        let body = match &self.body {
            Body::Empty => Rest::None,
            Body::Memory { bytes, offset } => Rest::Memory {
                bytes: bytes.clone(),
                pos: *offset,
            },
            Body::Spool {
                spool,
                id,
                offset,
                len,
            } => {
                let mut r = spool.message(id).map_err(std::io::Error::other)?;
                if r.skip(*offset) != *offset || r.len().checked_sub(*offset) != Some(*len) {
                    // The queue file is immutable after commit: a change means someone else
                    // wrote it, and sending it now would send something else.
                    return Err(std::io::Error::other(format!(
                        "queue file of {id} changed size while being delivered"
                    )));
                }
                Rest::File(r)
            }
        };
        Ok(MessageStream {
            head: Arc::clone(&self.head),
            pos: 0,
            body,
        })
    }

    /// The message in chunks of at most [`CHUNK`] bytes, read by a blocking thread at most two
    /// chunks ahead of the consumer (so memory stays bounded whatever the message's size). A
    /// read error is the last item; a consumer that stops early just drops the receiver.
    pub fn chunks(&self) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel(2);
        let message = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = match message.open() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut reader, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Whether any byte has the high bit set (a blocking pass over the file, no allocation
    /// beyond one [`CHUNK`]).
    pub fn has_8bit(&self) -> std::io::Result<bool> {
        let mut reader = self.open()?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            if buf[..n].iter().any(|&b| b >= 0x80) {
                return Ok(true);
            }
        }
    }

    /// Copy the whole message to `out` through one [`CHUNK`] buffer (blocking). Returns the
    /// number of bytes copied.
    pub fn copy_to(&self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        let mut reader = self.open()?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
    }
}

/// Fill `buf` as far as the reader goes (fewer bytes only at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader of one [`Message`]: its head from memory, then its body from the queue file (or
/// from memory, for a small message read whole).
#[derive(Debug)]
pub struct MessageStream {
    head: Arc<Vec<u8>>,
    pos: usize,
    body: Rest,
}

/// What a [`MessageStream`] reads after the head.
#[derive(Debug)]
enum Rest {
    None,
    File(MessageReader),
    Memory { bytes: MessageBytes, pos: usize },
}

impl Read for MessageStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(rest) = self.head.get(self.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            return Ok(n);
        }
        match &mut self.body {
            Rest::File(r) => r.read(buf),
            Rest::Memory { bytes, pos } => {
                let rest = bytes.as_slice().get(*pos..).unwrap_or_default();
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                Ok(n)
            }
            Rest::None => Ok(0),
        }
    }
}

/// What is read of a message before delivering it (the body stays in the file).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The header as received, up to and with the empty line that ends it; empty when the
    /// header is longer than [`HEAD_MAX`] (then it is not rewritten).
    pub(crate) header: Vec<u8>,
    /// Where the rest of the message starts (the length of `header`).
    pub(crate) body_at: u64,
    /// The header did not end within [`HEAD_MAX`] bytes.
    pub(crate) too_long: bool,
    /// The first [`ORIGINAL_HEADER_MAX`] bytes of the message, from which a bounce
    /// takes the original's header.
    pub(crate) start: Vec<u8>,
}

/// Where the header in `buf` ends, by the rule of `policy::split_header` (which the rewriting
/// applies, so rewriting the header alone changes the same fields as rewriting the whole
/// message): after the first empty line, or before the first line that is neither a field nor a
/// continuation (a header that ended without an empty line). `None`: not known yet, read more.
/// `from` keeps the scan's position between calls, so each byte is looked at once.
fn header_end(buf: &[u8], from: &mut usize, eof: bool) -> Option<usize> {
    loop {
        let pos = *from;
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            // A last line without a newline is in the header whatever it is: the rewriting
            // copies what follows the fields unchanged either way.
            return eof.then_some(buf.len());
        };
        let line = &buf[pos..=pos + nl];
        if line == b"\n" || line == b"\r\n" {
            return Some(pos + nl + 1);
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) && !line.contains(&b':') {
            return Some(pos);
        }
        *from = pos + nl + 1;
    }
}

/// Read the header of a message (and at least the start a bounce needs), in [`CHUNK`]s, at
/// most [`HEAD_MAX`] plus one chunk.
pub(crate) fn read_head(reader: &mut impl Read) -> std::io::Result<Head> {
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut end = None;
    let mut eof = false;
    loop {
        if end.is_none() {
            end = header_end(&buf, &mut scanned, eof);
        }
        let enough = match end {
            Some(_) => buf.len() >= ORIGINAL_HEADER_MAX,
            None => buf.len() > HEAD_MAX,
        };
        if eof || enough {
            break;
        }
        let old = buf.len();
        buf.resize(old + CHUNK, 0);
        let n = read_full(reader, &mut buf[old..])?;
        buf.truncate(old + n);
        eof = n < CHUNK;
    }
    let start = buf[..buf.len().min(ORIGINAL_HEADER_MAX)].to_vec();
    let too_long = end.is_none();
    let end = end.unwrap_or(0);
    buf.truncate(end);
    buf.shrink_to_fit();
    Ok(Head {
        header: buf,
        body_at: end as u64,
        too_long,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(message: &[u8]) -> Head {
        read_head(&mut &message[..]).unwrap()
    }

    #[test]
    fn the_header_ends_where_the_rewriting_says() {
        // After the empty line (LF or CRLF).
        let h = head_of(b"A: b\n c\nD: e\n\nbody\n\nmore\n");
        assert_eq!(h.header, b"A: b\n c\nD: e\n\n");
        assert_eq!(h.body_at, 14);
        let h = head_of(b"A: b\r\n\r\nbody");
        assert_eq!(h.header, b"A: b\r\n\r\n");
        // Before a line that is no field: the header ended without an empty line.
        let h = head_of(b"A: b\nnot a field\n\nX: y\n");
        assert_eq!(h.header, b"A: b\n");
        let h = head_of(b"no header at all\n");
        assert!(h.header.is_empty() && !h.too_long);
        // No end: the whole message is header.
        let h = head_of(b"A: b\n c");
        assert_eq!(h.header, b"A: b\n c");
        assert_eq!(head_of(b"").header, b"");
        // The bounce gets the message's start, past the header.
        assert_eq!(head_of(b"A: b\n\nbody").start, b"A: b\n\nbody");
    }

    #[test]
    fn a_header_over_the_limit_is_not_kept() {
        let mut message = b"X: ".to_vec();
        while message.len() <= HEAD_MAX + 3 * CHUNK {
            message.extend_from_slice(b"aaaaaaaaaaaaaaa\n ");
        }
        message.extend_from_slice(b"\n\nbody\n");
        let h = head_of(&message);
        assert!(h.header.is_empty() && h.too_long);
        assert_eq!(h.body_at, 0);
        assert_eq!(h.start, &message[..ORIGINAL_HEADER_MAX]);
    }

    #[test]
    fn a_message_reads_back_as_head_then_body() {
        let m = Message::from_bytes(b"A: b\n\nbody\n".to_vec());
        assert_eq!(m.len(), 11);
        let mut got = Vec::new();
        m.open().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"A: b\n\nbody\n");
        let mut copied = Vec::new();
        assert_eq!(m.copy_to(&mut copied).unwrap(), 11);
        assert_eq!(copied, got);
        assert!(!m.has_8bit().unwrap());
        assert!(Message::from_bytes(b"\xe9".to_vec()).has_8bit().unwrap());
    }

    #[test]
    fn the_header_of_a_message_can_be_replaced_and_the_body_kept() {
        let m = Message::from_bytes(b"A: b\n c\nD: e\n\nbody\n".to_vec());
        assert_eq!(m.header(), Some(&b"A: b\n c\nD: e\n\n"[..]));
        let n = m.with_header(b"X: y\n\n".to_vec()).unwrap();
        assert_eq!(n.header(), Some(&b"X: y\n\n"[..]));
        let mut got = Vec::new();
        n.copy_to(&mut got).unwrap();
        assert_eq!(got, b"X: y\n\nbody\n");
        let long = Message {
            head: Arc::new(Vec::new()),
            header_len: None,
            body: Body::Empty,
        };
        assert!(long.header().is_none() && long.with_header(Vec::new()).is_none());
    }
}
