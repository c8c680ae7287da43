//! The file format of one message in the fallback queue.
//!
//! A file is one line `nullq-fallback 2 UID ENVLEN MSGLEN\n` (UID: the sender's, who owns the
//! file), then the envelope in qmail-queue's format (ENVLEN bytes), then the message (MSGLEN
//! bytes). Version 1 files (no UID, written before the queue's current layout) are still read.
//! The reader is often root and the writer any local user, so the header is read strictly:
//! a bounded line, digits only, a uid that fits, an envelope no longer than [`MAX_ENVELOPE`].

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use nullq_proto::envelope::QmailEnvelope;

use crate::transport::{Spooled, MAX_ENVELOPE};

/// The first words of every fallback file: the format version follows.
const MAGIC: &str = "nullq-fallback ";
/// The longest header line accepted when reading a file back.
const MAX_HEADER: usize = 100;

/// A file's header: who wrote it, where the envelope and the message are.
pub(crate) struct Header {
    /// The writer's uid (version 2); `None` for a version 1 file.
    pub(crate) uid: Option<u32>,
    pub(crate) header_len: u64,
    pub(crate) envelope_len: u64,
    pub(crate) message_len: u64,
}

/// Write a fallback file: header (with `uid`, the writer's), envelope, message.
pub(crate) fn write_message(
    file: &mut File,
    message: &mut Spooled<'_>,
    envelope: &QmailEnvelope,
    uid: u32,
) -> io::Result<()> {
    let env = envelope.encode();
    let header = format!("{MAGIC}2 {uid} {} {}\n", env.len(), message.len);
    file.write_all(header.as_bytes())?;
    file.write_all(&env)?;
    message.file.seek(SeekFrom::Start(message.offset))?;
    let copied = io::copy(&mut (&mut *message.file).take(message.len), file)?;
    if copied != message.len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "message file shorter than announced",
        ));
    }
    Ok(())
}

/// Read a header line: version 2 (`nullq-fallback 2 UID ENVLEN MSGLEN`) or 1 (no UID).
pub(crate) fn read_header(reader: &mut impl BufRead) -> io::Result<Header> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut line)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a nullq fallback file");
    let text = std::str::from_utf8(&line).map_err(|_| bad())?;
    let rest = text
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(bad)?;
    let words: Vec<&str> = rest.split(' ').collect();
    let number = |w: &str| -> io::Result<u64> {
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        w.parse::<u64>().map_err(|_| bad())
    };
    let (uid, envelope_len, message_len) = match words.as_slice() {
        ["1", env, msg] => (None, number(env)?, number(msg)?),
        ["2", uid, env, msg] => {
            let uid = u32::try_from(number(uid)?).map_err(|_| bad())?;
            (Some(uid), number(env)?, number(msg)?)
        }
        _ => return Err(bad()),
    };
    Ok(Header {
        uid,
        header_len: line.len() as u64,
        envelope_len,
        message_len,
    })
}

pub(crate) fn read_envelope(reader: &mut impl Read, header: &Header) -> io::Result<QmailEnvelope> {
    if header.envelope_len > MAX_ENVELOPE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "envelope too long",
        ));
    }
    let mut bytes = Vec::new();
    reader.take(header.envelope_len).read_to_end(&mut bytes)?;
    QmailEnvelope::parse(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_strict() {
        let ok = read_header(&mut &b"nullq-fallback 1 10 20\nrest"[..]);
        assert!(matches!(
            ok,
            Ok(Header {
                uid: None,
                header_len: 23,
                envelope_len: 10,
                message_len: 20
            })
        ));
        let ok = read_header(&mut &b"nullq-fallback 2 1000 10 20\nrest"[..]);
        assert!(matches!(
            ok,
            Ok(Header {
                uid: Some(1000),
                header_len: 28,
                envelope_len: 10,
                message_len: 20
            })
        ));
        for bad in [
            &b"nullq-fallback 2 1 2\n"[..],
            b"nullq-fallback 3 1 2 3\n",
            b"nullq-fallback 2 99999999999 1 2\n",
            b"nullq-fallback 2 +1 1 2\n",
            b"nullq-fallback 1  1 2\n",
            b"nullq-fallback 1 1\n",
            b"garbage",
            b"nullq-fallback 1 1 2 3\n",
        ] {
            assert!(
                read_header(&mut &bad[..]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
