//! qmail-inject and qmail-showctl run as the real binary through their symlinks: the spec's
//! "Try it", queueing to a QMQP server in the same process, the queue's refusals as qmail's
//! exit codes and messages, `$QMAILQUEUE`, the site's rewriting rules end to end, and a 50 MB
//! message in bounded memory. (The byte-for-byte comparison with qmail-inject's output is
//! `crates/nullq-client/tests/integration/inject_cases.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::RefusedPort;

const LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Replace the generated Date and Message-ID values, which change with time and pid.
fn normalize(out: &str) -> String {
    out.lines()
        .map(|l| {
            if let Some(date) = l.strip_prefix("Date: ") {
                // "26 Nov 2026 11:46:49 -0000"
                let parts: Vec<&str> = date.split(' ').collect();
                assert_eq!(parts.len(), 5, "{l}");
                assert_eq!(parts[4], "-0000", "{l}");
                "Date: DATE".to_owned()
            } else if let Some(id) = l.strip_prefix("Message-ID: <") {
                let (stamp, rest) = id.split_once('.').expect("stamp");
                assert_eq!(stamp.len(), 14, "{l}");
                let (pid, host) = rest.split_once(".qmail@").expect("pid");
                assert!(pid.bytes().all(|b| b.is_ascii_digit()), "{l}");
                format!("Message-ID: <STAMP.PID.qmail@{host}")
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn try_it_from_the_spec() {
    // printf 'To: bob\nSubject: hi\n\nbody\n' | USER=jason qmail-inject -n
    // with me=host1.example.net, defaulthost=example.net.
    let host = Host::new();
    let mut cmd = host.cmd("qmail-inject");
    cmd.arg("-n");
    let out = run(cmd, b"To: bob\nSubject: hi\n\nbody\n", LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        normalize(&text(&out.stdout)),
        "Return-Path: <jason@example.net>\n\
         Date: DATE\n\
         Message-ID: <STAMP.PID.qmail@host1.example.net>\n\
         From: jason@example.net\n\
         To: bob@example.net\n\
         Subject: hi\n\
         \n\
         body\n"
    );
}

#[test]
fn queues_to_the_first_server_in_process() {
    let host = Host::new();
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[down.addr, up.addr]);
    let out = run(
        host.cmd("qmail-inject"),
        b"To: bob, carol@host2\nBcc: eve\nSubject: hi\n\nbody\n",
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, b"jason@example.net");
    let rcpts: Vec<String> = got[0].recipients.iter().map(|r| text(r)).collect();
    assert_eq!(
        rcpts,
        [
            "carol@host2.host1.example.net",
            "bob@example.net",
            "eve@example.net"
        ]
    );
    let msg = normalize(&text(&got[0].message));
    assert_eq!(
        msg,
        "Date: DATE\n\
         Message-ID: <STAMP.PID.qmail@host1.example.net>\n\
         From: jason@example.net\n\
         To: bob@example.net, carol@host2.host1.example.net\n\
         Subject: hi\n\
         \n\
         body\n"
    );
}

/// `nullq PROGRAM ARGS...` with the host's environment (for programs without a symlink here).
fn nullq(host: &Host, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nullq"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NULLQ_HOME", host.home())
        .env("USER", "jason")
        .env("TMPDIR", host.dir.path())
        .current_dir(host.dir.path())
        .args(args);
    cmd
}

#[test]
fn the_nullq_subcommand_is_the_same_program() {
    let host = Host::new();
    let out = run(
        nullq(&host, &["qmail-inject", "-n", "-a", "bob"]),
        b"Subject: x\n\nx\n",
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\nCc: recipient list not shown: ;\nSubject: x\n"));
}

#[test]
fn refusals_are_qmails_exit_codes_and_texts() {
    for (answer, code, line) in [
        (
            Answer::PermFail,
            100,
            "qmail-inject: fatal: mail server permanently rejected message (#5.3.0)\n",
        ),
        (
            Answer::TempFail,
            111,
            "qmail-inject: fatal: mail server temporarily rejected message (#4.3.0)\n",
        ),
    ] {
        let host = Host::new();
        let server = QmqpServer::start(answer);
        host.servers(&[server.addr]);
        let out = run(host.cmd("qmail-inject"), b"To: bob\n\nx\n", LIMIT);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        assert!(text(&out.stderr).ends_with(line), "{}", text(&out.stderr));
    }
}

#[test]
fn permanent_message_errors_are_100() {
    let host = Host::new();
    let out = run(
        host.cmd("qmail-inject"),
        b"From: bob (unclosed\nTo: x\n\nx\n",
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(100));
    assert_eq!(
        text(&out.stderr),
        "qmail-inject: fatal: unable to parse this line:\nFrom: bob (unclosed\n"
    );

    let mut cmd = host.cmd("qmail-inject");
    cmd.arg("-x");
    let out = run(cmd, b"To: x\n\nx\n", LIMIT);
    assert_eq!(out.status.code(), Some(100));
    assert_eq!(text(&out.stderr), "qmail-inject: illegal option -- x\n");
}

#[test]
fn missing_home_is_temporary() {
    let host = Host::new();
    let mut cmd = host.cmd("qmail-inject");
    cmd.env("NULLQ_HOME", host.dir.path().join("nonexistent"));
    let out = run(cmd, b"To: x\n\nx\n", LIMIT);
    assert_eq!(out.status.code(), Some(111));
    assert_eq!(text(&out.stderr), "qmail-inject: fatal: internal bug\n");
}

fn script(host: &Host, name: &str, body: &str) -> std::path::PathBuf {
    let path = host.dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn qmailqueue_gets_the_qmail_queue_interface() {
    let host = Host::new();
    let dir = host.dir.path();
    let qq = script(
        &host,
        "qq",
        &format!(
            "cat > {0}/msg; cat <&1 > {0}/env; pwd > {0}/cwd",
            dir.display()
        ),
    );
    let mut cmd = host.cmd("qmail-inject");
    cmd.env("QMAILQUEUE", &qq)
        .args(["-f", "cron", "root", "adm@host2"]);
    let out = run(cmd, b"Subject: x\n\nx\n", LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.join("env")).expect("env"),
        b"Fcron@example.net\0Troot@example.net\0Tadm@host2.host1.example.net\0\0"
    );
    assert!(text(&std::fs::read(dir.join("msg")).expect("msg")).ends_with("Subject: x\n\nx\n"));
    // qmail runs qmail-queue in its home directory.
    let cwd = std::fs::read_to_string(dir.join("cwd")).expect("cwd");
    assert_eq!(
        std::fs::canonicalize(cwd.trim()).expect("cwd"),
        std::fs::canonicalize(host.home()).expect("home")
    );

    // Exit 82 with a reply on fd 6 (notqmail's custom error), and exit codes without one.
    let qq = script(
        &host,
        "qq82",
        "cat >/dev/null; cat <&1 >/dev/null; printf 'Dno such user (#5.1.1)' >&6; exit 82",
    );
    let mut cmd = host.cmd("qmail-inject");
    cmd.env("QMAILQUEUE", &qq);
    let out = run(cmd, b"To: x\n\nx\n", LIMIT);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(100),
            "qmail-inject: fatal: no such user (#5.1.1)\n".to_owned()
        )
    );

    let qq = script(&host, "qq53", "cat >/dev/null; cat <&1 >/dev/null; exit 53");
    let mut cmd = host.cmd("qmail-inject");
    cmd.env("QMAILQUEUE", &qq);
    let out = run(cmd, b"To: x\n\nx\n", LIMIT);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(111),
            "qmail-inject: fatal: qq write error or disk full (#4.3.0)\n".to_owned()
        )
    );
}

#[test]
fn site_rewriting_end_to_end() {
    let host = Host::new();
    host.control("defaulthost", "host1.example.net");
    host.control(
        "rewrite",
        "<postmaster@host1.example.net> = user@example.net\n<*@host1.example.net> = *@example.net",
    );
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    // Pine's call.
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-oem", "-oi", "-t"]);
    let out = run(cmd, b"To: postmaster, root\nSubject: cron\n\nx\n", LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = up.received();
    let last = got.last().expect("a message");
    assert_eq!(last.sender, b"jason@example.net");
    let rcpts: Vec<String> = last.recipients.iter().map(|r| text(r)).collect();
    assert_eq!(rcpts, ["root@example.net", "user@example.net"]);
    let msg = text(&last.message);
    assert!(
        msg.contains("\nFrom: jason@example.net\nTo: user@example.net, root@example.net\n"),
        "{msg}"
    );
}

#[test]
fn fifty_megabytes_in_bounded_memory() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let message = fifty_megabytes(b"To: bob\nSubject: big\n\n");
    let (wrapper, rss_file) = timed(&host, "qmail-inject");
    let out = run(host.cmd(&wrapper), &message, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = up.received();
    assert_eq!(got.len(), 1);
    // The body arrives whole, after the generated fields.
    let body_len = (message.len() - b"To: bob\nSubject: big\n".len()) as u64;
    assert!(got[0].bytes > body_len, "{} bytes", got[0].bytes);
    let rss_kib = peak_rss_kib(&rss_file);
    eprintln!(
        "qmail-inject peak RSS for a {} byte message: {rss_kib} KiB",
        message.len()
    );
    assert!(rss_kib < 16 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn showctl_runs_and_checks() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let out = run(nullq(&host, &["qmail-showctl", "--check"]), b"", LIMIT);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("  {0}: connected to {0}.\n", up.addr)),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("No warnings; every server answered.\n"),
        "{stdout}"
    );

    host.control("defaultdomain", "");
    let out = run(nullq(&host, &["qmail-showctl"]), b"", LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("WARNING: the defaultdomain value ``: it is empty"));
}
