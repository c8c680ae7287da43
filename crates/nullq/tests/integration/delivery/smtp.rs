//! `--deliver smtp://...` against real peers: Postfix's smtp-sink (every message arrives with its
//! envelope; the sink down for a while, then back: each message arrives once), and a private
//! Postfix instance (one recipient of three refused with 5xx: one bounce naming it, two
//! delivered; STARTTLS with a certificate made by openssl for the test).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::peers::{sink_rcpts, test_certificate, Postfix, Role, SmtpSink};
use crate::support::qmqp::{is_k, message, qmqp_source, send, Recorder};
use crate::support::server::Server;
use crate::support::{subject, wait_for, write_file, RefusedPort};

const T: Duration = Duration::from_secs(60);

fn config(dir: &Path, text: &str) -> PathBuf {
    write_file(dir, "nullq.toml", text)
}

/// Wait until the server's log shows that every message it has is settled: the queue is
/// empty, and nothing more can arrive at a sink.
fn drained(server: &Server) {
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
}

#[test]
fn smtp_sink_receives_every_message_with_its_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("dump");
    // -v shows the conversation, so the test can see AUTH.
    let output = dir.path().join("sink.out");
    let sink = SmtpSink::start(&dump, &["-v"], Some(&output));
    let cfg = config(
        dir.path(),
        "[delivery.smtp]\nusername = \"nullq\"\npassword = \"secret\"\nauth_without_tls = true\n",
    );
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://{}", sink.addr),
    ]);
    let (status, err) = qmqp_source(
        server.addr,
        &[
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
        ],
    );
    assert_eq!(status, Some(0), "{err}");
    let dotted = "From: a@example.net\nSubject: dots\n\n.leading dot\n..two\n.\nend\n";
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net", "c@example.org"],
        dotted
    )));
    // Every message settled (delivered, so the sink has it): the count is final.
    drained(&server);
    let all = sink.messages();
    sink.stop();
    assert_eq!(all.len(), 51, "log:\n{}", server.log_text());
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
    let conversation = std::fs::read_to_string(&output).unwrap_or_default();
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
    // The smarthost's port is held dead until the sink takes it over.
    let down = RefusedPort::new();
    // Queue time runs 60 times faster: the 1-minute first retry comes after about a second.
    let cfg = config(dir.path(), "[delivery]\ntime_scale = 60\n");
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://{}", down.addr),
    ]);
    for i in 0..10 {
        assert!(is_k(&send(
            server.addr,
            "jason@example.net",
            &["bob@example.net"],
            &message(&format!("down-{i}"))
        )));
    }
    let deferred = server.wait_log_count(T, 10, |l| l.contains("deferred"));
    assert_eq!(deferred.len(), 10, "{}", server.log_text());
    assert_eq!(server.queued().len(), 10);
    // The smarthost comes back on the same port: the held socket starts listening (no moment
    // in which another program could take the port) and relays to a real smtp-sink.
    let dump = dir.path().join("dump");
    let sink = SmtpSink::start(&dump, &[], None);
    let _back = Recorder::on(down.listen(), sink.addr);
    // smtp-sink writes each dump file before its 250 reply, and nullq removes a message only
    // after the 250: once the queue is empty, every delivery (and any duplicate) is on disk.
    drained(&server);
    let mut subjects: Vec<String> = sink.messages().iter().map(|m| subject(m)).collect();
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

/// The attack: a QMQP client's recipient `victim@example.net> NOTIFY=SUCCESS ORCPT=...` would
/// end the SMTP path and add DSN parameters of its own to our `RCPT TO`, and a sender
/// `a@example.net> AUTH=<x@y>` an AUTH to our `MAIL FROM`. Every address is written as
/// qmail-remote writes it: a local part that is not a dot-atom quoted, so a blank or `>` in it
/// stays inside the path (`jo smith@example.net`, an envelope's unquoted form of
/// `"jo smith"@example.net`, is delivered so too); an address that cannot be written so (its
/// domain holds `>` or a blank) is bounced with the reason and never sent.
#[test]
fn an_address_that_would_end_the_smtp_path_is_quoted_or_bounced_never_sent_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("dump");
    let output = dir.path().join("sink.out");
    let sink = SmtpSink::start(&dump, &["-v"], Some(&output));
    let server = Server::start(&["--deliver", &format!("smtp://{}", sink.addr)]);
    let in_local = "victim@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x@example.org";
    let in_domain = "victim@example.net> NOTIFY=SUCCESS";
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &[
            "ok@example.net",
            in_local,
            in_domain,
            "jo smith@example.net"
        ],
        &message("injected recipient")
    )));
    assert!(is_k(&send(
        server.addr,
        "a@example.net> AUTH=<x@example.org>",
        &["ok2@example.net"],
        &message("injected sender")
    )));
    // Settled: the first message and the bounce of its refused recipient are at the sink; the
    // second and its bounce (to an address SMTP cannot carry either) went nowhere.
    drained(&server);
    let all = sink.messages();
    sink.stop();
    let conversation = std::fs::read_to_string(&output).unwrap_or_default();
    let commands: Vec<&str> = conversation
        .lines()
        .filter_map(|l| l.split_once("smtp-sink: ").map(|(_, c)| c))
        .filter(|c| c.starts_with("RCPT") || c.starts_with("MAIL"))
        .collect();
    for c in &commands {
        // Whatever follows the path must be a parameter of ours (BODY=8BITMIME), never the
        // client's.
        let rest = c.rsplit_once('>').map_or("", |(_, r)| r).trim();
        assert!(
            rest.is_empty() || rest == "BODY=8BITMIME",
            "{c}\n{conversation}"
        );
        assert!(!c.contains("AUTH="), "{c}");
    }
    assert!(
        commands.contains(
            &"RCPT TO:<\"victim@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x\"@example.org>"
        ) && commands.contains(&"RCPT TO:<\"jo smith\"@example.net>")
            && !commands.iter().any(|c| c.ends_with("NOTIFY=SUCCESS>")),
        "{commands:#?}"
    );
    let original = all
        .iter()
        .find(|m| subject(m) == "injected recipient")
        .expect("the first message, to its good recipients");
    assert_eq!(sink_rcpts(original).len(), 3, "{original}");
    assert!(
        !all.iter().any(|m| subject(m) == "injected sender"),
        "{all:#?}"
    );
    let bounce = all
        .iter()
        .find(|m| m.contains("X-Mail-Args: <>") && sink_rcpts(m) == ["<jason@example.net>"])
        .expect("the bounce of the refused recipient");
    assert!(
        bounce.contains("cannot be written as an SMTP path") && bounce.contains("not sent"),
        "{bounce}"
    );
}

#[test]
fn one_refused_recipient_of_three_gets_one_bounce_and_two_are_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start(&dir.path().join("dump"), &[], None);
    let postfix = Postfix::start(Role::Smtpd {
        relay_port: sink.port(),
        reject: &["bad@example.net"],
        tls: None,
    });
    let server = Server::start(&["--deliver", &format!("smtp://{}", postfix.addr)]);
    let answer = send(
        server.addr,
        "jason@example.net",
        &["good1@example.net", "bad@example.net", "good2@example.net"],
        &message("one of three"),
    );
    assert!(is_k(&answer), "{answer}");
    // Settled: nullq's queue is empty (the message and its bounce handed to Postfix), then
    // Postfix's is (both relayed to the sink, which writes a dump before its 250).
    drained(&server);
    assert!(
        wait_for(T, || postfix
            .queue_json()
            .is_some_and(|q| q.trim().is_empty())
            && sink.messages().len() >= 2),
        "postfix queue: {:?}\npostfix:\n{}",
        postfix.queue_json(),
        postfix.log()
    );
    let all = sink.messages();
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
    let (ca, cert, key) = test_certificate(dir.path());
    let sink = SmtpSink::start(&dir.path().join("dump"), &[], None);
    let postfix = Postfix::start(Role::Smtpd {
        relay_port: sink.port(),
        reject: &[],
        tls: Some((&cert, &key)),
    });
    let pf_port = postfix.port();
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
        wait_for(T, || sink
            .messages()
            .iter()
            .any(|m| subject(m) == "over tls")),
        "nullq:\n{}\npostfix:\n{}",
        server.log_text(),
        postfix.log()
    );
    let relayed = sink
        .messages()
        .into_iter()
        .find(|m| subject(m) == "over tls")
        .unwrap_or_default();
    // Postfix's Received line says how the message came in.
    assert!(relayed.contains("(using TLS"), "no TLS in:\n{relayed}");

    // Required TLS and a peer without STARTTLS (smtp-sink): deferred, never sent in clear.
    let plain_sink = SmtpSink::start(&dir.path().join("dump2"), &[], None);
    let plain = plain_sink.port();
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
    assert!(plain_sink.messages().is_empty());

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
    // Refused at the handshake: still queued here, and nothing reached Postfix.
    assert_eq!(server3.queued().len(), 1);
    assert!(!sink.messages().iter().any(|m| subject(m) == "untrusted"));
}

/// Red-team finding 1 (server side): a smarthost that drips its greeting a byte every 100 ms
/// (each read in time) holds no delivery slot: the reply must be complete within
/// `timeout_secs` (2 here), then the message is deferred, not delivered, not bounced.
#[test]
fn a_smarthost_dripping_its_greeting_is_cut_at_timeout_secs() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let drip = std::thread::spawn(move || {
        // One connection (a retry later finds the port closed), until nullq hangs up.
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        for b in b"220-".iter().chain(std::iter::repeat(&b'x')) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let cfg = config(dir.path(), "[delivery.smtp]\ntimeout_secs = 2\n");
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{port}"),
    ]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        &message("dripped")
    )));
    let deferred = server.wait_log_count(T, 1, |l| l.contains("deferred"));
    assert_eq!(deferred.len(), 1, "{}", server.log_text());
    assert!(
        deferred[0].contains("waiting for a complete reply"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.queued().len(), 1, "kept for a retry");
    drip.join()
        .expect("the dripping smarthost ends when nullq hangs up");
}
