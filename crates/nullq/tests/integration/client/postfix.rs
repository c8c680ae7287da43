//! The "must show": with `qmqpservers` naming a Postfix qmqpd on loopback,
//! `printf 'To: bob\nSubject: hi\n\nbody\n' | sendmail -oem -oi -t` exits 0 and Postfix's queue
//! holds the message for bob@DEFAULTHOST. A private Postfix instance (its own config and queue
//! under /var/tmp) is started for the test; it needs root and the Debian postfix package, and
//! the test fails without them (scripts/test installs them and runs as root).

use std::time::Duration;

use crate::support::host::*;
use crate::support::peers::{Postfix, Role};
use crate::support::wait_for;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sendmail_t_into_postfix_qmqpd() {
    let postfix = Postfix::start(Role::Qmqpd);
    let host = Host::new();
    host.servers(&[postfix.addr]);
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-oem", "-oi", "-t"]);
    let out = run(cmd, b"To: bob\nSubject: hi\n\nbody\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        postfix.log()
    );
    let mut json = String::new();
    let queued = wait_for(Duration::from_secs(30), || {
        json = postfix.queue_json().unwrap_or_default();
        json.contains("\"address\": \"bob@example.net\"")
            || json.contains("\"address\":\"bob@example.net\"")
    });
    assert!(queued, "postqueue -j: {json}\n{}", postfix.log());
    assert!(json.contains("jason@example.net"), "{json}");
    let id = json
        .split("\"queue_id\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or_default()
        .to_owned();
    let content = postfix.postcat(&id);
    assert!(content.contains("Subject: hi"), "{content}");
    assert!(content.contains("To: bob@example.net"), "{content}");
    assert!(
        content.contains("with QMQP") || content.contains("QMQP"),
        "{content}"
    );
}
