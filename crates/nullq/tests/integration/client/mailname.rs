//! Debian's `/etc/mailname` as the default of `control/me`, seen by the real binary in a mount
//! namespace where a file of the test is `/etc/mailname`.

use std::time::Duration;

use crate::support::host::*;
use crate::support::write_file;

const LIMIT: Duration = Duration::from_secs(60);

/// A host with no control/me and no defaulthost, and a mailname file naming host9.
fn setup() -> (Host, std::path::PathBuf) {
    let host = Host::new();
    for name in ["me", "defaulthost"] {
        std::fs::remove_file(host.home().join("control").join(name)).expect("remove");
    }
    let mailname = write_file(host.dir.path(), "mailname", "host9.example.org\n");
    (host, mailname)
}

#[test]
fn mailname_names_the_host_without_control_me() {
    let (host, mailname) = setup();
    let mut inject = in_namespace(&host, "qmail-inject", &[("/etc/mailname", &mailname)]);
    inject.args(["-n", "-a", "bob"]);
    let out = run(inject, b"To: bob\nSubject: hi\n\nhello\n", LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("From: jason@host9.example.org\n"), "{text}");
    assert!(text.contains("To: bob@host9.example.org\n"), "{text}");

    let showctl = in_namespace(&host, "qmail-showctl", &[("/etc/mailname", &mailname)]);
    let out = run(showctl, b"", LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("me: (Default: /etc/mailname.) My name is host9.example.org.\n"),
        "{text}"
    );
    assert!(
        text.contains("defaulthost: (Default.) Default host name is host9.example.org.\n"),
        "{text}"
    );
}

#[test]
fn control_me_wins_over_mailname() {
    let (host, mailname) = setup();
    host.control("me", "host1.example.net");
    let mut inject = in_namespace(&host, "qmail-inject", &[("/etc/mailname", &mailname)]);
    inject.args(["-n", "-a", "bob"]);
    let out = run(inject, b"Subject: hi\n\nhello\n", LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(text.contains("From: jason@host1.example.net\n"), "{text}");
    assert!(!text.contains("host9"), "{text}");
}
