//! One run of the client and the memory of failed servers ([`crate::server_memory`]): the
//! settings read from the control files (`qmqpstate`, `qmqpbackoff`, `qmqpspread`), and the
//! session that orders the servers by every user's records and writes back only this user's.

use std::io;
use std::path::PathBuf;

use crate::control::{ControlDir, ServerAddr};
use crate::server_memory::{spread_start, Backoff, Memory, Store, DEFAULT_DIR};

/// How the memory is configured: read once per run with the other control files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The directory of the files; `None` when the memory is off (`qmqpbackoff` is `0`).
    pub dir: Option<PathBuf>,
    /// The backoff.
    pub backoff: Backoff,
    /// Where the list starts: 0, or [`spread_start`] of `me` with `qmqpspread`.
    pub start: usize,
}

/// Why a memory control file could not be used (the client's exit 55, as for the timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The control file.
    pub name: &'static str,
    /// What it holds.
    pub value: String,
    /// What it should hold.
    pub expected: &'static str,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "control/{}: not {}: {}",
            self.name, self.expected, self.value
        )
    }
}

impl Settings {
    /// Read `qmqpstate`, `qmqpbackoff` and `qmqpspread` (with `me`) under `control`, for a list
    /// of `servers` QMQP lines (the `smtp://` lines are not rotated). A file that cannot be read is an `io::Error`, one that holds
    /// garbage a [`SettingError`].
    pub fn load(
        control: &ControlDir,
        servers: usize,
    ) -> io::Result<Result<Settings, SettingError>> {
        let backoff = match control.line("qmqpbackoff")? {
            None => Some(Backoff::default()),
            Some(value) => match parse_backoff(&value) {
                Some(b) => b,
                None => {
                    return Ok(Err(SettingError {
                        name: "qmqpbackoff",
                        value,
                        expected: "`0` or `FIRST MAX` in seconds (FIRST <= MAX)",
                    }))
                }
            },
        };
        let spread = match control.line("qmqpspread")?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(value) => {
                return Ok(Err(SettingError {
                    name: "qmqpspread",
                    value: value.to_owned(),
                    expected: "0 or 1",
                }))
            }
        };
        let start = if spread {
            // `me` as qmail-inject reads it; without one there is nothing host-specific.
            control
                .me()?
                .map_or(0, |(me, _)| spread_start(&me, servers))
        } else {
            0
        };
        let dir = match (backoff, control.line("qmqpstate")?) {
            (None, _) => None,
            (Some(_), Some(dir)) => Some(control.home().join(dir)),
            (Some(_), None) => Some(PathBuf::from(DEFAULT_DIR)),
        };
        Ok(Ok(Settings {
            dir,
            backoff: backoff.unwrap_or_default(),
            start,
        }))
    }

    /// The memory off: qmail's order, nothing read or written.
    pub fn off() -> Settings {
        Settings {
            dir: None,
            backoff: Backoff::default(),
            start: 0,
        }
    }
}

/// `0` (off) or `FIRST MAX`, seconds, 0 < FIRST <= MAX.
fn parse_backoff(value: &str) -> Option<Option<Backoff>> {
    if value == "0" {
        return Some(None);
    }
    let mut words = value.split_ascii_whitespace();
    let first: u64 = words.next()?.parse().ok()?;
    let max: u64 = words.next()?.parse().ok()?;
    if words.next().is_some() || first == 0 || first > max {
        return None;
    }
    Some(Some(Backoff { first, max }))
}

/// The memory as one run of the client sees and updates it.
#[derive(Debug, Default)]
pub struct Session {
    store: Option<Store>,
    /// What is remembered by every user (empty when the memory is off): orders the servers.
    pub memory: Memory,
    /// This user's own observations: its file as read, and this run's results. Only these
    /// are written back, never what was merged in from other users' files.
    own: Memory,
    backoff: Backoff,
    changed: bool,
}

impl Session {
    /// Open and read the memory of `settings` for this user; off (empty, nothing saved) when
    /// there is no usable directory.
    pub fn start(settings: &Settings, now: u64) -> Session {
        let uid = rustix::process::geteuid().as_raw();
        let store = settings
            .dir
            .as_deref()
            .and_then(|dir| Store::open(dir, uid).ok());
        let loaded = store
            .as_ref()
            .map(|s| s.load(now, settings.backoff.max))
            .unwrap_or_default();
        Session {
            store,
            memory: loaded.all,
            own: loaded.own,
            backoff: settings.backoff,
            changed: false,
        }
    }

    /// Record a failure of `server` at `now`.
    pub fn failed(&mut self, server: &ServerAddr, now: u64) {
        if self.store.is_some() {
            // Counted from this user's own record: another user's count is theirs to keep.
            self.own.failed(&server.to_string(), now, self.backoff);
            self.changed = true;
        }
    }

    /// Record a `K` from `server` at `now`: written when this user had it failing, or when
    /// another user's file did (this user's `K` is its own observation, and the newer one).
    pub fn succeeded(&mut self, server: &ServerAddr, now: u64) {
        if self.store.is_none() {
            return;
        }
        let name = server.to_string();
        let others = self.memory.get(&name).is_some_and(|r| r.failures > 0);
        if self.own.succeeded(&name, now) {
            self.changed = true;
        } else if others {
            self.own.answered(&name, now);
            self.changed = true;
        }
    }

    /// Write this user's file if anything changed. Failing to is not an error of the message:
    /// the memory is advisory.
    pub fn finish(mut self, now: u64) {
        if let (Some(store), true) = (&self.store, self.changed) {
            self.own.forget_old(now);
            let _ = store.save(&self.own);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_control_file() {
        assert_eq!(parse_backoff("0"), Some(None));
        assert_eq!(
            parse_backoff("30 600"),
            Some(Some(Backoff {
                first: 30,
                max: 600
            }))
        );
        assert_eq!(
            parse_backoff("1\t1"),
            Some(Some(Backoff { first: 1, max: 1 }))
        );
        for bad in ["30", "600 30", "0 10", "x y", "1 2 3", "-1 5"] {
            assert_eq!(parse_backoff(bad), None, "{bad}");
        }
    }
}
