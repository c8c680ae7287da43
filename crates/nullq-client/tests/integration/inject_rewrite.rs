//! qmail-inject with nullq's additions: the site's `control/rewrite` (CommuniGate Pro Router
//! records, the seed's wish instead of sendmail's MASQUERADE_AS), the header size limit, and the
//! library entry points the sendmail wrapper uses. qmail has no equivalent, so the expected
//! outputs are ours; the qmail parts of each output are those of `inject_cases.rs`.

use std::ffi::OsString;
use std::time::{Duration, UNIX_EPOCH};

use nullq_client::control::ControlDir;
use nullq_client::qmail_inject::{prepare, Env, InjectError, InjectOptions, HEADER_LIMIT};

/// The seed's Router records, and a host whose defaulthost is the workstation itself.
const SEED_RULES: &str = "\
; moved over from the CommuniGate Pro Router table
<postmaster@host1.example.net> = user@example.net
<*@host1.example.net> = *@example.net
<postmaster@host2.example.org> = user@example.org
<*@host2.example.org> = *@example.org
";

struct Home {
    _dir: tempfile::TempDir,
    opts: InjectOptions,
}

fn home(rules: Option<&str>, env: &[(&str, &str)]) -> Home {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().join("control");
    std::fs::create_dir_all(&control).expect("control");
    std::fs::write(control.join("me"), "host1.example.net\n").expect("me");
    if let Some(rules) = rules {
        std::fs::write(control.join("rewrite"), rules).expect("rewrite");
    }
    let mut e = Env::empty();
    e.set("USER", "root");
    for (k, v) in env {
        e.set(k, v);
    }
    let mut opts = InjectOptions::new(e);
    opts.control = ControlDir::new(dir.path());
    opts.time = UNIX_EPOCH + Duration::from_secs(1_053_567_702);
    opts.pid = 281_988;
    Home { _dir: dir, opts }
}

fn run(
    h: &mut Home,
    args: &[&str],
    input: &[u8],
) -> Result<(String, Vec<String>, String), InjectError> {
    let mut argv: Vec<OsString> = vec!["qmail-inject".into()];
    argv.extend(args.iter().map(OsString::from));
    h.opts.parse_args(&argv)?;
    let mut out = Vec::new();
    let env = prepare(&h.opts, input, &mut out)?;
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        env.recipients
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        String::from_utf8_lossy(&env.sender).into_owned(),
    ))
}

#[test]
fn seed_records_rewrite_envelope_and_header() {
    let mut h = home(Some(SEED_RULES), &[("NAME", "Charlie Root")]);
    let (out, rcpts, sender) = run(
        &mut h,
        &["-n"],
        b"To: postmaster, adm, Bob <bob@host1.example.net>, carol@host2.example.org\n\
          Cc: \"Dan\" <dan@elsewhere.org>, postmaster@host2.example.org\n\
          Reply-To: webmaster\nSubject: cron\n\nbody\n",
    )
    .expect("inject");
    assert_eq!(
        out,
        "Return-Path: <root@example.net>\n\
         Date: 22 May 2003 01:41:42 -0000\n\
         Message-ID: <20030522014142.281988.qmail@host1.example.net>\n\
         From: \"Charlie Root\" <root@example.net>\n\
         To: user@example.net, adm@example.net, Bob <bob@example.net>,\n  carol@example.org\n\
         Cc: \"Dan\" <dan@elsewhere.org>, user@example.org\n\
         Reply-To: webmaster@example.net\n\
         Subject: cron\n\nbody\n"
    );
    assert_eq!(sender, "root@example.net");
    assert_eq!(
        rcpts,
        vec![
            "carol@example.org",
            "bob@example.net",
            "adm@example.net",
            "user@example.net",
            "user@example.org",
            "dan@elsewhere.org"
        ]
    );
}

#[test]
fn rules_apply_to_arguments_sender_and_return_path() {
    let mut h = home(Some(SEED_RULES), &[]);
    let (_, rcpts, sender) = run(
        &mut h,
        &["-f", "daemon", "postmaster", "x@host2.example.org"],
        b"Subject: x\n\nx\n",
    )
    .expect("inject");
    assert_eq!(sender, "daemon@example.net");
    assert_eq!(rcpts, vec!["user@example.net", "x@example.org"]);

    let mut h = home(Some(SEED_RULES), &[]);
    let (out, _, sender) = run(
        &mut h,
        &["-n"],
        b"Return-Path: <bounce@host1.example.net>\nTo: a@b.c\n\nx\n",
    )
    .expect("inject");
    assert_eq!(sender, "bounce@example.net");
    assert!(
        out.starts_with("Return-Path: <bounce@example.net>\n"),
        "{out}"
    );
}

#[test]
fn first_rule_wins_and_null_sender_is_kept() {
    let mut h = home(
        Some("<*@host1.example.net> = *@example.net\n<root@host1.example.net> = never@x.y\n"),
        &[],
    );
    let (_, rcpts, sender) = run(&mut h, &["-f", "", "root"], b"\n").expect("inject");
    assert_eq!(sender, "");
    assert_eq!(rcpts, vec!["root@example.net"]);
}

#[test]
fn quoted_local_parts_survive_rewriting() {
    let mut h = home(Some(SEED_RULES), &[]);
    let (out, rcpts, _) = run(
        &mut h,
        &["-n"],
        b"To: \"john smith\"@host1.example.net\n\nx\n",
    )
    .expect("inject");
    assert!(out.contains("\nTo: \"john smith\"@example.net\n"), "{out}");
    assert_eq!(rcpts, vec!["john smith@example.net"]);
}

#[test]
fn without_rules_nothing_changes() {
    let mut h = home(None, &[]);
    let (_, rcpts, sender) = run(&mut h, &[], b"To: postmaster\n\nx\n").expect("inject");
    assert_eq!(sender, "root@host1.example.net");
    assert_eq!(rcpts, vec!["postmaster@host1.example.net"]);
}

#[test]
fn a_bad_rule_file_is_a_temporary_failure() {
    let mut h = home(Some("<*@a> = *@b\n<x@y> =\n"), &[]);
    let e = run(&mut h, &[], b"To: x\n\nx\n").expect_err("must fail");
    assert_eq!(e.exit_code(), 111);
    assert_eq!(
        String::from_utf8_lossy(&e.message()),
        "qmail-inject: fatal: unable to parse control/rewrite: line 2: empty replacement: <x@y> =\n"
    );
}

#[test]
fn header_limit_is_permanent_but_long_body_lines_stream() {
    let mut h = home(None, &[]);
    let mut msg = b"To: x\nX-Big: ".to_vec();
    msg.resize(msg.len() + HEADER_LIMIT, b'a');
    msg.extend_from_slice(b"\n\nbody\n");
    let e = run(&mut h, &[], &msg).expect_err("must fail");
    assert_eq!(e.exit_code(), 100);
    assert!(
        String::from_utf8_lossy(&e.message()).starts_with("qmail-inject: fatal: header too long")
    );

    // A first body line longer than the limit, with no blank line before it, is body.
    let mut h = home(None, &[]);
    let mut msg = b"To: x\nbody ".to_vec();
    msg.resize(msg.len() + HEADER_LIMIT + 10, b'b');
    let (out, _, _) = run(&mut h, &["-n"], &msg).expect("inject");
    assert!(out.ends_with(&format!(
        "To: x@host1.example.net\n\nbody {}\n",
        "b".repeat(HEADER_LIMIT + 10)
    )));
}

#[test]
fn missing_home_is_qmails_internal_bug() {
    let mut h = home(None, &[]);
    h.opts.control = ControlDir::new("/nonexistent/nullq-home");
    let e = run(&mut h, &[], b"To: x\n\nx\n").expect_err("must fail");
    assert_eq!(
        (e.exit_code(), e.to_string()),
        (111, "qmail-inject: fatal: internal bug".to_owned())
    );
}

#[test]
fn option_parsing_like_getopt() {
    let mut h = home(None, &[]);
    let argv: Vec<OsString> = ["qmail-inject", "-nHfme@x", "--", "-a", "b"]
        .iter()
        .map(OsString::from)
        .collect();
    h.opts.parse_args(&argv).expect("parse");
    assert!(h.opts.print);
    assert_eq!(h.opts.sender.as_deref(), Some(&b"me@x"[..]));
    assert_eq!(h.opts.args, vec![b"-a".to_vec(), b"b".to_vec()]);

    let argv: Vec<OsString> = ["/var/qmail/bin/qmail-inject", "-a", "-", "-n"]
        .iter()
        .map(OsString::from)
        .collect();
    h.opts.parse_args(&argv).expect("parse");
    assert_eq!(h.opts.args, vec![b"-".to_vec(), b"-n".to_vec()]);

    let argv: Vec<OsString> = ["/var/qmail/bin/qmail-inject", "-ax"]
        .iter()
        .map(OsString::from)
        .collect();
    let e = h.opts.parse_args(&argv).expect_err("illegal");
    assert_eq!(
        (e.exit_code(), e.to_string()),
        (100, "qmail-inject: illegal option -- x".to_owned())
    );
}
