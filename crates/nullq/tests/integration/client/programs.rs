//! The small mini-qmail programs run as the real binary through their symlinks: predate,
//! datemail, mailsubj, forward, elq/pinq/qail, maildirmake, maildir2mbox, maildirwatch.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};

const LIMIT: Duration = Duration::from_secs(60);

fn out_of(host: &Host, name: &str, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut cmd = host.cmd(name);
    cmd.args(args);
    let out = run(cmd, input, LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn predate_prepends_a_local_date() {
    let host = Host::new();
    let mut cmd = host.cmd("predate");
    // POSIX TZ: three hours east of UTC, no tz database needed.
    cmd.env("TZ", "XYZ-3").arg("cat");
    let out = run(cmd, b"Subject: x\n\nbody\n", LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, rest) = text.split_once('\n').unwrap_or(("", ""));
    assert_eq!(rest, "Subject: x\n\nbody\n");
    let words: Vec<&str> = first.split(' ').collect();
    assert_eq!(words.len(), 6, "{first}");
    assert_eq!(words[0], "Date:");
    assert!(
        words[1].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d)),
        "{first}"
    );
    assert_eq!(words[2].len(), 3, "{first}");
    assert_eq!(words[4].len(), 8, "{first}");
    assert_eq!(words[5], "+0300", "{first}");
}

#[test]
fn predate_exit_codes() {
    let host = Host::new();
    let (code, _, err) = out_of(&host, "predate", &[], b"");
    assert_eq!(code, 100);
    assert_eq!(err, "predate: usage: predate child\n");
    let (code, _, _) = out_of(
        &host,
        "predate",
        &["sh", "-c", "cat >/dev/null; exit 7"],
        b"x\n",
    );
    assert_eq!(code, 7);
    let (code, _, err) = out_of(&host, "predate", &["/nonexistent/program"], b"x\n");
    assert_eq!(code, 111);
    assert!(
        err.starts_with("predate: fatal: unable to run /nonexistent/program"),
        "{err}"
    );
    let (code, _, err) = out_of(&host, "predate", &["sh", "-c", "kill -9 $$"], b"");
    assert_eq!(code, 111);
    assert!(err.contains("child crashed"), "{err}");
}

#[test]
fn datemail_is_predate_sendmail() {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    let (code, _, err) = out_of(
        &host,
        "datemail",
        &["-t"],
        b"To: bob\nSubject: dated\n\nbody\n",
    );
    assert_eq!(code, 0, "{err}");
    let got = server.received();
    assert_eq!(got[0].recipients, vec![b"bob@example.net".to_vec()]);
    let text = String::from_utf8_lossy(&got[0].message);
    assert!(
        text.contains("\nDate: ") || text.starts_with("Date: "),
        "{text}"
    );
    assert!(
        text.contains("+0000"),
        "predate's local date (TZ=UTC) is kept: {text}"
    );
}

#[test]
fn mailsubj_sends_with_subject_and_to() {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    let (code, _, err) = out_of(
        &host,
        "mailsubj",
        &["disk full", "bob", "eve@example.com"],
        b"/var is at 99%\n",
    );
    assert_eq!(code, 0, "{err}");
    let got = server.received();
    let mut recipients = got[0].recipients.clone();
    recipients.sort();
    assert_eq!(
        recipients,
        vec![b"bob@example.net".to_vec(), b"eve@example.com".to_vec()]
    );
    let text = String::from_utf8_lossy(&got[0].message);
    assert!(text.contains("Subject: disk full\n"), "{text}");
    assert!(text.ends_with("\n\n/var is at 99%\n"), "{text}");
    let (code, _, err) = out_of(&host, "mailsubj", &["only a subject"], b"");
    assert_eq!(code, 100);
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn forward_uses_newsender_and_dtline() {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    let mut cmd = host.cmd("forward");
    cmd.env("NEWSENDER", "list-bounce@example.org")
        .env("DTLINE", "Delivered-To: jason@example.net\n")
        .args(["bob@example.com", "eve"]);
    let out = run(cmd, b"Subject: fwd\n\nbody\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("forward: qp "));
    let got = server.received();
    assert_eq!(got[0].sender, b"list-bounce@example.org");
    // No rewriting: qmail-queue, not qmail-inject.
    assert_eq!(
        got[0].recipients,
        vec![b"bob@example.com".to_vec(), b"eve".to_vec()]
    );
    assert_eq!(
        got[0].message,
        b"Delivered-To: jason@example.net\nSubject: fwd\n\nbody\n"
    );

    let (code, _, err) = out_of(&host, "forward", &["bob"], b"x\n");
    assert_eq!(code, 100);
    assert_eq!(err, "forward: fatal: NEWSENDER not set\n");

    let d = QmqpServer::start(Answer::PermFail);
    host.servers(&[d.addr]);
    let mut cmd = host.cmd("forward");
    cmd.env("NEWSENDER", "a@b").arg("bob@example.com");
    assert_eq!(run(cmd, b"x\n", LIMIT).status.code(), Some(100));
}

/// A fake mail program in `dir` that records its arguments and QMAILINJECT.
fn fake_mua(dir: &Path, name: &str) {
    let script = dir.join(name);
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"{name} QMAILINJECT=$QMAILINJECT args=$*\" > \"$HOME/mua.out\"\n"
        ),
    )
    .expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn elq_pinq_qail_run_the_mua_with_qmailinject_f() {
    let host = Host::new();
    let fakes = host.dir.path().join("fakes");
    fs::create_dir(&fakes).expect("dir");
    fake_mua(&fakes, "elm");
    fake_mua(&fakes, "pine");
    fake_mua(&fakes, "mail"); // no `Mail`: qail falls back to `mail`
                              // Only the fakes: the system may have a real `Mail`.
    let path = fakes.display().to_string();
    for (wrapper, mua, preset) in [
        ("elq", "elm", None),
        ("pinq", "pine", Some("c")),
        ("qail", "mail", Some("f")),
    ] {
        let mut cmd = host.cmd(wrapper);
        cmd.env("PATH", &path).args(["-x", "folder"]);
        if let Some(p) = preset {
            cmd.env("QMAILINJECT", p);
        }
        let out = run(cmd, b"", LIMIT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{wrapper}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record = fs::read_to_string(host.dir.path().join("mua.out")).expect("the MUA ran");
        let flags = match preset {
            Some("c") => "cf",
            _ => "f",
        };
        assert_eq!(
            record,
            format!("{mua} QMAILINJECT={flags} args=-x folder\n"),
            "{wrapper}"
        );
    }
    let mut cmd = host.cmd("elq");
    cmd.env("PATH", "/nonexistent");
    let out = run(cmd, b"", LIMIT);
    assert_eq!(out.status.code(), Some(111));
}

#[test]
fn maildirmake_makes_a_maildir() {
    let host = Host::new();
    let dir = host.dir.path().join("Maildir");
    let (code, _, err) = out_of(&host, "maildirmake", &[dir.to_str().unwrap_or("")], b"");
    assert_eq!(code, 0, "{err}");
    for sub in ["", "tmp", "new", "cur"] {
        let meta = fs::metadata(dir.join(sub)).expect("exists");
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{sub}");
    }
    let (code, _, err) = out_of(&host, "maildirmake", &[dir.to_str().unwrap_or("")], b"");
    assert_eq!(code, 111);
    assert!(
        err.starts_with("maildirmake: fatal: unable to mkdir"),
        "{err}"
    );
    let (code, _, err) = out_of(&host, "maildirmake", &[], b"");
    assert_eq!(code, 100);
    assert_eq!(err, "maildirmake: usage: maildirmake name\n");
}

fn deliver(dir: &Path, sub: &str, name: &str, content: &str, age_secs: u64) {
    let path = dir.join(sub).join(name);
    fs::write(&path, content).expect("message");
    let when = SystemTime::now() - Duration::from_secs(age_secs);
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(when))
        .expect("mtime");
}

fn maildir(host: &Host) -> std::path::PathBuf {
    let dir = host.dir.path().join("Maildir");
    for sub in ["", "tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub)).expect("maildir");
    }
    dir
}

#[test]
fn maildir2mbox_moves_messages_in_order_with_quoting() {
    let host = Host::new();
    let dir = maildir(&host);
    deliver(
        &dir,
        "new",
        "2.b",
        "Return-Path: <>\nSubject: second\n\nFrom the bounce\n",
        100,
    );
    deliver(
        &dir,
        "cur",
        "1.a:2,S",
        "Return-Path: <jason@example.net>\nSubject: first\n\n>From quoted\nno newline",
        200,
    );
    deliver(&dir, "new", ".hidden", "not a message", 300);
    let mbox = host.dir.path().join("mbox");
    fs::write(
        &mbox,
        "From old Thu Jan 01 00:00:00 1970\nSubject: old\n\nold\n\n",
    )
    .expect("mbox");
    let mut cmd = host.cmd("maildir2mbox");
    cmd.env("MAILDIR", &dir)
        .env("MAIL", &mbox)
        .env("MAILTMP", host.dir.path().join("mbox.tmp"));
    let out = run(cmd, b"", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&mbox).expect("mbox");
    let blocks: Vec<&str> = text.split("\nFrom ").collect();
    assert_eq!(blocks.len(), 3, "{text}");
    assert!(
        blocks[0].starts_with("From old"),
        "the old mbox is kept first: {text}"
    );
    assert!(blocks[1].starts_with("jason@example.net "), "{text}");
    assert!(
        text.contains("\n>>From quoted\nno newline\n\nFrom MAILER-DAEMON "),
        "{text}"
    );
    assert!(blocks[2].starts_with("MAILER-DAEMON "), "{text}");
    assert!(blocks[2].ends_with("\n>From the bounce\n\n"), "{text}");
    assert!(!dir.join("new/2.b").exists() && !dir.join("cur/1.a:2,S").exists());
    assert!(dir.join("new/.hidden").exists());
    assert_eq!(
        fs::metadata(&mbox).expect("mbox").permissions().mode() & 0o777,
        0o600
    );

    // Nothing new: nothing changes.
    let mut cmd = host.cmd("maildir2mbox");
    cmd.env("MAILDIR", &dir)
        .env("MAIL", &mbox)
        .env("MAILTMP", host.dir.path().join("mbox.tmp"));
    assert_eq!(run(cmd, b"", LIMIT).status.code(), Some(0));
    assert_eq!(fs::read_to_string(&mbox).expect("mbox"), text);
}

#[test]
fn maildir2mbox_needs_its_environment_and_keeps_mail_on_failure() {
    let host = Host::new();
    let dir = maildir(&host);
    deliver(&dir, "new", "1.a", "Subject: x\n\ny\n", 100);
    let (code, _, err) = out_of(&host, "maildir2mbox", &[], b"");
    assert_eq!(code, 111);
    assert_eq!(err, "maildir2mbox: fatal: MAIL not set\n");
    let mut cmd = host.cmd("maildir2mbox");
    cmd.env("MAILDIR", &dir)
        .env("MAIL", host.dir.path().join("mbox"))
        .env("MAILTMP", host.dir.path().join("no/such/dir/tmp"));
    let out = run(cmd, b"", LIMIT);
    assert_eq!(out.status.code(), Some(111));
    assert!(
        dir.join("new/1.a").exists(),
        "a failed conversion removes nothing"
    );
}

#[test]
fn maildirwatch_one_round() {
    let host = Host::new();
    let dir = maildir(&host);
    deliver(
        &dir,
        "new",
        "1.a",
        "Return-Path: <jason@example.net>\nDelivered-To: bob@example.net\nFrom: Jason <jason@example.net>\nSubject: lunch\n\nat noon?\n",
        100,
    );
    let mut cmd = host.cmd("maildirwatch");
    cmd.env("MAILDIR", &dir).arg("-1");
    let out = run(cmd, b"", LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\x1b[;H\x1b[;JFROM <jason@example.net> TO <bob@example.net>\n\
         \x1b[1mFrom: Jason <jason@example.net>\x1b[0m\nlunch/at noon?/\n\n"
    );
    // Without -1 it keeps refreshing until killed: read until the second round shows.
    let mut cmd = host.cmd("maildirwatch");
    cmd.env("MAILDIR", &dir)
        .env("MAILDIRWATCH_INTERVAL", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut watch = crate::support::Killed::spawn(&mut cmd);
    let mut stdout = watch.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while String::from_utf8_lossy(&seen).matches("\x1b[;H").count() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    drop(watch);
    let rounds = String::from_utf8_lossy(&seen).matches("\x1b[;H").count();
    assert!(rounds >= 2, "{rounds} rounds");
}
