//! forward against notqmail's, case by case: what reaches `$QMAILQUEUE`, the exit code and
//! the one line on stderr, for each of qmail-queue's answers.
//!
//! Every expected value below was produced by notqmail's forward (notqmail/notqmail at a7012e4,
//! built from source with conf-qmail set to a scratch directory, `make forward`), run as
//! `env -i NEWSENDER=jason@example.net DTLINE=D QMAILQUEUE=SCRIPT forward eve@example.net
//! amy@example.net` on the same message, SCRIPT keeping fd 0 and fd 1 and exiting with the
//! case's code; its `forward: qp PID` is checked for its form only (the PID is qmail-queue's
//! there, nullq's own here). The same comparison was run against the real binary, through the
//! `forward` name of the nullq binary, for every case here. nullq's forward does not insist on
//! DTLINE (forward(1)).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::host::{run, Host};

const MESSAGE: &[u8] = b"Subject: hi\n\nbody\n";

struct Case {
    /// The exit code of the `$QMAILQUEUE` program.
    queue_exit: i32,
    code: i32,
    /// forward's stderr; `None`: `forward: qp NUMBER`.
    err: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        queue_exit: 0,
        code: 0,
        err: None,
    },
    Case {
        queue_exit: 31,
        code: 100,
        err: Some("forward: fatal: mail server permanently rejected message (#5.3.0)\n"),
    },
    Case {
        queue_exit: 71,
        code: 111,
        err: Some("forward: fatal: mail server temporarily rejected message (#4.3.0)\n"),
    },
    Case {
        queue_exit: 11,
        code: 100,
        err: Some("forward: fatal: envelope address too long for qq (#5.1.3)\n"),
    },
];

/// A `$QMAILQUEUE` program in `dir` that keeps the message in `qq.msg` and the envelope in
/// `qq.env` and exits `code`.
fn queue_script(dir: &std::path::Path, code: i32) -> std::path::PathBuf {
    let script = dir.join("qq");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {d}/qq.msg\ncat <&1 > {d}/qq.env\nexit {code}\n",
            d = dir.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn forward_goes_through_qmailqueue_as_qmails_does() {
    let mut failures = Vec::new();
    for case in CASES {
        let host = Host::new();
        let dir = host.dir.path();
        let script = queue_script(dir, case.queue_exit);
        let mut cmd = host.cmd("forward");
        cmd.env("NEWSENDER", "jason@example.net")
            .env("DTLINE", "D")
            .env("QMAILQUEUE", &script)
            .args(["eve@example.net", "amy@example.net"]);
        let out = run(cmd, MESSAGE, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let err_ok = match case.err {
            Some(e) => err == e,
            None => err
                .strip_prefix("forward: qp ")
                .and_then(|n| n.strip_suffix('\n'))
                .is_some_and(|n| n.parse::<u32>().is_ok()),
        };
        let msg = std::fs::read(dir.join("qq.msg")).unwrap_or_default();
        let env = std::fs::read(dir.join("qq.env")).unwrap_or_default();
        if out.status.code() != Some(case.code)
            || !err_ok
            || msg != b"DSubject: hi\n\nbody\n"
            || env != b"Fjason@example.net\0Teve@example.net\0Tamy@example.net\0\0"
        {
            failures.push(format!(
                "qmail-queue exit {}: expected {} {:?}, got {:?} {err:?}, message {:?}, envelope {:?}",
                case.queue_exit,
                case.code,
                case.err,
                out.status.code(),
                String::from_utf8_lossy(&msg),
                String::from_utf8_lossy(&env)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_qmailqueue_that_cannot_run_is_111_as_in_qmail() {
    let host = Host::new();
    let mut cmd = host.cmd("forward");
    cmd.env("NEWSENDER", "a")
        .env("DTLINE", "D")
        .env("QMAILQUEUE", host.dir.path().join("nonexistent"))
        .arg("e");
    let out = run(cmd, b"x", Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(111));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "forward: fatal: unable to exec qq (#4.3.0)\n"
    );
}

/// A `$QMAILQUEUE` program gets an address with a control character other than NUL as qmail's
/// forward gives it (a TAB here): only the QMQP hop (nullq's qmail-qmqpc) refuses those, since
/// nullq's server would. (A NUL, which qmail-queue's envelope cannot carry, cannot be an
/// argument; `QmailEnvelope::unencodable`'s unit test has it.)
#[test]
fn a_qmailqueue_program_gets_a_tab_address_as_qmails_forward_gives_it() {
    let host = Host::new();
    let dir = host.dir.path();
    let script = queue_script(dir, 0);
    let mut cmd = host.cmd("forward");
    cmd.env("NEWSENDER", "jason@example.net")
        .env("DTLINE", "D")
        .env("QMAILQUEUE", &script)
        .arg("eve\tx@example.net");
    let out = run(cmd, MESSAGE, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let env = std::fs::read(dir.join("qq.env")).unwrap_or_default();
    assert_eq!(
        env,
        b"Fjason@example.net\0Teve\tx@example.net\0\0",
        "{}",
        String::from_utf8_lossy(&env)
    );
}
