//! Queue ids: `{micros:016x}.{pid:08x}.{seq:08x}`, e.g. `00061a8f3c2b7d10.00003039.00000007`.
//!
//! - `micros`: wall-clock microseconds since the epoch when the id was made, never smaller than
//!   the previous id's in this process (a clock stepped back does not reorder the queue);
//! - `pid`: this process, so two processes never make the same id in the same microsecond;
//! - `seq`: a per-process counter, so two spools or threads in one process never do either.
//!
//! Fixed-width lowercase hex makes the string order the numeric order, so ids sort by arrival,
//! and the name is safe as a file name. Not an inode number: a queue restored from a backup keeps
//! its names. `O_EXCL` and `RENAME_NOREPLACE` still guard against the impossible collision.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The name of one queued message: unique on this host, sorting by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    // Field order is the sort order.
    micros: u64,
    pid: u32,
    seq: u32,
}

struct Generator {
    last_micros: u64,
    seq: u32,
}

static GENERATOR: Mutex<Generator> = Mutex::new(Generator {
    last_micros: 0,
    seq: 0,
});

impl QueueId {
    /// A fresh id, later than every id this process made before.
    pub(crate) fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        // The lock is only held for arithmetic; a panic cannot leave it inconsistent.
        let mut g = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
        g.last_micros = g.last_micros.max(now);
        g.seq = g.seq.wrapping_add(1);
        QueueId {
            micros: g.last_micros,
            pid: nullq_fs::host::process_id(),
            seq: g.seq,
        }
    }

    /// The process that made the id. Only a name: whether a `tmp/` file's writer still runs is
    /// told by the file's lock (recovery never looks at this pid, which may be another
    /// process's after a reboot or in another pid namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the id was made (to the microsecond).
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.micros)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{:08x}.{:08x}", self.micros, self.pid, self.seq)
    }
}

/// The text was not a queue id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQueueId;

impl fmt::Display for BadQueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a queue id (want 16.8.8 lowercase hex digits, e.g. 00061a8f3c2b7d10.00003039.00000007)")
    }
}

impl std::error::Error for BadQueueId {}

impl FromStr for QueueId {
    type Err = BadQueueId;

    /// Accepts exactly the form [`Display`](fmt::Display) writes, so a parsed id can be joined to
    /// a directory path without escaping it (no `/`, no `..`, no sign, no upper case).
    fn from_str(s: &str) -> Result<QueueId, BadQueueId> {
        fn hex(part: &str, width: usize) -> Result<u64, BadQueueId> {
            let ok =
                part.len() == width && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err(BadQueueId);
            }
            u64::from_str_radix(part, 16).map_err(|_| BadQueueId)
        }
        let mut parts = s.split('.');
        let (Some(m), Some(p), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadQueueId);
        };
        let micros = hex(m, 16)?;
        let pid = u32::try_from(hex(p, 8)?).map_err(|_| BadQueueId)?;
        let seq = u32::try_from(hex(q, 8)?).map_err(|_| BadQueueId)?;
        Ok(QueueId { micros, pid, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parses_back_and_has_fixed_width() {
        let id = QueueId::generate();
        let s = id.to_string();
        assert_eq!(s.len(), 16 + 1 + 8 + 1 + 8);
        assert_eq!(s.parse::<QueueId>(), Ok(id));
    }

    #[test]
    fn generated_ids_increase_in_both_orders() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
            assert!(w[0].to_string() < w[1].to_string());
        }
    }

    #[test]
    fn rejects_everything_else() {
        let good = "00061a8f3c2b7d10.00003039.00000007";
        assert!(good.parse::<QueueId>().is_ok());
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "x/../y",
            "/etc/passwd",
            "00061a8f3c2b7d10.00003039",
            "00061a8f3c2b7d10.00003039.00000007.",
            "00061a8f3c2b7d10.00003039.00000007.x",
            "00061A8F3C2B7D10.00003039.00000007",
            "00061a8f3c2b7d1.000030390.00000007",
            "+0061a8f3c2b7d10.00003039.00000007",
            "00061a8f3c2b7d10.00003039.0000000g",
            "00061a8f3c2b7d10/00003039.00000007",
            " 00061a8f3c2b7d10.00003039.00000007",
            "00061a8f3c2b7d10.00003039.00000007\n",
            "00061a8f3c2b7d10..00003039.0000007",
            "0006１a8f3c2b7d1.00003039.00000007",
        ] {
            assert_eq!(
                bad.parse::<QueueId>(),
                Err(BadQueueId),
                "{bad:?} was accepted"
            );
        }
    }
}
