//! The site policy end to end: the seed's two Router records rewrite envelope and header before
//! delivery; a sender outside the client's patterns gets `D` and nothing is queued; relay
//! control with `local_domains`, lifted per client by a tcprules variable (`RELAYCLIENT`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::qmqp::{is_k, send};
use crate::support::server::Server;
use crate::support::{files, maildir_messages, wait_for};

const T: Duration = Duration::from_secs(30);

fn config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn seed_router_records_rewrite_envelope_and_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "nullq.toml",
        "[policy]\nrewrite = [\n  \"<postmaster@host1.example.net> = user@example.net\",\n  \"<*@host1.example.net> = *@example.net\",\n]\n",
    );
    let server = Server::start(&["--config", cfg.to_str().expect("utf8")]);
    let msg = "From: \"Jason Mader\" <jason@host1.example.net>\nTo: postmaster@host1.example.net\nCc: root@host1.example.net, friend@example.org\nReply-To: jason@host1.example.net\nSubject: Hello!\n\nMail to jason@host1.example.net stays as written in the body.\n";
    let answer = send(
        server.addr,
        "jason@host1.example.net",
        &[
            "postmaster@host1.example.net",
            "root@host1.example.net",
            "friend@example.org",
        ],
        msg,
    );
    assert!(is_k(&answer), "{answer}");
    let maildir = server.data.join("delivered");
    assert!(
        wait_for(T, || maildir_messages(&maildir).len() == 1),
        "{}",
        server.log_text()
    );
    let got = &maildir_messages(&maildir)[0];
    assert!(
        got.starts_with("Return-Path: <jason@example.net>\nDelivered-To: user@example.net\nDelivered-To: root@example.net\nDelivered-To: friend@example.org\n"),
        "{got}"
    );
    for want in [
        "\nFrom: \"Jason Mader\" <jason@example.net>\n",
        "\nTo: user@example.net\n",
        "\nCc: root@example.net, friend@example.org\n",
        "\nReply-To: jason@example.net\n",
        "\nSubject: Hello!\n",
        "Mail to jason@host1.example.net stays as written in the body.",
    ] {
        assert!(got.contains(want), "{want:?} missing from:\n{got}");
    }
    assert!(
        !got[..got.find("\n\n").unwrap_or(0)].contains("@host1.example.net>\n"),
        "{got}"
    );
}

#[test]
fn a_sender_outside_the_allowed_patterns_gets_d_and_nothing_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "nullq.toml",
        "[policy]\nsenders = [\"*@example.net\", \"*@host1.example.net\"]\nheader_from = true\n",
    );
    let server = Server::start(&["--config", cfg.to_str().expect("utf8"), "--deliver", "none"]);
    let ok = "From: root@host1.example.net\nSubject: cron\n\nok\n";
    assert!(is_k(&send(
        server.addr,
        "root@host1.example.net",
        &["postmaster@example.net"],
        ok
    )));
    let answer = send(
        server.addr,
        "mallory@evil.example.org",
        &["postmaster@example.net"],
        ok,
    );
    assert!(
        answer.contains(":D")
            && answer.contains("#5.7.1")
            && answer.contains("mallory@evil.example.org"),
        "{answer}"
    );
    // Envelope allowed, header From not.
    let forged = "From: boss@evil.example.org\nSubject: wire money\n\n!\n";
    let answer = send(
        server.addr,
        "jason@example.net",
        &["postmaster@example.net"],
        forged,
    );
    assert!(
        answer.contains(":D") && answer.contains("From:"),
        "{answer}"
    );
    assert_eq!(
        server.queued().len(),
        1,
        "only the allowed message is queued"
    );
    assert!(files(&server.data.join("tmp")).is_empty());
}

#[test]
fn relay_control_by_local_domains_and_relayclient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "nullq.toml",
        "[policy]\nlocal_domains = [\"example.net\"]\nrewrite = [\"<*@host1.example.net> = *@example.net\"]\n",
    );
    let server = Server::start(&["--config", cfg.to_str().expect("utf8"), "--deliver", "none"]);
    let m = "Subject: x\n\ny\n";
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net", "c@mail.example.net"],
        m
    )));
    // Rewritten into a local domain: allowed.
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["root@host1.example.net"],
        m
    )));
    let answer = send(
        server.addr,
        "a@example.net",
        &["b@example.net", "x@elsewhere.example.org"],
        m,
    );
    assert!(
        answer.contains(":D") && answer.contains("relaying"),
        "{answer}"
    );
    assert_eq!(server.queued().len(), 2);

    // The same policy, with a tcprules rule that marks this client as a relay.
    let rules = config(
        dir.path(),
        "rules.txt",
        "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n",
    );
    let relay = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        "none",
        "--rules",
        rules.to_str().expect("utf8"),
    ]);
    assert!(is_k(&send(
        relay.addr,
        "a@example.net",
        &["x@elsewhere.example.org"],
        m
    )));
}
