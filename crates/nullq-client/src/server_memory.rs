//! The client's memory of failed QMQP servers, shared by every client process on the host, so
//! that a dead server costs one message its timeout instead of costing every message its timeout.
//!
//! A server that failed (connection refused, connect or read timeout, answered `Z`, broke the
//! session) is remembered for a backoff that starts at `FIRST` seconds and doubles with each
//! further failure up to `MAX` (`control/qmqpbackoff`, default `30 600`); its first `K` ends it.
//! A `D` is the refusal of one message, not a failure of the server, and changes nothing.
//! The memory only **reorders**: [`order`] puts the remembered servers after the others and never
//! leaves one out, so every message is still offered to every server, and no message fails that
//! the plain `qmqpservers` order would have delivered. With `control/qmqpspread` set to `1`, each
//! host starts at its own place in the list ([`spread_start`], a hash of `me`), so a fleet spreads
//! over the servers; off by default, since qmail's order is the file's.
//!
//! # Where
//! One directory (`control/qmqpstate`, relative to the qmail home like `fallbackqueue`; default
//! [`DEFAULT_DIR`], `/var/lib/nullq/servers`), one small file per local user in it, named by the
//! user's numeric UID. Not under `/var/qmail/queue` (a null client has no queue of qmail's, and
//! qmail's tools own that tree) and not in `/run` (a tmpfs that needs a tmpfiles.d rule to exist
//! after a boot): `/var/lib` is where a program keeps state between runs, and the file is written
//! only when a server fails or comes back, not per message. A reader merges every user's file
//! (for each server, the newest observation wins), so a server root's cron found dead is tried
//! last by everyone's mutt too; but a writer writes back only its own observations (its own
//! file as read, and this run's results), never what it merged in from others.
//!
//! # Who may write what (the safety argument)
//! Every local user's client must be able to record, and a local user can plant anything the
//! directory lets them: so the directory is `1777 root` like `/tmp`, and:
//! - **one file per user**: in a sticky directory nobody can rename over, or delete, another
//!   user's file, so one user cannot wipe (or freeze) what the others recorded. A single shared
//!   file cannot work there: the first writer would own it and every other user's `rename` over
//!   it would fail with `EPERM`; without the sticky bit anyone could also delete anyone's file;
//! - **the directory is checked first** ([`Store::open`]): opened with `O_NOFOLLOW`, it must be a
//!   directory owned by root or by the user running the client, and if group or others may write
//!   it, it must be sticky. Anything else (a symlink, a user's own directory that root's client
//!   would then trust, `0777` without the sticky bit) and the memory is off for this run: plain
//!   order, as before this module existed;
//! - **reading never follows a name** (`nullq_fs::open_planted`: `O_NOFOLLOW|O_NONBLOCK`, so a
//!   symlink is refused and a FIFO neither blocks nor is read); a file counts only if it is
//!   regular, has one link, and is owned by the UID it is named after (a user may plant
//!   `0`, never make root believe it); at most [`MAX_FILE`] bytes of it are read;
//! - **writing never opens an existing name**: a temporary, `tmp.UID.PID.RANDOM` (a name in
//!   the way, which anyone may plant, costs one more try with a fresh name), is created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` (`nullq_fs::create_in`, mode 0644 set on the descriptor), filled,
//!   closed (checked), then renamed over the user's own file. `rename` replaces a *name*: a
//!   symlink or FIFO planted there is replaced, its target never touched. A name another user
//!   planted under our UID in the sticky directory cannot be replaced: that user's recording is
//!   then off (plain order for what only they saw), and `qmail-showctl` says so;
//! - **the contents are untrusted**: anyone may write their own file with any servers in it. The
//!   worst it can do is reorder (never remove) servers for others, which is the point of the
//!   memory, so a lie costs delay, never mail. A time in the future beyond one `MAX` is cut down
//!   to it, so no planted line keeps a server last for longer than a real failure would; a
//!   record "seen" in the future counts as seen now, and at most [`MAX_RECORDS`] records of a
//!   file are read. Since each user's file holds only that user's own observations, what one
//!   user plants never reaches another user's file: it lasts only as long as the planter's own
//!   file says it.
//!
//! Concurrent clients of one user race on that user's file: each reads, updates and renames its
//! own temporary into place, so the last writer wins and an observation may be lost, but no file
//! is ever half-written. No `fsync`: the memory is advisory, a crash that loses it (or leaves an
//! empty file after a power cut) costs at most one more timeout per server, and this file is
//! written on the path of a message whose latency it exists to save.
//!
//! # The file format
//! Text, one record a line, fields separated by one space:
//!
//! ```text
//! nullq-servers 1
//! 10.0.0.25:628 3 1796000240 1796000000
//! [2001:db8::25]:628 0 0 1796000100
//! ```
//!
//! The first line is the version; a file whose first line is not `nullq-servers 1` is ignored
//! whole (a later format). Each other line is `SERVER FAILURES UNTIL SEEN`: the server as
//! `qmqpservers` spells it canonically (`ServerAddr`'s `Display`), the number of failures in a row
//! (0: its last attempt was a `K`), the Unix time until which it is tried last, and the Unix time
//! of that observation. A line that does not read so is skipped, alone. Records not renewed for a
//! day are dropped when the file is next written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::control::{Link, ServerAddr};

/// The directory of the memory when `control/qmqpstate` does not name one.
pub const DEFAULT_DIR: &str = "/var/lib/nullq/servers";
/// The first line of every file of this format.
pub const VERSION_LINE: &str = "nullq-servers 1";
/// The backoff after a first failure, seconds (`control/qmqpbackoff`'s first number).
pub const DEFAULT_FIRST: u64 = 30;
/// The longest backoff, seconds (`control/qmqpbackoff`'s second number).
pub const DEFAULT_MAX: u64 = 600;
/// The most of one file that is read.
pub const MAX_FILE: u64 = 64 * 1024;
/// The most user files one client reads (its own first); only files that pass the checks
/// (regular, one link, owned by the UID they are named after) count.
pub const MAX_FILES: usize = 64;
/// The most directory entries one client looks at, whatever they are, so that names planted
/// by the thousand cost a bounded scan (`qmail-showctl` says when it was reached).
pub const MAX_SCAN: usize = 4096;
/// The most records one file keeps (the most recently seen).
pub const MAX_RECORDS: usize = 256;
/// Records not renewed for this long are dropped when the file is written.
pub const FORGET_AFTER: u64 = 24 * 3600;

/// What is known of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Failures in a row; 0 after a `K`.
    pub failures: u32,
    /// Unix time until which the server is tried after the others.
    pub until: u64,
    /// Unix time of the observation (the newest wins when files are merged).
    pub seen: u64,
}

impl Record {
    /// Whether the server is to be tried after the others at `now`.
    pub fn remembered(&self, now: u64) -> bool {
        self.failures > 0 && self.until > now
    }
}

/// The backoff: `first` seconds after one failure, doubling with each further one, at most
/// `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Seconds after the first failure.
    pub first: u64,
    /// The longest backoff, seconds.
    pub max: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: DEFAULT_FIRST,
            max: DEFAULT_MAX,
        }
    }
}

impl Backoff {
    /// The backoff after `failures` failures in a row (at least 1).
    pub fn after(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        self.first.saturating_mul(1u64 << doublings).min(self.max)
    }
}

/// The memory: a record per server, by its canonical spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    records: BTreeMap<String, Record>,
}

impl Memory {
    /// Read one file's text. Garbage is skipped line by line; a first line that is not
    /// [`VERSION_LINE`] gives an empty memory. At most [`MAX_RECORDS`] records are taken.
    /// Times more than `max` seconds past `now` are cut to `now + max`; a record seen more than
    /// `max` in the future is skipped, one seen less far ahead counts as seen `now` (so no
    /// planted record stays "newest" past the present, or outranks what is seen later).
    pub fn parse(text: &[u8], now: u64, max: u64) -> Memory {
        let mut memory = Memory::default();
        let mut lines = text.split(|&b| b == b'\n');
        if lines.next() != Some(VERSION_LINE.as_bytes()) {
            return memory;
        }
        let mut taken = 0;
        for line in lines {
            if taken == MAX_RECORDS {
                break;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let Some((server, record)) = parse_record(line) else {
                continue;
            };
            // A clock a little off between users is fine; a record from the far future is not.
            if record.seen > now.saturating_add(max) {
                continue;
            }
            let record = Record {
                failures: record.failures,
                until: record.until.min(now.saturating_add(max)),
                seen: record.seen.min(now),
            };
            taken += 1;
            memory.merge_one(server, record);
        }
        memory
    }

    /// The file's text (see the module docs), the most recently seen [`MAX_RECORDS`] records.
    pub fn render(&self) -> String {
        let mut newest: Vec<(&String, &Record)> = self.records.iter().collect();
        newest.sort_by(|a, b| b.1.seen.cmp(&a.1.seen).then(a.0.cmp(b.0)));
        newest.truncate(MAX_RECORDS);
        newest.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = format!("{VERSION_LINE}\n");
        for (server, r) in newest {
            let _ = writeln!(out, "{server} {} {} {}", r.failures, r.until, r.seen);
        }
        out
    }

    /// Take in another file's records: for each server the newest observation wins.
    pub fn merge(&mut self, other: Memory) {
        for (server, record) in other.records {
            self.merge_one(server, record);
        }
    }

    fn merge_one(&mut self, server: String, record: Record) {
        match self.records.get(&server) {
            Some(old) if old.seen > record.seen => {}
            Some(old) if old.seen == record.seen && old.failures >= record.failures => {}
            _ => {
                self.records.insert(server, record);
            }
        }
    }

    /// What is known of `server` (its canonical spelling).
    pub fn get(&self, server: &str) -> Option<&Record> {
        self.records.get(server)
    }

    /// Every record, by server.
    pub fn records(&self) -> impl Iterator<Item = (&str, &Record)> {
        self.records.iter().map(|(s, r)| (s.as_str(), r))
    }

    /// Whether `server` is tried after the others at `now`.
    pub fn remembered(&self, server: &str, now: u64) -> bool {
        self.get(server).is_some_and(|r| r.remembered(now))
    }

    /// `server` failed at `now`: one more failure in a row, and the backoff that goes with it.
    pub fn failed(&mut self, server: &str, now: u64, backoff: Backoff) {
        let failures = self.get(server).map_or(0, |r| r.failures).saturating_add(1);
        let record = Record {
            failures,
            until: now.saturating_add(backoff.after(failures)),
            seen: now,
        };
        self.records.insert(server.to_owned(), record);
    }

    /// `server` answered `K` at `now`. Returns whether that changes what is remembered (a
    /// server with no failure on record costs no write).
    pub fn succeeded(&mut self, server: &str, now: u64) -> bool {
        if self.get(server).is_none_or(|r| r.failures == 0) {
            return false;
        }
        self.answered(server, now);
        true
    }

    /// Record that `server` answered `K` at `now`, whatever was known of it.
    pub fn answered(&mut self, server: &str, now: u64) {
        let record = Record {
            failures: 0,
            until: 0,
            seen: now,
        };
        self.records.insert(server.to_owned(), record);
    }

    /// Drop records not renewed for [`FORGET_AFTER`].
    pub fn forget_old(&mut self, now: u64) {
        self.records
            .retain(|_, r| r.seen.saturating_add(FORGET_AFTER) > now);
    }
}

/// One `SERVER FAILURES UNTIL SEEN` line.
fn parse_record(line: &str) -> Option<(String, Record)> {
    let mut fields = line.split(' ');
    let server = fields.next()?;
    let number = |f: Option<&str>| -> Option<u64> {
        let f = f?;
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok()
    };
    let failures = u32::try_from(number(fields.next())?).ok()?;
    let until = number(fields.next())?;
    let seen = number(fields.next())?;
    if fields.next().is_some() {
        return None;
    }
    // Only a server `qmqpservers` could name, in the spelling this client writes.
    let parsed = crate::control::parse_server(server).ok()?;
    if parsed.to_string() != server {
        return None;
    }
    Some((
        server.to_owned(),
        Record {
            failures,
            until,
            seen,
        },
    ))
}

/// The order in which to try `servers` (indices into it). Only the QMQP lines move, and only
/// among the places of QMQP lines: they are rotated to start at the `start`th of them
/// ([`spread_start`], 0 for qmail's order), then the ones the memory remembers at `now` are
/// moved after the others, each group in that order. An `smtp://` line (the last resort) stays
/// in its place in the list, so no failure, real or planted, makes it come earlier. Every
/// server is in it exactly once.
pub fn order(servers: &[ServerAddr], memory: &Memory, now: u64, start: usize) -> Vec<usize> {
    let is_qmqp = |i: usize| servers.get(i).is_some_and(|s| s.link == Link::Qmqp);
    let qmqp: Vec<usize> = (0..servers.len()).filter(|&i| is_qmqp(i)).collect();
    let q = qmqp.len();
    let rotated = (0..q).filter_map(|k| qmqp.get((k + start) % q).copied());
    let (fresh, remembered): (Vec<usize>, Vec<usize>) =
        rotated.partition(|&i| !memory.remembered(&servers[i].to_string(), now));
    let mut turn = fresh.into_iter().chain(remembered);
    (0..servers.len())
        .filter_map(|i| if is_qmqp(i) { turn.next() } else { Some(i) })
        .collect()
}

/// Where a host starts in a list of `n` servers when spreading is on: FNV-1a (64 bits) of `me`,
/// modulo `n`. The same on every run and every build, unlike `std`'s hasher.
pub fn spread_start(me: &[u8], n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in me {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// Unix time now, in seconds (0 for a clock before 1970, which no record outlives).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a [`Store`] is not used (the memory is then off for this run).
#[derive(Debug)]
pub enum Untrusted {
    /// The directory cannot be opened (missing, a symlink, not searchable).
    Unopenable(nullq_fs::Error),
    /// Owned by a user that is neither root nor the one running the client.
    Owner(u32),
    /// Group or others may write it and it is not sticky.
    NotSticky(u32),
    /// Not a directory.
    NotDirectory,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unopenable(e) => write!(f, "{e}"),
            Untrusted::Owner(uid) => write!(f, "owned by uid {uid}, not by root or this user"),
            Untrusted::NotSticky(mode) => write!(
                f,
                "mode {mode:04o}: writable by others without the sticky bit"
            ),
            Untrusted::NotDirectory => write!(f, "not a directory"),
        }
    }
}

/// What [`Store::load`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// This user's own file: the only records this user's client writes back.
    pub own: Memory,
    /// Every user's files merged: what orders the servers.
    pub all: Memory,
    /// Whether [`MAX_SCAN`] entries were looked at and more were left unread.
    pub scan_bound_hit: bool,
}

/// Go through the directory's entry names (`None`: an entry that could not be read) and hand
/// each other user's UID to `read`, which says whether that user's file counted. Stops at
/// [`MAX_FILES`] files counted (this user's own is the first) or [`MAX_SCAN`] entries looked
/// at; returns whether it stopped at the latter with entries left.
fn gather(
    names: impl Iterator<Item = Option<std::ffi::OsString>>,
    own: u32,
    mut read: impl FnMut(u32) -> Option<()>,
) -> bool {
    let mut counted = 1;
    for (scanned, name) in names.enumerate() {
        if counted >= MAX_FILES {
            return false;
        }
        if scanned == MAX_SCAN {
            return true;
        }
        let Some(uid) = name.as_deref().and_then(|n| n.to_str()).and_then(uid_name) else {
            continue;
        };
        if uid != own && read(uid).is_some() {
            counted += 1;
        }
    }
    false
}

/// The memory's directory, checked, for the user running the client.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    uid: u32,
}

impl Store {
    /// Check `dir` (see the module docs) for the user `uid`.
    pub fn open(dir: &Path, uid: u32) -> Result<Store, Untrusted> {
        let fd = nullq_fs::open_dir(dir).map_err(Untrusted::Unopenable)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            Untrusted::Unopenable(nullq_fs::Error {
                step: nullq_fs::Step::OpenDir,
                path: dir.to_owned(),
                source: e.into(),
            })
        })?;
        let mode = st.st_mode & 0o7777;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(Untrusted::NotDirectory);
        }
        if st.st_uid != 0 && st.st_uid != uid {
            return Err(Untrusted::Owner(st.st_uid));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(Untrusted::NotSticky(mode));
        }
        Ok(Store {
            dir: dir.to_owned(),
            uid,
        })
    }

    /// The file this user writes.
    pub fn own_file(&self) -> PathBuf {
        self.dir.join(self.uid.to_string())
    }

    /// This user's file, and every user's file merged (this user's first, then up to
    /// [`MAX_FILES`] in all, among the first [`MAX_SCAN`] entries); what cannot be read, or is
    /// not a regular file of the user it is named after, is left out and not counted.
    pub fn load(&self, now: u64, max: u64) -> Loaded {
        let own = read_user_file(&self.dir, self.uid, now, max).unwrap_or_default();
        let mut all = own.clone();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Loaded {
                own,
                all,
                scan_bound_hit: false,
            };
        };
        let names = entries.map(|e| e.ok().map(|e| e.file_name()));
        let scan_bound_hit = gather(names, self.uid, |uid| {
            let theirs = read_user_file(&self.dir, uid, now, max)?;
            all.merge(theirs);
            Some(())
        });
        Loaded {
            own,
            all,
            scan_bound_hit,
        }
    }

    /// Replace this user's file with `memory` (see the module docs for each step; no fsync).
    pub fn save(&self, memory: &Memory) -> io::Result<()> {
        self.save_with(memory, random)
    }

    /// [`Store::save`], the random part of the temporary's name from `random`: a name in the
    /// way (another user may plant any name) costs one more try with a fresh name.
    fn save_with(&self, memory: &Memory, mut random: impl FnMut() -> u64) -> io::Result<()> {
        let dirfd = nullq_fs::open_dir(&self.dir)?;
        let options = nullq_fs::Options {
            mode: 0o644,
            ..nullq_fs::Options::default()
        };
        let mut tries = 0;
        let (tmp, mut file) = loop {
            let tmp = temp_name(self.uid, std::process::id(), random());
            match nullq_fs::create_in(&dirfd, &self.dir, &tmp, &options) {
                Ok(file) => break (tmp, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries == 0 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let text = memory.render();
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| nullq_fs::close(file))
            // Replaces the name, whatever holds it (a planted symlink or FIFO included):
            // rename(2) never follows the name it replaces.
            .and_then(|()| std::fs::rename(self.dir.join(&tmp), self.own_file()));
        if written.is_err() {
            let _ = std::fs::remove_file(self.dir.join(&tmp));
        }
        written
    }
}

/// The name of a temporary: `tmp.UID.PID.RANDOM`, so that nobody can plant it in advance.
fn temp_name(uid: u32, pid: u32, random: u64) -> String {
    format!("tmp.{uid}.{pid}.{random:016x}")
}

/// A random number: a fresh `RandomState` is randomly keyed (as the server's retry jitter).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x006e_756c_6c71);
    h.finish()
}

/// The UID a file name stands for: digits only, no leading zero (`0` itself excepted).
fn uid_name(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if name.len() > 1 && name.starts_with('0') {
        return None;
    }
    name.parse().ok()
}

/// One user's file, if it is a regular file with one link owned by that user.
fn read_user_file(dir: &Path, uid: u32, now: u64, max: u64) -> Option<Memory> {
    let file = nullq_fs::open_planted(&dir.join(uid.to_string()), Some(uid)).ok()?;
    if file.metadata().ok()?.nlink() != 1 {
        return None;
    }
    let mut text = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut text).ok()?;
    Some(Memory::parse(&text, now, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::parse_server;

    fn servers(list: &[&str]) -> Vec<ServerAddr> {
        list.iter().map(|s| parse_server(s).unwrap()).collect()
    }

    const NOW: u64 = 1_796_000_000;

    #[test]
    fn the_backoff_doubles_from_first_to_max() {
        let b = Backoff::default();
        let got: Vec<u64> = (1..=7).map(|n| b.after(n)).collect();
        assert_eq!(got, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(b.after(u32::MAX), 600, "no overflow");
        assert_eq!(Backoff { first: 1, max: 1 }.after(5), 1);
    }

    #[test]
    fn a_file_reads_back_what_was_written() {
        let mut m = Memory::default();
        m.failed("10.0.0.25:628", NOW, Backoff::default());
        m.failed("10.0.0.25:628", NOW + 40, Backoff::default());
        m.failed("[2001:db8::25]:628", NOW, Backoff::default());
        let text = m.render();
        assert_eq!(
            text,
            "nullq-servers 1\n10.0.0.25:628 2 1796000100 1796000040\n[2001:db8::25]:628 1 1796000030 1796000000\n"
        );
        assert_eq!(Memory::parse(text.as_bytes(), NOW + 40, 600), m);
    }

    #[test]
    fn garbage_is_skipped_line_by_line() {
        let text = b"nullq-servers 1\n\
            10.0.0.25:628 2 1796000100 1796000040\n\
            \xff\xfe binary\n\
            10.0.0.26:628 two 1796000100 1796000040\n\
            10.0.0.27:628 1 1796000100\n\
            10.0.0.28:628 1 1796000100 1796000040 extra\n\
            10.0.0.29 1 1796000100 1796000040\n\
            not_a server 1 1 1\n\
            10.0.0.30:628 -1 1796000100 1796000040\n\
            10.0.0.31:628 99999999999 1796000100 1796000040\n\
            \n\
            host.example.net:628 1 1796000100 1796000040";
        let m = Memory::parse(text, NOW, 600);
        let names: Vec<&str> = m.records().map(|(s, _)| s).collect();
        // `10.0.0.29` is not the canonical spelling (no port) that this client writes.
        assert_eq!(names, ["10.0.0.25:628", "host.example.net:628"]);
    }

    #[test]
    fn another_version_is_ignored_whole() {
        for first in [
            "nullq-servers 2",
            "",
            "10.0.0.25:628 2 1796000100 1796000040",
        ] {
            let text = format!("{first}\n10.0.0.25:628 2 1796000100 1796000040\n");
            assert_eq!(Memory::parse(text.as_bytes(), NOW, 600), Memory::default());
        }
    }

    #[test]
    fn times_from_the_far_future_are_cut_or_dropped() {
        let text = b"nullq-servers 1\n10.0.0.25:628 1 99999999999 1796000000\n10.0.0.26:628 1 99999999999 99999999999\n";
        let m = Memory::parse(text, NOW, 600);
        assert_eq!(m.get("10.0.0.25:628").map(|r| r.until), Some(NOW + 600));
        assert_eq!(m.get("10.0.0.26:628"), None);
    }

    #[test]
    fn a_record_seen_in_the_near_future_counts_as_seen_now() {
        let text = b"nullq-servers 1\n10.0.0.25:628 1 1796000900 1796000500\n";
        let m = Memory::parse(text, NOW, 600);
        assert_eq!(
            m.get("10.0.0.25:628"),
            Some(&Record {
                failures: 1,
                until: NOW + 600,
                seen: NOW
            })
        );
        // So what this user sees a second later is the newer observation.
        let mut mine = Memory::default();
        assert!(!mine.succeeded("10.0.0.25:628", NOW + 1));
        mine.answered("10.0.0.25:628", NOW + 1);
        let mut merged = m.clone();
        merged.merge(mine);
        assert_eq!(merged.get("10.0.0.25:628").map(|r| r.failures), Some(0));
    }

    #[test]
    fn at_most_max_records_are_read_from_one_file() {
        let mut text = format!("{VERSION_LINE}\n");
        for i in 0..1000u32 {
            let _ = writeln!(
                text,
                "10.{}.{}.1:628 1 {} {NOW}",
                i / 256,
                i % 256,
                NOW + 30
            );
        }
        let m = Memory::parse(text.as_bytes(), NOW, 600);
        assert_eq!(m.records().count(), MAX_RECORDS);
        assert!(m.get("10.0.255.1:628").is_some(), "the first ones");
        assert!(m.get("10.1.0.1:628").is_none());
    }

    #[test]
    fn merging_keeps_the_newest_observation() {
        let mut root = Memory::default();
        root.failed("10.0.0.25:628", NOW, Backoff::default());
        let mut user = Memory::default();
        user.failed("10.0.0.25:628", NOW - 100, Backoff::default());
        user.failed("10.0.0.26:628", NOW, Backoff::default());
        assert!(user.succeeded("10.0.0.26:628", NOW + 1));
        let mut merged = root.clone();
        merged.merge(user.clone());
        assert_eq!(merged.get("10.0.0.25:628"), root.get("10.0.0.25:628"));
        assert_eq!(merged.get("10.0.0.26:628").map(|r| r.failures), Some(0));
        // And the other way round, the same.
        user.merge(root);
        assert_eq!(user, merged);
    }

    #[test]
    fn success_ends_the_backoff_and_costs_no_write_otherwise() {
        let mut m = Memory::default();
        assert!(!m.succeeded("10.0.0.25:628", NOW), "nothing to forget");
        m.failed("10.0.0.25:628", NOW, Backoff::default());
        assert!(m.remembered("10.0.0.25:628", NOW + 29));
        assert!(!m.remembered("10.0.0.25:628", NOW + 30));
        assert!(m.succeeded("10.0.0.25:628", NOW + 5));
        assert!(!m.remembered("10.0.0.25:628", NOW + 6));
        assert!(!m.succeeded("10.0.0.25:628", NOW + 7));
        m.failed("10.0.0.25:628", NOW + 8, Backoff::default());
        assert_eq!(
            m.get("10.0.0.25:628").map(|r| r.failures),
            Some(1),
            "counted afresh"
        );
    }

    #[test]
    fn old_records_are_forgotten() {
        let mut m = Memory::default();
        m.failed("10.0.0.25:628", NOW, Backoff::default());
        m.failed("10.0.0.26:628", NOW + FORGET_AFTER, Backoff::default());
        m.forget_old(NOW + FORGET_AFTER);
        let names: Vec<&str> = m.records().map(|(s, _)| s).collect();
        assert_eq!(names, ["10.0.0.26:628"]);
    }

    #[test]
    fn the_order_puts_remembered_servers_last_and_keeps_every_server() {
        let list = servers(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        let mut m = Memory::default();
        assert_eq!(order(&list, &m, NOW, 0), [0, 1, 2, 3], "qmail's order");
        m.failed("10.0.0.1:628", NOW, Backoff::default());
        m.failed("10.0.0.3:628", NOW, Backoff::default());
        assert_eq!(order(&list, &m, NOW, 0), [1, 3, 0, 2]);
        assert_eq!(order(&list, &m, NOW + 30, 0), [0, 1, 2, 3], "backoff over");
        for s in ["10.0.0.2:628", "10.0.0.4:628"] {
            m.failed(s, NOW, Backoff::default());
        }
        assert_eq!(
            order(&list, &m, NOW, 0),
            [0, 1, 2, 3],
            "every server remembered: all still tried, in order"
        );
        assert!(order(&[], &m, NOW, 0).is_empty());
    }

    #[test]
    fn an_smtp_line_stays_in_its_place_and_qmqp_lines_move_around_it() {
        let list = servers(&[
            "10.0.0.1",
            "10.0.0.2",
            "smtp://10.0.0.9",
            "10.0.0.3",
            "smtp://10.0.0.8",
        ]);
        let mut m = Memory::default();
        assert_eq!(order(&list, &m, NOW, 0), [0, 1, 2, 3, 4]);
        m.failed("10.0.0.1:628", NOW, Backoff::default());
        assert_eq!(order(&list, &m, NOW, 0), [1, 3, 2, 0, 4]);
        // Every QMQP line remembered (a user who marks them all dead): the smtp:// lines are
        // still tried only where the file puts them.
        for s in ["10.0.0.2:628", "10.0.0.3:628"] {
            m.failed(s, NOW, Backoff::default());
        }
        assert_eq!(order(&list, &m, NOW, 0), [0, 1, 2, 3, 4]);
        let last = servers(&["10.0.0.1", "10.0.0.2", "smtp://10.0.0.9"]);
        assert_eq!(
            order(&last, &m, NOW, 0),
            [0, 1, 2],
            "the last resort stays last"
        );
        // A remembered smtp:// line moves nothing either.
        m.failed("smtp://10.0.0.9:25", NOW, Backoff::default());
        assert_eq!(order(&last, &Memory::default(), NOW, 0), [0, 1, 2]);
        // Spreading rotates the QMQP lines among their places.
        assert_eq!(order(&last, &Memory::default(), NOW, 1), [1, 0, 2]);
        assert_eq!(order(&list, &Memory::default(), NOW, 1), [1, 3, 2, 0, 4]);
        let only = servers(&["smtp://10.0.0.9"]);
        assert_eq!(order(&only, &m, NOW, 3), [0]);
    }

    #[test]
    fn spreading_rotates_the_list_before_the_memory_reorders_it() {
        let list = servers(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let mut m = Memory::default();
        assert_eq!(order(&list, &m, NOW, 1), [1, 2, 0]);
        m.failed("10.0.0.2:628", NOW, Backoff::default());
        assert_eq!(order(&list, &m, NOW, 1), [2, 0, 1]);
        assert_eq!(order(&list, &m, NOW, 4), [2, 0, 1], "start taken modulo n");
    }

    #[test]
    fn the_spread_start_is_a_stable_hash_of_me() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c: fixed, so a host keeps its place across
        // versions.
        assert_eq!(spread_start(b"a", 1 << 16), 0xec8c);
        assert_eq!(spread_start(b"host1.example.net", 0), 0);
        let starts: std::collections::BTreeSet<usize> = (0..64)
            .map(|i| spread_start(format!("host{i}.example.net").as_bytes(), 4))
            .collect();
        assert_eq!(starts.len(), 4, "a fleet uses every start");
    }

    #[test]
    fn only_files_that_count_use_up_the_budget_and_the_scan_is_bounded() {
        use std::ffi::OsString;
        let names =
            |range: std::ops::Range<u32>| range.map(|i| Some(OsString::from(i.to_string())));
        // 1000 plants (named 50000.., not counting) before two real files, and our own name.
        let plants = names(50_000..51_000);
        let list = plants.chain([
            Some(OsString::from("7")),
            None,
            Some("1000".into()),
            Some("1001".into()),
        ]);
        let mut read = Vec::new();
        let hit = gather(list, 7, |uid| {
            read.push(uid);
            (uid < 50_000).then_some(())
        });
        assert!(!hit);
        assert_eq!(
            read.len(),
            1002,
            "every plant looked at, our own file not again"
        );
        assert_eq!(&read[1000..], [1000, 1001]);
        // Real files: at most MAX_FILES in all, ours included.
        let mut count = 0;
        assert!(!gather(names(1..1000), 0, |_| {
            count += 1;
            Some(())
        }));
        assert_eq!(count, MAX_FILES - 1);
        // Entries beyond MAX_SCAN are not looked at, and that is said.
        let mut count = 0;
        assert!(gather(names(50_000..60_000), 0, |_| {
            count += 1;
            None
        }));
        assert_eq!(count, MAX_SCAN);
        let exactly = (0..MAX_SCAN).map(|_| Some(OsString::from("x")));
        assert!(!gather(exactly, 0, |_| None), "no entry left unread");
    }

    #[test]
    fn a_planted_temporary_name_costs_one_more_try_not_the_save() {
        let me = rustix::process::geteuid().as_raw();
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), me).unwrap();
        let mut m = Memory::default();
        m.failed("10.0.0.25:628", NOW, Backoff::default());
        let pid = std::process::id();
        // The old name, `tmp.UID.PID`, could be planted by anyone who guessed the PID.
        assert_ne!(temp_name(me, pid, 1), format!("tmp.{me}.{pid}"));
        assert_ne!(random(), random(), "fresh each time");
        // A symlink (anyone's) in the way of the first name: refused, then a second name.
        let planted = |n: u64| {
            std::os::unix::fs::symlink("/nonexistent", d.path().join(temp_name(me, pid, n)))
                .unwrap();
        };
        planted(1);
        let mut names = [1, 2].into_iter();
        store
            .save_with(&m, || names.next().unwrap_or(0))
            .expect("saved at the second try");
        assert_eq!(store.load(NOW, 600).own, m);
        // Two names in the way: it gives up (the memory is advisory).
        planted(3);
        planted(4);
        let mut names = [3, 4, 5].into_iter();
        assert!(store.save_with(&m, || names.next().unwrap_or(0)).is_err());
    }

    #[test]
    fn uid_names() {
        assert_eq!(uid_name("0"), Some(0));
        assert_eq!(uid_name("1000"), Some(1000));
        for bad in ["", "01000", "tmp.0.12", "1000.tmp", "99999999999", "+1"] {
            assert_eq!(uid_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_store_is_used_only_in_a_directory_others_cannot_rig() {
        use std::os::unix::fs::PermissionsExt;
        let me = rustix::process::geteuid().as_raw();
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("servers");
        std::fs::create_dir(&dir).unwrap();
        for (mode, ok) in [
            (0o755, true),
            (0o1777, true),
            (0o777, false),
            (0o775, false),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(Store::open(&dir, me).is_ok(), ok, "{mode:o}");
        }
        std::os::unix::fs::symlink(&dir, d.path().join("link")).unwrap();
        assert!(matches!(
            Store::open(&d.path().join("link"), me),
            Err(Untrusted::Unopenable(_))
        ));
        assert!(Store::open(&d.path().join("none"), me).is_err());
    }

    #[test]
    fn a_store_writes_its_own_file_and_reads_everyone_s() {
        let me = rustix::process::geteuid().as_raw();
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), me).unwrap();
        let mut m = Memory::default();
        m.failed("10.0.0.25:628", NOW, Backoff::default());
        store.save(&m).unwrap();
        assert_eq!(store.load(NOW, 600).all, m);
        // A file named after another UID but owned by us is a plant: left out.
        let other = if me == 0 { 1 } else { 0 };
        std::fs::write(
            d.path().join(other.to_string()),
            "nullq-servers 1\n10.0.0.26:628 1 1796000030 1796000000\n",
        )
        .unwrap();
        std::fs::write(d.path().join("notes"), "garbage").unwrap();
        assert_eq!(store.load(NOW, 600).all, m);
        // Only our file and the plants are there: no temporary left behind.
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = vec![me.to_string(), other.to_string(), "notes".to_owned()];
        want.sort();
        assert_eq!(names, want);
    }
}
