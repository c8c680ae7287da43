//! Reading committed message files: the checks, the envelope, and a streaming message reader.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, SpoolError, Step};
use crate::format::{Envelope, Trailer, HEADER, TRAILER_LEN};

/// Reading a message file can fail on I/O (a spool error) or find the file not whole.
pub(crate) enum ReadError {
    Io(SpoolError),
    Bad(String),
}

impl ReadError {
    /// For callers that treat a bad file as an error too (not recovery, which moves it aside).
    pub(crate) fn into_spool(self, path: &Path) -> SpoolError {
        match self {
            ReadError::Io(e) => e,
            ReadError::Bad(why) => SpoolError::invalid(path, why),
        }
    }
}

impl From<SpoolError> for ReadError {
    fn from(e: SpoolError) -> Self {
        ReadError::Io(e)
    }
}

/// An open message file whose size, header and trailer agree.
pub(crate) struct MessageFile {
    pub file: File,
    pub path: PathBuf,
    pub trailer: Trailer,
    pub env_offset: u64,
}

impl MessageFile {
    pub(crate) fn open(path: &Path) -> Result<MessageFile, ReadError> {
        let file = open_queue_file(path)?;
        MessageFile::checked(file, path)
    }

    /// [`MessageFile::open`]'s checks on a file already open.
    pub(crate) fn checked(file: File, path: &Path) -> Result<MessageFile, ReadError> {
        let len = message_len(&file, path)?;
        if len < (HEADER.len() + TRAILER_LEN) as u64 {
            return Err(ReadError::Bad(format!(
                "only {len} bytes: torn or not a queue file"
            )));
        }
        let mut header = [0u8; HEADER.len()];
        read_at(&file, path, &mut header, 0)?;
        if header != HEADER {
            return Err(ReadError::Bad("no nullq-queue 1 header".into()));
        }
        let mut trailer = [0u8; TRAILER_LEN];
        read_at(&file, path, &mut trailer, len - TRAILER_LEN as u64)?;
        let trailer = Trailer::decode(&trailer).map_err(ReadError::Bad)?;
        let env_offset = trailer.envelope_offset(len).map_err(ReadError::Bad)?;
        Ok(MessageFile {
            file,
            path: path.to_owned(),
            trailer,
            env_offset,
        })
    }

    pub(crate) fn envelope(&self) -> Result<Envelope, ReadError> {
        let len = usize::try_from(self.trailer.env_len)
            .map_err(|_| ReadError::Bad("envelope too large".into()))?;
        let mut bytes = vec![0u8; len];
        read_at(&self.file, &self.path, &mut bytes, self.env_offset)?;
        Envelope::decode(&bytes).map_err(ReadError::Bad)
    }

    /// Reads everything before the trailer and compares its CRC-32 with the trailer's.
    pub(crate) fn check_crc(&self) -> Result<(), ReadError> {
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut pos, end) = (0u64, self.env_offset + self.trailer.env_len);
        while pos < end {
            let want = buf
                .len()
                .min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            read_at(&self.file, &self.path, &mut buf[..want], pos)?;
            crc.update(&buf[..want]);
            pos += want as u64;
        }
        let got = crc.finalize();
        if got != self.trailer.crc {
            return Err(ReadError::Bad(format!(
                "checksum {got:08x}, trailer says {:08x}",
                self.trailer.crc
            )));
        }
        Ok(())
    }

    pub(crate) fn into_message_reader(self) -> MessageReader {
        MessageReader {
            file: self.file,
            path: self.path,
            pos: HEADER.len() as u64,
            remaining: self.trailer.msg_len,
            len: self.trailer.msg_len,
        }
    }
}

/// Files up to this size are read whole, in one read, when loaded for delivery
/// ([`crate::Spool::load_open`]): the checks, the envelope and the message then come from
/// memory, and the message is not read from the file again.
pub(crate) const WHOLE_MAX: u64 = 64 * 1024;

/// Opens a queue file for reading without waiting and without following a symlink: a FIFO
/// planted in `queue/` would block a plain open until something wrote to it, and whoever
/// opened it (the start-up check, a rescan, a delivery) with it.
pub(crate) fn open_queue_file(path: &Path) -> Result<File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| SpoolError::io(Step::Open, path, e))
}

/// The length of `file`, which must be a regular file: anything else in `queue/` is not a
/// message, and is found corrupt as a torn file is.
pub(crate) fn regular_len(file: &File, path: &Path) -> Result<u64, ReadError> {
    Ok(regular(file, path)?.len())
}

/// [`regular_len`] of a queue file. One the committer is still writing
/// ([`crate::writer::BEING_WRITTEN`]) is not in the queue yet: it answers as a file that is not
/// there (`NotFound`), which every reader already takes as "gone since the listing".
pub(crate) fn message_len(file: &File, path: &Path) -> Result<u64, ReadError> {
    let meta = regular(file, path)?;
    if crate::writer::is_being_written(&meta) {
        let e = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "still being written: not in the queue yet",
        );
        return Err(ReadError::Io(SpoolError::io(Step::Open, path, e)));
    }
    Ok(meta.len())
}

fn regular(file: &File, path: &Path) -> Result<std::fs::Metadata, ReadError> {
    let meta = file
        .metadata()
        .map_err(|e| SpoolError::io(Step::Read, path, e))?;
    if !meta.is_file() {
        return Err(ReadError::Bad("not a regular file".into()));
    }
    Ok(meta)
}

/// The most a state file may hold per recipient: its line with the longest result the runner
/// keeps (an SMTP reply of up to 64 KiB, each byte escaped as up to three), with room to spare.
const STATE_PER_RECIPIENT: u64 = 256 * 1024;

/// The bytes of the state file at `path` of a message with `recipients` recipients, `None` if
/// there is none. Opened as [`open_queue_file`] opens a queue file (never through a symlink,
/// never waiting on a FIFO), and only a regular file of a plausible size is read: anything else
/// planted at `state/ID` is bad, and set aside like a damaged state file.
pub(crate) fn read_state_file(
    path: &Path,
    recipients: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read;
    let file = match nullq_fs::open_planted(path, None) {
        Ok(f) => f,
        Err(nullq_fs::Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(nullq_fs::Refused::Io(e)) => return Err(SpoolError::io(Step::Open, path, e).into()),
        Err(refused) => return Err(ReadError::Bad(format!("not a state file: {refused}"))),
    };
    let len = regular_len(&file, path)?;
    let max = STATE_PER_RECIPIENT.saturating_mul(recipients as u64 + 1);
    if len > max {
        return Err(ReadError::Bad(format!(
            "{len} bytes, more than a state file of {recipients} recipients can hold"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // Bounded even if the file grows meanwhile.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SpoolError::io(Step::Read, path, e))?;
    if bytes.len() as u64 > max {
        return Err(ReadError::Bad(format!(
            "more than a state file of {recipients} recipients can hold"
        )));
    }
    Ok(Some(bytes))
}

/// A message file read whole and checked as [`MessageFile::open`] and
/// [`MessageFile::check_crc`] check it: the trailer and the envelope it holds.
pub(crate) fn check_whole(bytes: &[u8]) -> Result<(Trailer, Envelope), String> {
    let len = bytes.len();
    if len < HEADER.len() + TRAILER_LEN {
        return Err(format!("only {len} bytes: torn or not a queue file"));
    }
    if !bytes.starts_with(HEADER) {
        return Err("no nullq-queue 1 header".into());
    }
    let trailer = Trailer::decode(&bytes[len - TRAILER_LEN..])?;
    let env_offset = usize::try_from(trailer.envelope_offset(len as u64)?)
        .map_err(|_| "envelope offset too large".to_string())?;
    let before_trailer = len - TRAILER_LEN;
    let got = crc32fast::hash(&bytes[..before_trailer]);
    if got != trailer.crc {
        return Err(format!(
            "checksum {got:08x}, trailer says {:08x}",
            trailer.crc
        ));
    }
    let envelope = Envelope::decode(&bytes[env_offset..before_trailer])?;
    Ok((trailer, envelope))
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), SpoolError> {
    file.read_exact_at(buf, offset)
        .map_err(|e| SpoolError::io(Step::Read, path, e))
}

/// The bytes of one queued message, in memory: read with its whole file by
/// [`crate::Spool::load_open`]. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct MessageBytes {
    file: std::sync::Arc<Vec<u8>>,
    len: usize,
}

impl MessageBytes {
    /// The message of a checked queue file's bytes (`msg_len` bytes after the header).
    pub(crate) fn of_file(file: Vec<u8>, msg_len: u64) -> MessageBytes {
        let most = file.len().saturating_sub(HEADER.len());
        let len = usize::try_from(msg_len).map_or(most, |n| n.min(most));
        MessageBytes {
            file: std::sync::Arc::new(file),
            len,
        }
    }

    /// The message, exactly as received.
    pub fn as_slice(&self) -> &[u8] {
        // In bounds: `of_file` keeps `len` within the file after the header.
        self.file
            .get(HEADER.len()..HEADER.len() + self.len)
            .unwrap_or_default()
    }
}

/// The bytes of one queued message, exactly as received, read from the file as needed (a
/// 100 MB message is never in memory at once). From [`crate::Spool::message`].
///
/// Read errors are `io::Error`s whose inner error is a [`SpoolError`] naming the path.
#[derive(Debug)]
pub struct MessageReader {
    file: File,
    path: PathBuf,
    pos: u64,
    remaining: u64,
    len: u64,
}

impl MessageReader {
    /// The message's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a message of 0 bytes (valid, if odd).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves the read position `n` bytes forward without reading them (the file is read at an
    /// offset, so this costs nothing), at most to the end of the message. Returns how many bytes
    /// were skipped. Delivery uses it to read a message's body again after its header.
    pub fn skip(&mut self, n: u64) -> u64 {
        let n = n.min(self.remaining);
        self.pos += n;
        self.remaining -= n;
        n
    }
}

impl Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self
            .file
            .read_at(&mut buf[..want], self.pos)
            .map_err(|e| io::Error::new(e.kind(), SpoolError::io(Step::Read, &self.path, e)))?;
        if n == 0 {
            let e = SpoolError::invalid(&self.path, "file ends before the message does");
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::SystemTime;

    use crate::{Envelope, Spool};

    #[test]
    fn a_state_file_is_read_only_if_regular_and_of_a_plausible_size() {
        use super::{read_state_file, ReadError, STATE_PER_RECIPIENT};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert!(matches!(read_state_file(&path, 1), Ok(None)));
        std::fs::write(&path, b"nullq-state 2\n").unwrap();
        assert_eq!(
            read_state_file(&path, 1).ok().flatten().unwrap(),
            b"nullq-state 2\n"
        );
        // One byte over what two recipients' state can hold (a sparse file).
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(STATE_PER_RECIPIENT * 3 + 1).unwrap();
        let bad = |r| match r {
            Err(ReadError::Bad(why)) => why,
            Err(ReadError::Io(e)) => panic!("not bad but {e}"),
            Ok(_) => panic!("read"),
        };
        assert!(bad(read_state_file(&path, 2)).contains("more than a state file"));
        assert!(read_state_file(&path, 3).is_ok());
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(bad(read_state_file(&path, 1)).contains("symlink"));
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(bad(read_state_file(&path, 1)).contains("not a regular file"));
    }

    #[test]
    fn skip_moves_forward_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut incoming = spool.receive().unwrap();
        incoming.write(b"Subject: x\n\nbody\n").unwrap();
        let env = Envelope {
            arrival: SystemTime::now(),
            client_addr: "127.0.0.1".into(),
            client_host: String::new(),
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec()],
        };
        let id = incoming.finish(&env).unwrap().commit().unwrap();

        let mut r = spool.message(&id).unwrap();
        assert_eq!(r.skip(12), 12);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"body\n");
        // The length is the message's, whatever was skipped.
        assert_eq!(r.len(), 17);

        let mut r = spool.message(&id).unwrap();
        assert_eq!(r.skip(100), 17);
        assert_eq!(r.skip(1), 0);
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }
}
