//! Per-recipient delivery state and its file, `state/ID`.
//!
//! ```text
//! nullq-state 2
//! STATUS ATTEMPTS NEXT FLAGS LAST_RESULT   one line per recipient, in envelope order
//! end N                                    N = number of recipient lines
//! ```
//! `STATUS` is `pending`, `delivered` or `failed`; `ATTEMPTS` a decimal; `NEXT` the next attempt
//! as `SECS.NNNNNNNNN` (unix time) or `-`; `FLAGS` is `-` or `warned` (a delay warning went out
//! for this recipient); `LAST_RESULT` the remote answer or reason, percent-escaped (every byte
//! outside `!`..`~`, and `%` itself, as `%XX`) so that spaces, newlines or any other bytes
//! round-trip. The `end` line tells a whole file from a cut one, though the file is only ever
//! replaced by rename after `fdatasync`.
//!
//! Version 1 files (written before the flag had a field) are still read: they have no `FLAGS`
//! field and marked a sent warning by the prefix `[warned] ` on `LAST_RESULT`, which is taken
//! off and becomes the flag. Every file written is version 2.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VERSION_LINE: &str = "nullq-state 2";
const VERSION_1_LINE: &str = "nullq-state 1";
/// How version 1 marked a recipient whose delay warning was sent.
const VERSION_1_WARNED: &str = "[warned] ";

/// Where one recipient of a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not delivered yet; to be tried (again) at `next_attempt`.
    Pending,
    /// Delivered; never tried again.
    Delivered,
    /// Failed permanently (bounced or given up); never tried again.
    Failed,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// The delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientState {
    /// Pending, delivered or failed.
    pub status: Status,
    /// How many delivery attempts were made.
    pub attempts: u32,
    /// When to try again (`None`: as soon as possible).
    pub next_attempt: Option<SystemTime>,
    /// The last remote answer or failure reason (any text).
    pub last_result: String,
    /// A delay warning was sent for this recipient (it is sent once).
    pub warned: bool,
}

impl RecipientState {
    /// Not tried yet.
    pub fn pending() -> RecipientState {
        RecipientState {
            status: Status::Pending,
            attempts: 0,
            next_attempt: None,
            last_result: String::new(),
            warned: false,
        }
    }
}

/// The delivery state of every recipient of one message, in the order of
/// [`crate::Envelope::recipients`]. A message without a `state/ID` file is all pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// One entry per envelope recipient, same order.
    pub recipients: Vec<RecipientState>,
}

impl DeliveryState {
    /// Every one of `n` recipients pending, never tried (the state of a fresh message).
    pub fn all_pending(n: usize) -> DeliveryState {
        DeliveryState {
            recipients: vec![RecipientState::pending(); n],
        }
    }

    /// True while some recipient is still [`Status::Pending`]; when false the message may be
    /// removed.
    pub fn any_pending(&self) -> bool {
        self.recipients.iter().any(|r| r.status == Status::Pending)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(32 + self.recipients.len() * 48);
        out.push_str(VERSION_LINE);
        out.push('\n');
        for r in &self.recipients {
            let next = match r.next_attempt {
                None => "-".to_string(),
                Some(t) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
                }
            };
            out.push_str(&format!(
                "{} {} {} {} {}\n",
                r.status.word(),
                r.attempts,
                next,
                if r.warned { "warned" } else { "-" },
                escape(&r.last_result)
            ));
        }
        out.push_str(&format!("end {}\n", self.recipients.len()));
        out.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<DeliveryState, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let body = text
            .strip_suffix('\n')
            .ok_or("no final newline: cut short")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [first, rest @ .., last] = lines.as_slice() else {
            return Err("cut short".into());
        };
        let version = match *first {
            VERSION_LINE => 2,
            VERSION_1_LINE => 1,
            _ => return Err(format!("first line is not {VERSION_LINE:?}")),
        };
        let count = last.strip_prefix("end ").ok_or("no end line: cut short")?;
        if number(count) != Some(rest.len() as u64) {
            return Err(format!(
                "end line says {count:?}, found {} recipient lines",
                rest.len()
            ));
        }
        let recipients = rest
            .iter()
            .enumerate()
            .map(|(n, line)| decode_line(line, version).map_err(|e| format!("line {}: {e}", n + 2)))
            .collect::<Result<_, _>>()?;
        Ok(DeliveryState { recipients })
    }
}

fn decode_line(line: &str, version: u8) -> Result<RecipientState, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (status, attempts, next, flags, last) = match (version, fields.as_slice()) {
        (2, [status, attempts, next, flags, last]) => (*status, *attempts, *next, *flags, *last),
        (1, [status, attempts, next, last]) => (*status, *attempts, *next, "-", *last),
        (2, _) => return Err("want 5 fields".into()),
        _ => return Err("want 4 fields".into()),
    };
    let status = match status {
        "pending" => Status::Pending,
        "delivered" => Status::Delivered,
        "failed" => Status::Failed,
        other => return Err(format!("unknown status {other:?}")),
    };
    let attempts = number(attempts)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or("bad attempts")?;
    let next_attempt = if next == "-" {
        None
    } else {
        Some(time(next).ok_or("bad next attempt time")?)
    };
    let mut warned = match flags {
        "-" => false,
        "warned" => true,
        other => return Err(format!("unknown flags {other:?}")),
    };
    let mut last_result = unescape(last)?;
    if version == 1 {
        if let Some(rest) = last_result.strip_prefix(VERSION_1_WARNED) {
            last_result = rest.to_owned();
            warned = true;
        }
    }
    Ok(RecipientState {
        status,
        attempts,
        next_attempt,
        last_result,
        warned,
    })
}

fn number(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn time(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = s.split_once('.')?;
    let nanos = (nanos.len() == 9 && nanos.bytes().all(|b| b.is_ascii_digit()))
        .then(|| nanos.parse::<u32>().ok())??;
    UNIX_EPOCH.checked_add(Duration::new(number(secs)?, nanos))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let [Some(h), Some(l)] = hex else {
                    return Err("cut %-escape".into());
                };
                let digit = |c: u8| char::from(c).to_digit(16);
                let (Some(h), Some(l)) = (digit(h), digit(l)) else {
                    return Err("bad %-escape".into());
                };
                out.push((h * 16 + l) as u8);
            }
            b if b.is_ascii_graphic() => out.push(b),
            _ => return Err("unescaped byte in result".into()),
        }
    }
    String::from_utf8(out).map_err(|_| "result is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd() -> DeliveryState {
        DeliveryState {
            recipients: vec![
                RecipientState::pending(),
                RecipientState {
                    status: Status::Delivered,
                    attempts: 3,
                    next_attempt: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                    last_result: "250 2.0.0 ok: queued as 12345".into(),
                    warned: false,
                },
                RecipientState {
                    status: Status::Failed,
                    attempts: u32::MAX,
                    next_attempt: Some(UNIX_EPOCH),
                    last_result: "550 no\r\nend 2\n% %41 \0 \u{7f} ünïcødé 🦀 - ".into(),
                    warned: true,
                },
                RecipientState {
                    status: Status::Pending,
                    attempts: 1,
                    next_attempt: None,
                    last_result: "-".into(),
                    warned: true,
                },
            ],
        }
    }

    #[test]
    fn round_trips_odd_results() {
        let s = odd();
        let bytes = s.encode();
        assert_eq!(
            bytes.iter().filter(|&&b| b == b'\n').count(),
            s.recipients.len() + 2
        );
        assert_eq!(DeliveryState::decode(&bytes), Ok(s));
        let empty = DeliveryState { recipients: vec![] };
        assert_eq!(DeliveryState::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn rejects_every_cut_and_trailing_garbage() {
        let bytes = odd().encode();
        for cut in 0..bytes.len() {
            assert!(
                DeliveryState::decode(&bytes[..cut]).is_err(),
                "accepted a cut at {cut}"
            );
        }
        let mut more = bytes.clone();
        more.extend_from_slice(b"pending 0 - x\n");
        assert!(DeliveryState::decode(&more).is_err());
    }

    #[test]
    fn rejects_bad_lines() {
        for line in [
            "pending 0 - -",
            "pending 0 - - a b",
            "pending 0 - x",
            "waiting 0 - - x",
            "pending -1 - - x",
            "pending 01 - - x",
            "pending 4294967296 - - x",
            "pending 0 1.5 - x",
            "pending 0 - warn x",
            "pending 0 - Warned x",
            "pending 0 - - %4",
            "pending 0 - - %zz",
            "pending 0 - - %FF",
        ] {
            let file = format!("{VERSION_LINE}\n{line}\nend 1\n");
            assert!(
                DeliveryState::decode(file.as_bytes()).is_err(),
                "accepted {line:?}"
            );
        }
        assert!(DeliveryState::decode(b"nullq-state 3\nend 0\n").is_err());
        assert!(DeliveryState::decode(b"nullq-state 2\nend 1\n").is_err());
        assert!(DeliveryState::decode(b"nullq-state 1\npending 0 - - x\nend 1\n").is_err());
    }

    #[test]
    fn reads_version_1_and_turns_its_warned_prefix_into_the_flag() {
        let v1 = b"nullq-state 1\n\
                   pending 2 1700000000.000000005 [warned]%20451%20later\n\
                   failed 1 - 550%20no\n\
                   delivered 3 - [warned]x\n\
                   end 3\n";
        let s = DeliveryState::decode(v1).unwrap();
        let flags: Vec<bool> = s.recipients.iter().map(|r| r.warned).collect();
        assert_eq!(flags, [true, false, false]);
        assert_eq!(s.recipients[0].last_result, "451 later");
        assert_eq!(s.recipients[0].attempts, 2);
        assert_eq!(s.recipients[2].last_result, "[warned]x");
        // Written back as version 2, and read back the same.
        let v2 = s.encode();
        assert!(
            v2.starts_with(b"nullq-state 2\npending 2 1700000000.000000005 warned 451%20later\n")
        );
        assert_eq!(DeliveryState::decode(&v2), Ok(s));
    }

    #[test]
    fn any_pending() {
        assert!(odd().any_pending());
        assert!(!DeliveryState {
            recipients: odd().recipients[1..3].to_vec()
        }
        .any_pending());
        assert!(DeliveryState::all_pending(2).any_pending());
    }
}
