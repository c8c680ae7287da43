//! `nullq install` into a temporary root: the mini-qmail layout, control files, man pages, the
//! system sendmail links (an existing sendmail kept aside), --dry-run, and a second run that
//! changes nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};

const LIMIT: Duration = Duration::from_secs(60);

fn install(root: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nullq"));
    cmd.arg("install").arg("--root").arg(root).args(args);
    let out = run(cmd, b"", LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exe() -> PathBuf {
    fs::canonicalize(env!("CARGO_BIN_EXE_nullq")).expect("nullq binary")
}

#[test]
fn installs_the_layout_and_is_idempotent() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    // A system sendmail that is not ours, and one slot free.
    fs::create_dir_all(r.join("usr/lib")).expect("usr/lib");
    fs::write(r.join("usr/lib/sendmail"), b"#!/bin/sh\necho postfix\n").expect("old sendmail");

    let (code, out, err) = install(
        r,
        &[
            "--server",
            "127.0.0.1:6280",
            "--server",
            "[::1]",
            "--me",
            "host1.example.net",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // Every program of the seed's mini-qmail /var/qmail/bin is among the ones linked.
    for program in [
        "datemail",
        "elq",
        "forward",
        "maildir2mbox",
        "maildirmake",
        "maildirwatch",
        "mailsubj",
        "pinq",
        "predate",
        "qail",
        "qmail-inject",
        "qmail-qmqpc",
        "qmail-queue",
        "qmail-showctl",
        "sendmail",
    ] {
        assert!(NAMES.contains(&program), "{program} is not installed");
    }
    for name in NAMES {
        let link = r.join("var/qmail/bin").join(name);
        assert_eq!(fs::read_link(&link).ok(), Some(exe()), "{name}");
        assert!(
            out.contains(&format!("symlink {} -> ", link.display())),
            "{out}"
        );
    }
    assert_eq!(
        fs::read_to_string(r.join("var/qmail/control/me"))
            .ok()
            .as_deref(),
        Some("host1.example.net\n")
    );
    assert_eq!(
        fs::read_to_string(r.join("var/qmail/control/qmqpservers"))
            .ok()
            .as_deref(),
        Some("127.0.0.1:6280\n[::1]\n")
    );
    for page in [
        "man8/sendmail.8",
        "man8/qmail-qmqpc.8",
        "man8/nullq-flush.8",
        "man1/predate.1",
        "man1/maildir2mbox.1",
    ] {
        let text = fs::read_to_string(r.join("usr/share/man").join(page)).unwrap_or_default();
        assert!(text.starts_with(".TH") || text.starts_with(".so"), "{page}");
    }
    for link in ["usr/sbin/sendmail", "usr/lib/sendmail"] {
        assert_eq!(
            fs::read_link(r.join(link)).ok(),
            Some(PathBuf::from("/var/qmail/bin/sendmail")),
            "{link}"
        );
    }
    assert_eq!(
        fs::read(r.join("usr/lib/sendmail.nullq-orig"))
            .ok()
            .as_deref(),
        Some(&b"#!/bin/sh\necho postfix\n"[..]),
        "the old sendmail is kept aside"
    );
    assert!(
        out.contains(&format!("move {}", r.join("usr/lib/sendmail").display())),
        "{out}"
    );

    // Second run: nothing to do.
    let (code, out2, err) = install(
        r,
        &[
            "--server",
            "127.0.0.1:6280",
            "--server",
            "[::1]",
            "--me",
            "host1.example.net",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out2,
        format!("nullq install: nothing to change under {}\n", r.display())
    );
    // And without options it keeps what is there.
    let (code, out3, _) = install(r, &[]);
    assert_eq!(code, 0);
    assert!(
        out3.starts_with("nullq install: nothing to change"),
        "{out3}"
    );
    assert_eq!(
        fs::read_to_string(r.join("var/qmail/control/me"))
            .ok()
            .as_deref(),
        Some("host1.example.net\n")
    );
}

#[test]
fn dry_run_changes_nothing() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let (code, out, err) = install(r, &["--server", "10.0.0.1", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().all(|l| l.starts_with("would ")), "{out}");
    assert!(out.contains("would symlink"), "{out}");
    assert!(out.contains("qmqpservers"), "{out}");
    assert_eq!(fs::read_dir(r).expect("root").count(), 0, "nothing created");
}

/// On a host with /etc/mailname, that file stays the one place the host's name is set: no
/// control/me is written unless --me asks for it.
#[test]
fn mailname_is_left_to_name_the_host() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    fs::create_dir_all(r.join("etc")).expect("etc");
    fs::write(r.join("etc/mailname"), "host9.example.org\n").expect("mailname");
    let (code, out, err) = install(r, &["--server", "10.0.0.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!r.join("var/qmail/control/me").exists(), "{out}");
    let (code, _, err) = install(r, &["--me", "host1.example.net"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(r.join("var/qmail/control/me")).expect("me"),
        "host1.example.net\n"
    );
}

#[test]
fn existing_aside_copy_is_never_overwritten() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    fs::create_dir_all(r.join("usr/sbin")).expect("dir");
    fs::write(r.join("usr/sbin/sendmail"), b"new vendor").expect("file");
    fs::write(r.join("usr/sbin/sendmail.nullq-orig"), b"first vendor").expect("file");
    let (code, _, err) = install(r, &["--me", "h"]);
    assert_eq!(code, 111, "{err}");
    assert!(err.contains("left both alone"), "{err}");
    assert_eq!(
        fs::read(r.join("usr/sbin/sendmail")).ok().as_deref(),
        Some(&b"new vendor"[..])
    );
    assert_eq!(
        fs::read(r.join("usr/sbin/sendmail.nullq-orig"))
            .ok()
            .as_deref(),
        Some(&b"first vendor"[..])
    );
}

#[test]
fn usage_errors() {
    let root = tempfile::tempdir().expect("root");
    let (code, _, err) = install(root.path(), &["--server", "not an address!"]);
    assert_eq!(code, 100, "{err}");
    let (code, _, err) = install(root.path(), &["--frobnicate"]);
    assert_eq!(code, 100, "{err}");
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn the_installed_programs_work() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let server = QmqpServer::start(Answer::Accept);
    let addr = server.addr.to_string();
    let (code, _, err) = install(
        r,
        &[
            "--server",
            &addr,
            "--me",
            "host1.example.net",
            "--fallback",
            "/var/qmail/fallback",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for (sub, mode) in [
        ("", 0o755),
        ("tmp", 0o1777),
        ("new", 0o1777),
        ("failed", 0o1777),
    ] {
        let meta = fs::metadata(r.join("var/qmail/fallback").join(sub)).expect("queue dir");
        assert!(meta.is_dir(), "{sub}");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "fallback/{sub}");
    }
    // The memory of failed servers: sticky, so that every user's client keeps its own file.
    let memory = fs::metadata(r.join("var/lib/nullq/servers")).expect("server memory dir");
    assert!(memory.is_dir());
    assert_eq!(memory.permissions().mode() & 0o7777, 0o1777);
    // Red-team finding 4: its parents were created 0700, so no ordinary user could reach it.
    for parent in ["var/lib", "var/lib/nullq"] {
        let meta = fs::metadata(r.join(parent)).expect("parent");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{parent}");
    }
    let mut cmd = Command::new(r.join("var/qmail/bin/sendmail"));
    cmd.env("NULLQ_HOME", r.join("var/qmail"))
        .env("USER", "root")
        .args(["-t"]);
    let out = run(cmd, b"To: postmaster\nSubject: installed\n\nhi\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.received()[0].recipients,
        vec![b"postmaster@host1.example.net".to_vec()]
    );
}

#[test]
fn install_fixes_the_modes_of_an_older_fallback_layout() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let queue = r.join("var/qmail/fallback");
    // The layout older installs made: write-only for users, so their sendmail could not fsync.
    for sub in ["tmp", "new", "failed"] {
        fs::create_dir_all(queue.join(sub)).expect("old layout");
        fs::set_permissions(queue.join(sub), fs::Permissions::from_mode(0o1733)).expect("chmod");
    }
    let args = [
        "--me",
        "host1.example.net",
        "--fallback",
        "/var/qmail/fallback",
    ];
    let (code, out, err) = install(r, &args);
    assert_eq!(code, 0, "{err}");
    for sub in ["tmp", "new", "failed"] {
        let mode = fs::metadata(queue.join(sub))
            .expect("queue dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777, "fallback/{sub}: {out}");
        assert!(
            out.contains(&format!("chmod 1777 {}", queue.join(sub).display())),
            "{out}"
        );
    }
    let (code, out, err) = install(r, &args);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("chmod"),
        "a second run changes nothing: {out}"
    );
}
