//! The message file: how `queue/ID` is laid out, and its encoders and decoders (no I/O here).
//!
//! ```text
//! header    "nullq-queue 1\n"                               magic and version, 14 bytes
//! message   the message bytes exactly as received           msg_len bytes (may be 0)
//! envelope  netstring-like fields  LEN ":" BYTES ","         env_len bytes
//!             arrival      "SECS.NNNNNNNNN" (unix seconds, 9-digit nanoseconds)
//!             client_addr  UTF-8
//!             client_host  UTF-8
//!             sender       any bytes ("" is the null sender)
//!             count        decimal number of recipients
//!             recipient    any bytes, `count` times
//! trailer   "%016x %016x %08x nullq-end\n"                   53 bytes:
//!             msg_len, env_len, CRC-32 (IEEE, crc32fast) of header+message+envelope
//! ```
//!
//! The message comes first because QMQP sends it first: the file is written front to back as the
//! bytes arrive, and the reader finds the envelope through the fixed-size trailer at the end. A
//! file is whole when its length is `14 + msg_len + env_len + 53`, the trailer ends in the
//! closing magic, and the CRC matches; a file torn anywhere fails one of those checks.
//! Fields are netstrings (<https://cr.yp.to/proto/netstrings.txt>, via `nullq_proto::netstring`),
//! so any byte is safe in them; the trailer's numbers are fixed-width hex so it has one size.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nullq_proto::netstring;

/// Magic and version line opening every message file.
pub(crate) const HEADER: &[u8] = b"nullq-queue 1\n";
/// Closing magic, the last bytes of every whole message file.
const END_MAGIC: &[u8] = b" nullq-end\n";
/// Size of the trailer: two 16-digit lengths, an 8-digit CRC, separators and the closing magic.
pub(crate) const TRAILER_LEN: usize = 16 + 1 + 16 + 1 + 8 + END_MAGIC.len();

/// Who sent a message, to whom, and from where: what QMQP carries besides the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the message arrived (kept to the nanosecond).
    pub arrival: SystemTime,
    /// The client's address as the server saw it, e.g. `192.0.2.7:4711` (any UTF-8).
    pub client_addr: String,
    /// The client's host name, if known, else empty (any UTF-8).
    pub client_host: String,
    /// The envelope sender, as sent (empty for the null sender `<>`).
    pub sender: Vec<u8>,
    /// The envelope recipients, in the order sent; [`crate::DeliveryState`] follows this order.
    pub recipients: Vec<Vec<u8>>,
}

impl Envelope {
    /// The on-disk form (the `envelope` section above).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.client_addr.len()
                + self.client_host.len()
                + self.sender.len()
                + self.recipients.iter().map(|r| r.len() + 8).sum::<usize>(),
        );
        // A clock before 1970 is not worth failing a message for; it is stored as the epoch.
        let t = self
            .arrival
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        field(
            &mut out,
            format!("{}.{:09}", t.as_secs(), t.subsec_nanos()).as_bytes(),
        );
        field(&mut out, self.client_addr.as_bytes());
        field(&mut out, self.client_host.as_bytes());
        field(&mut out, &self.sender);
        field(&mut out, self.recipients.len().to_string().as_bytes());
        for r in &self.recipients {
            field(&mut out, r);
        }
        out
    }

    /// Parses what [`Envelope::encode`] wrote; the error says what was wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        let mut rest = bytes;
        let arrival = parse_time(take_field(&mut rest, "arrival")?)?;
        let client_addr = utf8(take_field(&mut rest, "client address")?, "client address")?;
        let client_host = utf8(take_field(&mut rest, "client host")?, "client host")?;
        let sender = take_field(&mut rest, "sender")?.to_vec();
        let count = decimal(take_field(&mut rest, "recipient count")?, "recipient count")?;
        // Each recipient takes at least 3 bytes ("0:,"), so a lying count cannot make us allocate.
        let mut recipients = Vec::with_capacity(count.min(rest.len() as u64 / 3) as usize);
        for _ in 0..count {
            recipients.push(take_field(&mut rest, "recipient")?.to_vec());
        }
        if !rest.is_empty() {
            return Err(format!("{} stray bytes after the envelope", rest.len()));
        }
        Ok(Envelope {
            arrival,
            client_addr,
            client_host,
            sender,
            recipients,
        })
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    netstring::encode(out, bytes);
}

fn take_field<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
    match netstring::decode(rest, rest.len() as u64) {
        Ok(Some((body, used))) => {
            *rest = &rest[used..];
            Ok(body)
        }
        Ok(None) => Err(format!("{what}: runs past the end of the envelope")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A non-negative decimal as written by `to_string` (no sign, no leading zeros).
fn decimal(digits: &[u8], what: &str) -> Result<u64, String> {
    let ok = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    let n = ok
        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .flatten();
    n.ok_or_else(|| format!("{what}: bad number {:?}", String::from_utf8_lossy(digits)))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
}

fn parse_time(bytes: &[u8]) -> Result<SystemTime, String> {
    let bad = || format!("arrival: bad time {:?}", String::from_utf8_lossy(bytes));
    let dot = bytes.iter().position(|&b| b == b'.').ok_or_else(bad)?;
    let secs = decimal(&bytes[..dot], "arrival")?;
    let nanos = &bytes[dot + 1..];
    if nanos.len() != 9 || !nanos.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let nanos = nanos.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or_else(bad)
}

/// The fixed-size end of a message file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub msg_len: u64,
    pub env_len: u64,
    pub crc: u32,
}

impl Trailer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let t = format!(
            "{:016x} {:016x} {:08x}",
            self.msg_len, self.env_len, self.crc
        );
        let mut out = t.into_bytes();
        out.extend_from_slice(END_MAGIC);
        debug_assert_eq!(out.len(), TRAILER_LEN);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Trailer, String> {
        if bytes.len() != TRAILER_LEN || !bytes.ends_with(END_MAGIC) {
            return Err("no closing magic: the file is torn or not a queue file".into());
        }
        let hex = |range: std::ops::Range<usize>, what: &str| -> Result<u64, String> {
            let part = &bytes[range];
            let ok = part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            ok.then(|| {
                std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
            })
            .flatten()
            .ok_or_else(|| format!("trailer: bad {what}"))
        };
        if bytes[16] != b' ' || bytes[33] != b' ' {
            return Err("trailer: bad separators".into());
        }
        let msg_len = hex(0..16, "message length")?;
        let env_len = hex(17..33, "envelope length")?;
        let crc = u32::try_from(hex(34..42, "checksum")?)
            .map_err(|_| "trailer: bad checksum".to_string())?;
        Ok(Trailer {
            msg_len,
            env_len,
            crc,
        })
    }

    /// Checks the lengths against the file's size; returns the envelope's offset.
    pub(crate) fn envelope_offset(&self, file_len: u64) -> Result<u64, String> {
        let fixed = (HEADER.len() + TRAILER_LEN) as u64;
        let want = self
            .msg_len
            .checked_add(self.env_len)
            .and_then(|n| n.checked_add(fixed));
        if want != Some(file_len) {
            return Err(format!(
                "lengths do not add up: header+{}+{}+trailer != file size {file_len}",
                self.msg_len, self.env_len
            ));
        }
        Ok(HEADER.len() as u64 + self.msg_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            arrival: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            client_addr: "192.0.2.7:4711".into(),
            client_host: "host,with:odd\0chars".into(),
            sender: b"a@b".to_vec(),
            recipients: vec![
                b"x@y".to_vec(),
                Vec::new(),
                (0..=255u8).collect(),
                b"1:,".to_vec(),
            ],
        }
    }

    #[test]
    fn envelope_round_trips_any_bytes() {
        let e = sample();
        assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        let empty = Envelope {
            recipients: vec![],
            sender: vec![],
            ..sample()
        };
        assert_eq!(Envelope::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn envelope_rejects_every_truncation_and_extra_bytes() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                Envelope::decode(&bytes[..cut]).is_err(),
                "accepted a cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(b'x');
        assert!(Envelope::decode(&long).is_err());
    }

    #[test]
    fn envelope_rejects_lying_counts_and_lengths() {
        let ok = b"12:12.000000000,0:,0:,0:,1:1,1:9,";
        assert_eq!(
            Envelope::decode(ok).map(|e| e.recipients),
            Ok(vec![b"9".to_vec()])
        );
        for bad in [
            &b"12:12.000000000,0:,0:,0:,11:99999999999,"[..],
            b"12:12.000000000,0:,0:,0:,1:1,5:9,",
            b"12:12.000000000,0:,0:,0:,2:01,",
            b"12:12.000000000,0:,0:,0:,1:1,01:9,",
            b"12:12.000000000,0:,0:,0:,1:1,99999999999999999999999:,",
            b"12:12.000000000,0:,0:,0:,1:1,1:9;",
            b"11:12.00000000,0:,0:,0:,1:0,",
            b"12:12.000000000,0:,1:\xff,0:,1:0,",
        ] {
            assert!(
                Envelope::decode(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailer_round_trips_and_checks_lengths() {
        let t = Trailer {
            msg_len: 5,
            env_len: 7,
            crc: 0xdead_beef,
        };
        let bytes = t.encode();
        assert_eq!(bytes.len(), TRAILER_LEN);
        assert_eq!(Trailer::decode(&bytes), Ok(t));
        assert_eq!(
            t.envelope_offset((HEADER.len() + 12 + TRAILER_LEN) as u64),
            Ok(HEADER.len() as u64 + 5)
        );
        assert!(t
            .envelope_offset((HEADER.len() + 11 + TRAILER_LEN) as u64)
            .is_err());
        let huge = Trailer {
            msg_len: u64::MAX,
            env_len: 2,
            crc: 0,
        };
        assert!(huge.envelope_offset(100).is_err());
        let mut bad = bytes.clone();
        bad[3] = b'G';
        assert!(Trailer::decode(&bad).is_err());
        assert!(Trailer::decode(&bytes[1..]).is_err());
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// The example in docs/spool.md, byte for byte.
    #[test]
    fn documented_example() {
        let env = Envelope {
            arrival: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            client_addr: "192.0.2.7:4711".into(),
            client_host: String::new(),
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec()],
        };
        let mut file = HEADER.to_vec();
        file.extend_from_slice(b"hello\n");
        let e = env.encode();
        file.extend_from_slice(&e);
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(
            &Trailer {
                msg_len: 6,
                env_len: e.len() as u64,
                crc,
            }
            .encode(),
        );
        let documented =
            "nullq-queue 1\nhello\n20:1700000000.123456789,14:192.0.2.7:4711,0:,3:a@b,1:1,3:c@d,\
                          0000000000000006 000000000000003d 37254e82 nullq-end\n";
        assert_eq!(String::from_utf8_lossy(&file), documented);
    }
}
