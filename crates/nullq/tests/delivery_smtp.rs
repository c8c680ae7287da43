//! `--deliver smtp://...` against real peers: Postfix's smtp-sink (every message arrives with its
//! envelope; the sink down for a while, then back: each message arrives once), and a private
//! Postfix instance (one recipient of three refused with 5xx: one bounce naming it, two
//! delivered; STARTTLS with a certificate made by openssl for the test).

mod common;
mod delivery_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, run_bounded, Server};
use delivery_common::{
    is_k, message, send, sink_messages, sink_rcpts, smtp_sink, wait_for, Postfix,
};

const T: Duration = Duration::from_secs(60);

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("nullq.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn subject(m: &str) -> String {
    m.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn smtp_sink_receives_every_message_with_its_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dump = dir.path().join("dump");
    // -v shows the conversation, so the test can see AUTH.
    std::fs::create_dir_all(&dump).expect("dump");
    let conversation = std::fs::File::create(dir.path().join("sink.out")).expect("file");
    let _ = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(&dump)
        .status();
    let _ = Command::new("chmod").arg("0755").arg(dir.path()).status();
    let mut sink = Command::new("smtp-sink")
        .args([
            "-v",
            "-u",
            "nobody",
            "-d",
            &format!("{}/%H%M%S.", dump.display()),
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("100")
        .stdin(Stdio::null())
        .stdout(conversation.try_clone().expect("dup"))
        .stderr(conversation)
        .spawn()
        .expect("smtp-sink");
    assert!(common::wait_listening(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(10)
    ));
    let cfg = config(
        dir.path(),
        "[delivery.smtp]\nusername = \"nullq\"\npassword = \"secret\"\nauth_without_tls = true\n",
    );
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{port}"),
    ]);
    let (status, _, err) = run_bounded(
        Command::new("qmqp-source").args([
            "-s",
            "5",
            "-m",
            "50",
            "-l",
            "1024",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
            &format!("127.0.0.1:{}", server.port()),
        ]),
        T,
    );
    assert_eq!(status, Some(0), "{err}");
    let dotted = "From: a@example.net\nSubject: dots\n\n.leading dot\n..two\n.\nend\n";
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net", "c@example.org"],
        dotted
    )));
    let ok = wait_for(T, || sink_messages(&dump).len() == 51);
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(
        ok,
        "sink has {}; log:\n{}",
        sink_messages(&dump).len(),
        server.log_text()
    );
    let all = sink_messages(&dump);
    let from_source: Vec<&String> = all
        .iter()
        .filter(|m| m.contains("X-Mail-Args: <jason@example.net>"))
        .collect();
    assert_eq!(from_source.len(), 50);
    for m in &from_source {
        assert_eq!(sink_rcpts(m), ["<postmaster@example.net>"]);
    }
    let two = all
        .iter()
        .find(|m| m.contains("X-Mail-Args: <a@example.net>"))
        .expect("two-recipient message");
    assert_eq!(sink_rcpts(two), ["<b@example.net>", "<c@example.org>"]);
    assert!(
        two.contains("\n.leading dot\n..two\n.\nend\n"),
        "dot-stuffing not undone:\n{two}"
    );
    assert!(wait_for(T, || server.queued().is_empty()));
    let conversation = std::fs::read_to_string(dir.path().join("sink.out")).unwrap_or_default();
    assert!(
        conversation.contains("AUTH PLAIN"),
        "no AUTH seen:\n{conversation}"
    );
    // Connections were reused: far fewer EHLOs than messages.
    let ehlos = conversation.matches("EHLO").count();
    assert!(ehlos < 40, "{ehlos} EHLOs for 51 messages");
}

#[test]
fn smarthost_down_then_back_every_message_arrives_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // Queue time runs 60 times faster: the 1-minute first retry comes after about a second.
    let cfg = config(dir.path(), "[delivery]\ntime_scale = 60\n");
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{port}"),
    ]);
    for i in 0..10 {
        assert!(is_k(&send(
            server.addr,
            "jason@example.net",
            &["bob@example.net"],
            &message(&format!("down-{i}"))
        )));
    }
    assert!(
        wait_for(T, || server.log_text().matches("deferred").count() >= 10),
        "{}",
        server.log_text()
    );
    assert_eq!(server.queued().len(), 10);
    let dump = dir.path().join("dump");
    let _sink = smtp_sink(port, &dump, &[]);
    assert!(
        wait_for(T, || sink_messages(&dump).len() >= 10),
        "{}",
        server.log_text()
    );
    assert!(wait_for(T, || server.queued().is_empty()));
    // Give any duplicate the time to show up, then count.
    std::thread::sleep(Duration::from_secs(3));
    let mut subjects: Vec<String> = sink_messages(&dump).iter().map(|m| subject(m)).collect();
    subjects.sort();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..10).map(|i| format!("down-{i}")).collect();
        w.sort();
        w
    };
    assert_eq!(subjects, want, "each message exactly once");
    assert!(
        server.log_text().contains("Connection refused"),
        "{}",
        server.log_text()
    );
}

#[test]
fn one_refused_recipient_of_three_gets_one_bounce_and_two_are_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink_port, pf_port) = (free_port(), free_port());
    let dump = dir.path().join("dump");
    let _sink = smtp_sink(sink_port, &dump, &[]);
    let postfix = Postfix::start(pf_port, sink_port, &["bad@example.net"], None);
    let server = Server::start(&["--deliver", &format!("smtp://127.0.0.1:{pf_port}")]);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["good1@example.net", "bad@example.net", "good2@example.net"],
        &message("one of three"),
    );
    assert!(is_k(&answer), "{answer}");
    let ok = wait_for(T, || sink_messages(&dump).len() >= 2);
    assert!(
        ok,
        "sink: {:?}\nnullq:\n{}\npostfix:\n{}",
        sink_messages(&dump),
        server.log_text(),
        postfix.log()
    );
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    let all = sink_messages(&dump);
    assert_eq!(all.len(), 2, "{all:#?}");
    let original = all
        .iter()
        .find(|m| subject(m) == "one of three")
        .expect("the message");
    assert_eq!(
        sink_rcpts(original),
        ["<good1@example.net>", "<good2@example.net>"]
    );
    let bounce = all
        .iter()
        .find(|m| m.contains("X-Mail-Args: <>"))
        .expect("one bounce from <>");
    assert_eq!(sink_rcpts(bounce), ["<jason@example.net>"]);
    for want in [
        "Final-Recipient: rfc822; bad@example.net",
        "Action: failed",
        "Status: 5.",
        "Recipient address rejected",
        "in reply to RCPT TO",
        "Subject: one of three",
        "multipart/report",
    ] {
        assert!(
            bounce.contains(want),
            "{want} missing from the bounce:\n{bounce}"
        );
    }
    assert!(!bounce.contains("good1@example.net"), "{bounce}");
}

#[test]
fn starttls_with_a_test_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = delivery_common::test_certificate(dir.path());
    let (sink_port, pf_port) = (free_port(), free_port());
    let dump = dir.path().join("dump");
    let _sink = smtp_sink(sink_port, &dump, &[]);
    let postfix = Postfix::start(pf_port, sink_port, &[], Some((&cert, &key)));
    let cfg = config(
        dir.path(),
        &format!(
            "[delivery.smtp]\nstarttls = \"required\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    );
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{pf_port}"),
    ]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("over tls")
    )));
    assert!(
        wait_for(T, || sink_messages(&dump)
            .iter()
            .any(|m| subject(m) == "over tls")),
        "nullq:\n{}\npostfix:\n{}",
        server.log_text(),
        postfix.log()
    );
    let relayed = sink_messages(&dump)
        .into_iter()
        .find(|m| subject(m) == "over tls")
        .unwrap_or_default();
    // Postfix's Received line says how the message came in.
    assert!(relayed.contains("(using TLS"), "no TLS in:\n{relayed}");

    // Required TLS and a peer without STARTTLS (smtp-sink): deferred, never sent in clear.
    let plain = free_port();
    let dump2 = dir.path().join("dump2");
    let _plain_sink = smtp_sink(plain, &dump2, &[]);
    let server2 = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{plain}"),
    ]);
    assert!(is_k(&send(
        server2.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("must not go")
    )));
    assert!(
        wait_for(T, || server2.log_text().contains("offers no STARTTLS")),
        "{}",
        server2.log_text()
    );
    assert!(sink_messages(&dump2).is_empty());

    // Required TLS and a certificate we do not trust (no ca_file: the system's roots): deferred.
    let cfg3 = dir.path().join("untrusted.toml");
    std::fs::write(&cfg3, "[delivery.smtp]\nstarttls = \"required\"\n").expect("write");
    let server3 = Server::start(&[
        "--config",
        cfg3.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{pf_port}"),
    ]);
    assert!(is_k(&send(
        server3.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("untrusted")
    )));
    assert!(
        wait_for(T, || server3.log_text().contains("TLS handshake failed")),
        "{}",
        server3.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!sink_messages(&dump)
        .iter()
        .any(|m| subject(m) == "untrusted"));
}
