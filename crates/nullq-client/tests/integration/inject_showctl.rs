//! qmail-showctl: the report of the client's control files, its warnings about values that make
//! broken addresses (the seed's `<jason@example.>`), and `--check`'s connection test.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nullq_client::control::ControlDir;
use nullq_client::qmail_inject::{Env, InjectOptions};
use nullq_client::showctl::{report, Summary};

fn show(home: &Path, env: &[(&str, &str)], check: bool) -> (String, Summary) {
    let mut e = Env::empty();
    e.set("USER", "jason");
    for (k, v) in env {
        e.set(k, v);
    }
    let mut opts = InjectOptions::new(e);
    opts.control = ControlDir::new(home);
    let mut out = Vec::new();
    let summary = report(&opts, check, &mut out).expect("report");
    (String::from_utf8(out).expect("text"), summary)
}

fn home(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("control")).expect("control");
    for (name, value) in files {
        std::fs::write(dir.path().join("control").join(name), value).expect("file");
    }
    dir
}

#[test]
fn a_good_configuration_has_no_warnings() {
    let h = home(&[
        ("me", "host1.example.net\n"),
        ("defaulthost", "example.net\n"),
        ("plusdomain", "example.net\n"),
        (
            "qmqpservers",
            "192.0.2.1\n[2001:db8::1]:10628\nmail.example.net\n",
        ),
    ]);
    let (out, summary) = show(h.path(), &[], false);
    assert_eq!(summary, Summary::default(), "{out}");
    for line in [
        &format!("qmail home directory: {}.", h.path().display()),
        "me: My name is host1.example.net.",
        "defaulthost: Default host name is example.net.",
        "defaultdomain: (Default.) Default domain name is host1.example.net.",
        "plusdomain: Plus domain name is example.net.",
        "idhost: (Default.) Message-ID host name is host1.example.net.",
        "  root         -> root@example.net",
        "  root@host1   -> root@host1.host1.example.net",
        "  root@host1+  -> root@host1.example.net",
        "  envelope sender -> jason@example.net",
        "  From: jason@example.net",
        "QMQP server: 192.0.2.1:628.",
        "QMQP server: [2001:db8::1]:10628.",
        "QMQP server: mail.example.net:628.",
        "timeoutconnect: (Default.) QMQP connection timeout is 10 seconds.",
        "rewrite: (Default.) No site rewriting.",
        "fallbackqueue: (Default.) No fallback queue.",
        "No warnings.",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn the_seeds_broken_from_is_warned_about() {
    // An empty defaultdomain and a bare mail host: qmail-inject writes `From: ... <jason@example.>`.
    let h = home(&[
        ("me", "host1.example.net\n"),
        ("defaulthost", "example.net\n"),
        ("defaultdomain", ""),
        ("qmqpservers", "192.0.2.1\n"),
    ]);
    let (out, summary) = show(
        h.path(),
        &[("QMAILHOST", "example"), ("NAME", "Jason Mader")],
        false,
    );
    assert!(
        out.contains("  From: \"Jason Mader\" <jason@example.>\n"),
        "{out}"
    );
    assert!(
        out.contains("  environment: QMAILHOST=example USER=jason NAME=Jason Mader\n"),
        "{out}"
    );
    assert!(
        out.contains("  WARNING: the defaultdomain value ``: it is empty\n"),
        "{out}"
    );
    assert!(
        out.contains("  WARNING: the envelope sender `jason@example.`: its domain ends in a dot"),
        "{out}"
    );
    assert!(summary.warnings >= 3, "{out}");
}

#[test]
fn values_ending_in_a_dot_or_without_one_are_warned_about() {
    let h = home(&[
        ("me", "host1\n"),
        ("defaulthost", "example.net.\n"),
        ("qmqpservers", "192.0.2.1\n"),
    ]);
    let (out, _) = show(h.path(), &[], false);
    assert!(
        out.contains("WARNING: the me value `host1`: it is a bare name without a dot"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: the defaulthost value `example.net.`: it ends in a dot"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: the defaultdomain value `host1`: it is a bare name without a dot"),
        "{out}"
    );
}

#[test]
fn missing_me_shows_qmails_placeholders() {
    // Without control/me, /etc/mailname names the host (Debian's rule); this test is about the
    // host that has neither. The one with /etc/mailname is tested in a mount namespace
    // (the nullq crate's client::showctl tests).
    if Path::new(nullq_client::control::MAILNAME).exists() {
        eprintln!("skipped: this host has /etc/mailname");
        return;
    }
    let h = home(&[]);
    let (out, summary) = show(h.path(), &[], false);
    assert!(
        out.contains("me: (Default.) My name is undefined! Uh-oh.\n"),
        "{out}"
    );
    assert!(
        out.contains("defaulthost: (Default.) Default host name is defaulthost.\n"),
        "{out}"
    );
    assert!(
        out.contains("qmqpservers: (Default.) No QMQP servers.\n"),
        "{out}"
    );
    assert!(out.contains("WARNING: no usable QMQP server"), "{out}");
    assert!(out.contains("placeholder `defaulthost`"), "{out}");
    assert!(summary.warnings > 0);
}

#[test]
fn environment_overrides_are_shown() {
    let h = home(&[
        ("me", "host1.example.net\n"),
        ("qmqpservers", "192.0.2.1\n"),
    ]);
    let (out, _) = show(h.path(), &[("QMAILDEFAULTHOST", "ncac.gwu.edu")], false);
    assert!(
        out.contains("defaulthost: (Default.) Default host name is host1.example.net.\n")
            && out
                .contains("  $QMAILDEFAULTHOST overrides it in this environment: ncac.gwu.edu.\n")
            && out.contains("  root         -> root@ncac.gwu.edu\n"),
        "{out}"
    );
}

#[test]
fn bad_server_lines_and_rewrite_files_are_warned_about() {
    let h = home(&[
        ("me", "host1.example.net\n"),
        ("qmqpservers", "300.1.2.3\n192.0.2.1:99999\n"),
        ("rewrite", "<a@b> c\n"),
        ("unknownfile", "x\n"),
    ]);
    let (out, summary) = show(h.path(), &[], false);
    assert!(
        out.contains("WARNING: unreadable line, skipped: 300.1.2.3: not a valid IPv4 address"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: unreadable line, skipped: 192.0.2.1:99999: port out of range"),
        "{out}"
    );
    assert!(out.contains("WARNING: no usable QMQP server"), "{out}");
    assert!(
        out.contains("rewrite: Oops! Trouble reading this file.\n"),
        "{out}"
    );
    assert!(
        out.contains("unknownfile: I have no idea what this file does.\n"),
        "{out}"
    );
    assert_eq!(summary.warnings, 4, "{out}");
}

/// A loopback address that refuses connections for as long as the returned socket is open: a
/// TCP socket bound to a port and not listening. (The port of a listener that was dropped is
/// free again: another test's or process's listener may take it before `--check` connects, and
/// a connection to a free loopback port can even connect to itself.) No `SO_REUSEADDR`, so no
/// other socket can bind the port meanwhile.
fn refusing_addr() -> (OwnedFd, SocketAddr) {
    // SAFETY: socket has no memory preconditions; a descriptor it returns is ours to own.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_in is plain data, valid when zeroed.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid sockaddr_in of `len` bytes, alive for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sin).cast::<libc::sockaddr>(),
            len,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    // SAFETY: `sin` and `len` are valid for writes of a sockaddr_in, alive for the call.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&raw mut sin).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
    let port = u16::from_be(sin.sin_port);
    (fd, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())
}

#[test]
fn check_connects_to_each_server() {
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (_refusing, down) = refusing_addr();
    let h = home(&[
        ("me", "host1.example.net\n"),
        (
            "qmqpservers",
            &format!("{down}\n{}\n", up.local_addr().expect("addr")),
        ),
    ]);
    let (out, summary) = show(h.path(), &[], true);
    assert_eq!(summary.unreachable, 1, "{out}");
    assert!(out.contains(&format!("  {down}: UNREACHABLE: ")), "{out}");
    assert!(
        out.contains(&format!(
            "  {0}: connected to {0}.\n",
            up.local_addr().expect("addr")
        )),
        "{out}"
    );
}
