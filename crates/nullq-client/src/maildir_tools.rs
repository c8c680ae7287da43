//! The maildir tools of mini-qmail: `maildirmake`, `maildir2mbox`, `maildirwatch` (maildir(5)).
//!
//! This module owns reading and converting a user's maildir on the client host; nothing here
//! touches the network. Behaviour follows qmail's maildirmake.c, maildir2mbox.c and maildir.c
//! (maildirwatch.c from qmail 1.03, which notqmail later dropped): the same environment
//! (`$MAILDIR`, `$MAIL`, `$MAILTMP`), messages in order of arrival (mtime), the same mbox `From_`
//! line and `>From ` quoting, the mbox replaced by rename only after an fsync, and messages
//! removed from the maildir only after that.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::calendar;
use crate::errstr::Qmail;

const EXIT_PERM: i32 = 100;
const EXIT_TEMP: i32 = 111;

/// Files in `tmp/` untouched for this long are leftovers of a crashed delivery (maildir(5)).
const TMP_STALE_SECS: i64 = 129_600;
/// maildirwatch's refresh when `$MAILDIRWATCH_INTERVAL` is not set, as in qmail.
const WATCH_INTERVAL: u64 = 30;
/// Bounds on `$MAILDIRWATCH_INTERVAL`.
const WATCH_INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// maildirwatch shows this many bytes of subject and body.
const WATCH_TEXT: usize = 158;

/// `maildirmake DIR`: create DIR and DIR/tmp, DIR/new, DIR/cur, mode 700 whatever the umask
/// (qmail sets umask 077 first); fails if DIR exists.
pub fn maildirmake(args: &[OsString]) -> i32 {
    let Some(dir) = args.get(1) else {
        eprintln!("maildirmake: usage: maildirmake name");
        return EXIT_PERM;
    };
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    let show = Path::new(dir).display();
    if let Err(e) = builder.create(dir) {
        eprintln!("maildirmake: fatal: unable to mkdir {show}: {}", Qmail(&e));
        return EXIT_TEMP;
    }
    // From inside, as qmail does: `DIR/tmp` may be longer than a path may be.
    if let Err(e) = std::env::set_current_dir(dir) {
        eprintln!(
            "maildirmake: fatal: unable to chdir to {show}: {}",
            Qmail(&e)
        );
        return EXIT_TEMP;
    }
    for sub in ["tmp", "new", "cur"] {
        if let Err(e) = builder.create(sub) {
            eprintln!(
                "maildirmake: fatal: unable to mkdir {show}/{sub}: {}",
                Qmail(&e)
            );
            return EXIT_TEMP;
        }
    }
    0
}

/// One message found by a scan.
#[derive(Debug, Clone)]
struct Found {
    path: PathBuf,
    mtime: i64,
}

/// maildir.c's maildir_chdir: make `$MAILDIR` the working directory, so that its subdirectories,
/// and a relative `$MAIL` or `$MAILTMP`, are found from there as in qmail.
fn maildir_chdir() -> Result<(), String> {
    let dir = std::env::var_os("MAILDIR").ok_or("MAILDIR not set")?;
    std::env::set_current_dir(&dir).map_err(|e| {
        format!(
            "unable to chdir to {}: {}",
            Path::new(&dir).display(),
            Qmail(&e)
        )
    })
}

/// maildir.c's maildir_clean: remove stale files from tmp/.
fn clean_tmp() {
    let Ok(entries) = fs::read_dir("tmp") else {
        return;
    };
    let now = calendar::now();
    for entry in entries.flatten() {
        if dotfile(&entry.file_name()) {
            continue;
        }
        let path = Path::new("tmp").join(entry.file_name());
        if let Ok(meta) = fs::metadata(&path) {
            if now > meta.atime() + TMP_STALE_SECS {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Names starting with a dot are not messages (maildir(5)).
fn dotfile(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().first() == Some(&b'.')
}

/// maildir.c's maildir_scan, in the maildir: messages in new/ (and cur/), named `new/NAME`,
/// oldest first, skipping those of this very second ("don't want to mix up the order").
fn scan(subdirs: &[&str]) -> Result<Vec<Found>, String> {
    let now = calendar::now();
    let mut found = Vec::new();
    for sub in subdirs {
        let entries = fs::read_dir(sub)
            .map_err(|e| format!("unable to scan $MAILDIR/{sub}: {}", Qmail(&e)))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("unable to read $MAILDIR/{sub}: {}", Qmail(&e)))?;
            if dotfile(&entry.file_name()) {
                continue;
            }
            let path = Path::new(sub).join(entry.file_name());
            if let Ok(meta) = fs::metadata(&path) {
                if meta.mtime() < now {
                    found.push(Found {
                        path,
                        mtime: meta.mtime(),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    Ok(found)
}

/// `maildir2mbox`: move the messages of `$MAILDIR` into the mbox `$MAIL`, through `$MAILTMP`.
pub fn maildir2mbox(_args: &[OsString]) -> i32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    match convert() {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("maildir2mbox: fatal: {why}");
            EXIT_TEMP
        }
    }
}

fn convert() -> Result<(), String> {
    let mbox = PathBuf::from(std::env::var_os("MAIL").ok_or("MAIL not set")?);
    let mboxtmp = PathBuf::from(std::env::var_os("MAILTMP").ok_or("MAILTMP not set")?);
    maildir_chdir()?;
    clean_tmp();
    let messages = scan(&["new", "cur"])?;
    if messages.is_empty() {
        return Ok(()); // nothing new
    }
    let mshow = mbox.display();
    let tshow = mboxtmp.display();
    // Lock the mbox against mail readers (flock, as qmail's lock_ex) for the whole conversion.
    let lock = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&mbox)
        .map_err(|e| format!("unable to lock {mshow}: {}", Qmail(&e)))?;
    lock_exclusive(&lock).map_err(|e| format!("unable to lock {mshow}: {}", Qmail(&e)))?;
    let mut old =
        File::open(&mbox).map_err(|e| format!("unable to read {mshow}: {}", Qmail(&e)))?;
    let new = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&mboxtmp)
        .map_err(|e| format!("unable to create {tshow}: {}", Qmail(&e)))?;
    let mut out = BufWriter::new(new);
    let werr = |e: io::Error| format!("unable to write to {tshow}: {}", Qmail(&e));
    let rerr = |path: &Path, e: io::Error| {
        format!("unable to read $MAILDIR/{}: {}", path.display(), Qmail(&e))
    };
    copy(&mut old, &mut out).map_err(|e| match e {
        Failed::Read(e) => format!("unable to read {mshow}: {}", Qmail(&e)),
        Failed::Write(e) => werr(e),
    })?;
    for m in &messages {
        let file = File::open(&m.path).map_err(|e| rerr(&m.path, e))?;
        append_message(&mut BufReader::new(file), m.mtime, &mut out).map_err(|e| match e {
            Failed::Read(e) => rerr(&m.path, e),
            Failed::Write(e) => werr(e),
        })?;
    }
    let new = out.into_inner().map_err(|e| werr(e.into_error()))?;
    new.sync_all().map_err(werr)?;
    drop(new);
    fs::rename(&mboxtmp, &mbox)
        .map_err(|e| format!("unable to move {tshow} to {mshow}: {}", Qmail(&e)))?;
    for m in &messages {
        if let Err(e) = fs::remove_file(&m.path) {
            eprintln!(
                "maildir2mbox: warning: $MAILDIR/{} will be delivered twice; unable to unlink: {}",
                m.path.display(),
                Qmail(&e)
            );
        }
    }
    drop(lock);
    Ok(())
}

/// Which side of a copy failed: qmail names the file read or the file written.
#[derive(Debug)]
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// Copy all of `input` to `out`, telling a read error from a write error.
fn copy(input: &mut impl io::Read, out: &mut impl Write) -> Result<(), Failed> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failed::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Failed::Write)?;
    }
}

fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes an fd, which `file` keeps open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// qmail's gfrom: does the line, after any number of `>`, start with `From `?
pub fn needs_quoting(line: &[u8]) -> bool {
    let start = line.iter().take_while(|&&b| b == b'>').count();
    line[start..].starts_with(b"From ")
}

/// The mbox `From_` line of a message whose first line is `first`, delivered at `mtime`.
pub fn from_line(first: &[u8], mtime: i64) -> Vec<u8> {
    let mut out = b"From ".to_vec();
    match first
        .strip_prefix(b"Return-Path: <")
        .filter(|_| first.ends_with(b"\n"))
    {
        Some(rest) if rest.first() == Some(&b'>') => out.extend_from_slice(b"MAILER-DAEMON "),
        Some(_) => {
            // Everything between `<` and the last two bytes (`>\n`), blanks made dashes.
            let inner = first.get(14..first.len().saturating_sub(2)).unwrap_or(&[]);
            out.extend(
                inner
                    .iter()
                    .map(|&b| if b == b' ' || b == b'\t' { b'-' } else { b }),
            );
            out.push(b' ');
        }
        None => out.extend_from_slice(b"XXX "),
    }
    out.extend_from_slice(calendar::ctime_utc(mtime).as_bytes());
    out.push(b'\n');
    out
}

/// Append one message in mbox form: `From_` line, lines quoted with `>` where needed, a final
/// newline if the message lacked one, then the blank separator line.
///
/// qmail's maildir2mbox drops a last line that has no newline (the whole message, when its
/// first line has none); nullq keeps it and ends it with one (maildir2mbox(1)).
fn append_message(
    input: &mut impl BufRead,
    mtime: i64,
    out: &mut impl Write,
) -> Result<(), Failed> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line).map_err(Failed::Read)?;
    out.write_all(&from_line(&line, mtime))
        .map_err(Failed::Write)?;
    while !line.is_empty() {
        if needs_quoting(&line) {
            out.write_all(b">").map_err(Failed::Write)?;
        }
        out.write_all(&line).map_err(Failed::Write)?;
        if !line.ends_with(b"\n") {
            out.write_all(b"\n").map_err(Failed::Write)?;
            break;
        }
        line.clear();
        input.read_until(b'\n', &mut line).map_err(Failed::Read)?;
    }
    out.write_all(b"\n").map_err(Failed::Write)
}

/// `maildirwatch [-1]`: show a summary of the new messages in `$MAILDIR` (who from, to whom,
/// subject and the start of the body) on a VT100 screen, cleared before each round. qmail
/// refreshes every 30 seconds; `$MAILDIRWATCH_INTERVAL` sets other seconds (1 to 3600), and
/// `-1` shows one round and exits.
pub fn maildirwatch(args: &[OsString]) -> i32 {
    let once = args.iter().skip(1).any(|a| a == "-1");
    let interval = std::env::var("MAILDIRWATCH_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v.clamp(*WATCH_INTERVAL_RANGE.start(), *WATCH_INTERVAL_RANGE.end()))
        .unwrap_or(WATCH_INTERVAL);
    if let Err(why) = maildir_chdir() {
        eprintln!("maildirwatch: fatal: {why}");
        return EXIT_TEMP;
    }
    loop {
        clean_tmp();
        let messages = match scan(&["new"]) {
            Ok(messages) => messages,
            Err(why) => {
                eprintln!("maildirwatch: fatal: {why}");
                return EXIT_TEMP;
            }
        };
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let mut screen = b"\x1b[;H\x1b[;J".to_vec();
        for m in &messages {
            // A message that vanished meanwhile (read by a mail reader) is simply not shown.
            if let Ok(file) = File::open(&m.path) {
                if let Ok(summary) = summarize(&mut BufReader::new(file)) {
                    screen.extend_from_slice(&summary);
                }
            }
        }
        if out.write_all(&screen).and_then(|()| out.flush()).is_err() {
            return EXIT_TEMP; // the terminal went away
        }
        drop(out);
        if once {
            return 0;
        }
        std::thread::sleep(Duration::from_secs(interval));
    }
}

/// maildirwatch's lines for one message:
/// `FROM <return-path> TO <delivered-to>`, the From field in bold, then subject and body text.
pub fn summarize(input: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut sender = b"?".to_vec();
    let mut recipient = b"?".to_vec();
    let mut from = Vec::new();
    let mut text = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    let mut in_header = true;
    let mut add_text = |text: &mut Vec<u8>, s: &[u8]| {
        text.extend_from_slice(s);
        text.truncate(WATCH_TEXT);
    };
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if in_header {
            let continuation = n > 0 && (line[0] == b' ' || line[0] == b'\t');
            if continuation && !field.is_empty() {
                field.extend_from_slice(&line);
                continue;
            }
            if !field.is_empty() {
                header_field(
                    &field,
                    &mut sender,
                    &mut recipient,
                    &mut from,
                    &mut text,
                    &mut add_text,
                );
                field.clear();
            }
            if n == 0 {
                break;
            }
            if line == b"\n" || line == b"\r\n" {
                in_header = false;
                continue;
            }
            field.extend_from_slice(&line);
        } else {
            if n == 0 || text.len() >= WATCH_TEXT {
                break;
            }
            add_text(&mut text, &line);
        }
    }
    let mut out = b"FROM ".to_vec();
    out.extend(printable(&sender, b'?'));
    out.extend_from_slice(b" TO <");
    out.extend(printable(&recipient, b'?'));
    out.extend_from_slice(b">\n");
    if !from.is_empty() {
        out.extend_from_slice(b"\x1b[1m");
        out.extend(printable(&from, b'/'));
        out.extend_from_slice(b"\x1b[0m\n");
    }
    out.extend(printable(&text, b'/'));
    out.extend_from_slice(b"\n\n");
    Ok(out)
}

fn printable(s: &[u8], replacement: u8) -> impl Iterator<Item = u8> + '_ {
    s.iter().map(move |&b| {
        if (32..=126).contains(&b) {
            b
        } else {
            replacement
        }
    })
}

/// One complete header field (continuations included, final newline included).
fn header_field(
    field: &[u8],
    sender: &mut Vec<u8>,
    recipient: &mut Vec<u8>,
    from: &mut Vec<u8>,
    text: &mut Vec<u8>,
    add_text: &mut impl FnMut(&mut Vec<u8>, &[u8]),
) {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return;
    };
    let name = field[..colon].trim_ascii_end().to_ascii_lowercase();
    let mut value = &field[colon + 1..];
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    let without_newline = value.strip_suffix(b"\n").unwrap_or(value);
    match name.as_slice() {
        b"subject" => add_text(text, value),
        b"delivered-to" => *recipient = without_newline.to_vec(),
        b"return-path" => *sender = without_newline.to_vec(),
        b"from" => *from = field.strip_suffix(b"\n").unwrap_or(field).to_vec(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfrom() {
        assert!(needs_quoting(b"From bob\n"));
        assert!(needs_quoting(b">From bob\n"));
        assert!(needs_quoting(b">>>From \n"));
        assert!(!needs_quoting(b"From: bob\n"));
        assert!(!needs_quoting(b"from bob\n"));
        assert!(!needs_quoting(b">Fro"));
    }

    #[test]
    fn from_lines() {
        let t = 1_053_567_702;
        assert_eq!(
            from_line(b"Return-Path: <jason@example.net>\n", t),
            b"From jason@example.net Thu May 22 01:41:42 2003\n".to_vec()
        );
        assert_eq!(
            from_line(b"Return-Path: <>\n", t),
            b"From MAILER-DAEMON Thu May 22 01:41:42 2003\n".to_vec()
        );
        assert_eq!(
            from_line(b"Return-Path: <a b\tc>\n", t),
            b"From a-b-c Thu May 22 01:41:42 2003\n".to_vec()
        );
        assert_eq!(
            from_line(b"Subject: x\n", t),
            b"From XXX Thu May 22 01:41:42 2003\n".to_vec()
        );
        assert_eq!(
            from_line(b"Return-Path: <\n", t),
            b"From  Thu May 22 01:41:42 2003\n".to_vec()
        );
    }

    #[test]
    fn mbox_form_of_a_message() -> Result<(), Failed> {
        let mut out = Vec::new();
        append_message(
            &mut &b"Return-Path: <a@b>\nSubject: x\n\nFrom here\n>From there\nend"[..],
            0,
            &mut out,
        )?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "From a@b Thu Jan 01 00:00:00 1970\nReturn-Path: <a@b>\nSubject: x\n\n>From here\n>>From there\nend\n\n"
        );
        Ok(())
    }

    #[test]
    fn watch_summary() -> io::Result<()> {
        let msg = b"Return-Path: <jason@example.net>\nDelivered-To: bob@example.net\nFrom: Jason\n <jason@example.net>\nSubject: hello\n\tworld\n\nbody line\n";
        let s = summarize(&mut &msg[..])?;
        assert_eq!(
            String::from_utf8_lossy(&s),
            "FROM <jason@example.net> TO <bob@example.net>\n\x1b[1mFrom: Jason/ <jason@example.net>\x1b[0m\nhello/\tworld/body line/\n\n"
                .replace('\t', "/")
        );
        Ok(())
    }
}
