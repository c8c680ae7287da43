//! Issue 13, part 3: `smtp://` lines in `qmqpservers`, the client's SMTP relay of last resort,
//! against real peers: Postfix's smtp-sink (which dumps each message with its envelope, and
//! rejects commands when told: `-r` with 4xx, `-f` with 5xx) and a private Postfix smtpd (one
//! recipient refused; STARTTLS with a test CA).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::host::*;
use crate::support::peers::{sink_rcpts, test_certificate, Postfix, Role, SmtpSink};
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::{files, wait_for, RefusedPort};

const BOUND: Duration = Duration::from_secs(60);
/// A line starting with a dot (dot-stuffing) and a last line without its newline.
const MESSAGE: &[u8] =
    b"From: jason@example.net\nTo: bob@example.net\nSubject: via smtp\n\n.hidden dot\nlast line";
const ENVELOPE: &[u8] = b"Fjason@example.net\0Tbob@example.net\0Tcarol@example.net\0\0";

fn sink(host: &Host, extra: &[&str]) -> SmtpSink {
    let out = host.dir.path().join("sink.out");
    SmtpSink::start(&host.dir.path().join("dump"), extra, Some(&out))
}

fn sink_output(host: &Host) -> String {
    std::fs::read_to_string(host.dir.path().join("sink.out")).unwrap_or_default()
}

/// The one message the sink has, once it is complete.
fn one_message(sink: &SmtpSink, limit: Duration) -> String {
    complete_messages(sink, 1, limit).remove(0)
}

/// The `n` messages the sink has, once each is complete: smtp-sink creates its dump file
/// before it has the message, so a file may be there and still empty (the last line of
/// [`MESSAGE`] says it is whole).
fn complete_messages(sink: &SmtpSink, n: usize, limit: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let arrived = wait_for(limit, || {
        got = sink.messages();
        got.len() == n && got.iter().all(|m| m.contains("last line"))
    });
    assert!(arrived, "{n} whole message(s) at the sink: {got:?}");
    got
}

fn queue(host: &Host) -> (i32, String) {
    run_queue(host, "qmail-qmqpc", MESSAGE, ENVELOPE, BOUND)
}

#[test]
fn every_qmqp_server_down_the_smtp_line_delivers_with_its_envelope() {
    let host = Host::new();
    let down = RefusedPort::new();
    let sink = sink(&host, &[]);
    host.control(
        "qmqpservers",
        &format!("{}\nsmtp://127.0.0.1:{}", down.addr, sink.port()),
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let m = one_message(&sink, BOUND);
    assert!(m.contains("X-Mail-Args: <jason@example.net>"), "{m}");
    assert_eq!(
        sink_rcpts(&m),
        ["<bob@example.net>", "<carol@example.net>"],
        "{m}"
    );
    assert!(
        m.contains("X-Helo-Args: host1.example.net"),
        "EHLO with me: {m}"
    );
    assert!(m.contains("Subject: via smtp"), "{m}");
    assert!(
        m.contains("\n.hidden dot"),
        "dot-stuffed and unstuffed: {m}"
    );
    assert!(m.contains("\nlast line"), "{m}");

    // sendmail through the same lines: its exit 0, the recipient from the header.
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-oi", "-t"]);
    let out = run(
        cmd,
        b"To: dave@example.net\nSubject: two\n\nlast line\n",
        BOUND,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = Vec::new();
    assert!(wait_for(BOUND, || {
        got = sink.messages();
        got.iter().any(|m| m.contains("Subject: two"))
    }));
    let m = got
        .iter()
        .find(|m| m.contains("Subject: two"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sink_rcpts(&m), ["<dave@example.net>"], "{m}");
}

#[test]
fn a_4xx_is_temporary_the_next_line_or_the_fallback_queue_gets_it() {
    let host = Host::new();
    let sink = sink(&host, &["-r", "RCPT"]);
    let up = QmqpServer::start(Answer::Accept);
    let line = format!("smtp://127.0.0.1:{}", sink.port());
    host.control("qmqpservers", &format!("{line}\n{}", up.addr));
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "the QMQP line after it took it: {err}");
    assert_eq!(up.received().len(), 1, "{err}");

    // Alone: exit 71 (temporary), naming the refused recipients; nothing at the sink.
    host.control("qmqpservers", &line);
    let (code, err) = queue(&host);
    assert_eq!(code, 71, "{err}");
    assert!(
        err.contains("temporary failure") && err.contains("<bob@example.net> 450"),
        "{err}"
    );
    // With a fallback queue: kept there, exit 0.
    host.control("fallbackqueue", "fallback");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("deferred"), "{err}");
    assert_eq!(files(&host.home().join("fallback/new")).len(), 1, "{err}");
    assert!(
        sink.messages().is_empty(),
        "nothing delivered by the refusing sink"
    );

    // A 5xx to MAIL is permanent (31) and no later line is tried.
    let hard = SmtpSink::start(&host.dir.path().join("dump-hard"), &["-f", "MAIL"], None);
    let after = QmqpServer::start(Answer::Accept);
    host.control(
        "qmqpservers",
        &format!("smtp://127.0.0.1:{}\n{}", hard.port(), after.addr),
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("in reply to MAIL FROM"), "{err}");
    assert_eq!(after.connections(), 0, "a permanent refusal stops: {err}");
}

#[test]
fn one_recipient_of_two_refused_is_permanent_and_sent_to_nobody() {
    let host = Host::new();
    let sink = sink(&host, &[]);
    let postfix = Postfix::start(Role::Smtpd {
        relay_port: sink.port(),
        reject: &["carol@example.net"],
        tls: None,
    });
    let after = QmqpServer::start(Answer::Accept);
    host.control(
        "qmqpservers",
        &format!("smtp://127.0.0.1:{}\n{}", postfix.port(), after.addr),
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 31, "{err}\n{}", postfix.log());
    assert!(
        err.contains("1 of 2 recipient(s) refused, so the message was sent to nobody")
            && err.contains("<carol@example.net> 554"),
        "the refused recipient is named: {err}"
    );
    assert!(
        !err.contains("<bob@example.net>"),
        "bob was accepted: {err}"
    );
    assert_eq!(after.connections(), 0, "no other line tried: {err}");
    // The transaction was reset: Postfix queued nothing (the queue is read after the client
    // has finished, so a message it had taken would be there or at the sink).
    assert_eq!(
        postfix.queue_json().as_deref(),
        Some(""),
        "{}",
        postfix.log()
    );
    assert!(sink.messages().is_empty());

    // Through sendmail: the MUA sees 100 (permanent) and the reason.
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-oi", "bob@example.net", "carol@example.net"]);
    let out = run(cmd, b"Subject: x\n\nbody\n", BOUND);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{err}");
    assert!(err.contains("<carol@example.net>"), "{err}");
}

#[test]
fn starttls_required_against_a_sink_without_tls_is_temporary_and_says_why() {
    let host = Host::new();
    let sink = sink(&host, &[]);
    host.control(
        "qmqpservers",
        &format!("smtp://127.0.0.1:{}?starttls=required", sink.port()),
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 71, "{err}");
    assert!(
        err.contains("does not offer STARTTLS, which the line requires"),
        "{err}"
    );
    assert!(sink.messages().is_empty(), "nothing sent in clear");
}

#[test]
fn starttls_with_postfix_verified_opportunistic_and_a_wrong_ca() {
    let host = Host::new();
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_certificate(certs.path());
    let sink = sink(&host, &[]);
    let postfix = Postfix::start(Role::Smtpd {
        relay_port: sink.port(),
        reject: &[],
        tls: Some((&cert, &key)),
    });
    let line = format!("smtp://127.0.0.1:{}", postfix.port());

    // Required, verified against control/tlscafile (here: the path of the test CA).
    host.control("tlscafile", &ca.display().to_string());
    host.control("qmqpservers", &format!("{line}?starttls=required"));
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}\n{}", postfix.log());
    let m = one_message(&sink, BOUND);
    assert!(m.contains("(using TLS"), "Postfix's Received says TLS: {m}");

    // Required with a CA that did not sign the certificate (the system's bundle): 74, the
    // reason given, nothing sent.
    std::fs::remove_file(host.home().join("control/tlscafile")).expect("rm");
    let (code, err) = queue(&host);
    assert_eq!(code, 74, "{err}");
    assert!(
        err.contains("TLS handshake failed") && err.contains("certificate"),
        "{err}"
    );

    // Opportunistic (the default): encrypted without verifying.
    host.control("qmqpservers", &line);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let got = complete_messages(&sink, 2, BOUND);
    assert!(got.iter().all(|m| m.contains("(using TLS")), "{got:?}");
}

#[test]
fn an_auth_file_others_can_read_is_not_used_and_said_so() {
    let host = Host::new();
    let sink = sink(&host, &["-v"]);
    host.control("qmqpservers", &format!("smtp://127.0.0.1:{}", sink.port()));
    let auth = host.home().join("control/smtpauth");
    std::fs::write(&auth, "* jason s3cret\n").expect("smtpauth");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "sent without AUTH: {err}");
    assert!(
        err.contains("warning") && err.contains("readable by group or others (mode 0644)"),
        "{err}"
    );
    one_message(&sink, BOUND);
    let conversation = sink_output(&host);
    assert!(
        !conversation.contains("AUTH "),
        "no AUTH sent: {conversation}"
    );
    assert!(!conversation.contains("s3cret"), "{conversation}");

    // A safe file, but the sink offers no STARTTLS: the password is never sent in clear.
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let conversation = sink_output(&host);
    assert!(!conversation.contains("AUTH "), "{conversation}");

    // qmail-showctl says which it is.
    let out = run(host.cmd("qmail-showctl"), b"", BOUND);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("smtp://127.0.0.1:{}", sink.port())),
        "{text}"
    );
    assert!(
        text.contains("smtpauth: usable, 1 credential line(s)"),
        "{text}"
    );
}

/// Red-team finding 4: an address SMTP cannot carry (`>` and a blank that would add ESMTP
/// parameters) fails the `smtp://` line only: the QMQP line after it takes the message, the
/// sink sees nothing, the line is not remembered as a failed server; alone it is 31. (One with
/// a CR is refused before any line: no server takes it.)
#[test]
fn an_address_smtp_cannot_carry_skips_the_smtp_line_only() {
    let host = Host::new();
    let sink = sink(&host, &[]);
    let up = QmqpServer::start(Answer::Accept);
    let line = format!("smtp://127.0.0.1:{}", sink.port());
    host.control("qmqpservers", &format!("{line}\n{}", up.addr));
    let envelopes: [&[u8]; 2] = [
        b"Fjason@example.net\0Tbob@example.net> NOTIFY=NEVER\0\0",
        b"Fjason@example.net> AUTH=<x@y>\0Tbob@example.net\0\0",
    ];
    for (i, envelope) in envelopes.iter().enumerate() {
        let (code, err) = run_queue(&host, "qmail-qmqpc", MESSAGE, envelope, BOUND);
        assert_eq!(code, 0, "the QMQP line took it: {err}");
        assert_eq!(up.received().len(), i + 1, "{err}");
    }
    // A CR (or LF, or NUL) no server takes either: refused before any line is tried.
    let cr = b"Fjason@example.net\0Tbob@example.net\rRCPT TO:<eve@example.org\0\0";
    let (code, err) = run_queue(&host, "qmail-qmqpc", MESSAGE, cr, BOUND);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("contains a control character"), "{err}");
    assert_eq!(up.received().len(), 2, "{err}");
    let memory = std::fs::read_to_string(host.memory_file()).unwrap_or_default();
    assert!(
        !memory.contains(&sink.port().to_string()),
        "the smtp:// line is no failed server: {memory}"
    );
    assert!(sink.messages().is_empty(), "nothing at the sink");

    // Alone: 31, and nothing sent.
    host.control("qmqpservers", &line);
    let (code, err) = run_queue(&host, "qmail-qmqpc", MESSAGE, envelopes[0], BOUND);
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains("not sent by SMTP") && err.contains("would end the SMTP path"),
        "{err}"
    );
    // Before a QMQP line that is down: that line's failure (73), not 31.
    let down = RefusedPort::new();
    host.control("qmqpservers", &format!("{}\n{line}", down.addr));
    let (code, err) = run_queue(&host, "qmail-qmqpc", MESSAGE, envelopes[0], BOUND);
    assert_eq!(code, 73, "{err}");
    assert!(sink.messages().is_empty(), "nothing at the sink");
}

/// Where the hostile server of [`dripping_server`] starts dripping.
#[derive(Clone, Copy, Debug)]
enum Drip {
    /// Its greeting, a byte at a time, never ended.
    Greeting,
    /// Its reply after the data.
    AfterData,
}

/// A hostile SMTP server on 127.0.0.1 (port 0, the bound port returned): one connection, a
/// normal conversation up to `drip`, then one byte every 100 ms of a reply that never ends,
/// until the client hangs up (then the thread ends).
fn dripping_server(drip: Drip) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        let mut out = s.try_clone().expect("clone");
        let endless = || b"250-".iter().chain(std::iter::repeat(&b'x')).copied();
        let drip_on = |out: &mut std::net::TcpStream| {
            for b in endless() {
                if out.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        if matches!(drip, Drip::Greeting) {
            return drip_on(&mut out);
        }
        let _ = out.write_all(b"220 hostile ESMTP\r\n");
        let mut lines = BufReader::new(s);
        let mut line = String::new();
        let mut in_data = false;
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            let reply: &[u8] = match (in_data, line.as_str()) {
                (true, ".\r\n") => return drip_on(&mut out),
                (true, _) => b"",
                (false, l) if l.starts_with("DATA") => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                (false, l) if l.starts_with("QUIT") => return,
                (false, _) => b"250 ok\r\n",
            };
            if out.write_all(reply).is_err() {
                return;
            }
            line.clear();
        }
    });
    (port, thread)
}

/// Red-team finding 1: a server that drips its replies a byte at a time (each read in time)
/// no longer holds the client: each reply must be complete within timeoutremote (2 s here),
/// the greeting as the reply after the data; the conversation is broken (74), nothing else
/// decided, and the client is done long before the drip would end (never).
#[test]
fn a_server_dripping_a_reply_is_cut_at_the_remote_timeout() {
    for drip in [Drip::Greeting, Drip::AfterData] {
        let host = Host::new();
        let (port, server) = dripping_server(drip);
        host.control("qmqpservers", &format!("smtp://127.0.0.1:{port}"));
        host.control("timeoutremote", "2");
        let started = std::time::Instant::now();
        let (code, err) = queue(&host);
        assert_eq!(code, 74, "{drip:?}: {err}");
        assert!(
            err.contains("no complete reply within 2s"),
            "{drip:?}: {err}"
        );
        // The bound that applies is timeoutremote per reply; BOUND is the harness's limit.
        assert!(started.elapsed() < BOUND, "{drip:?}");
        server
            .join()
            .expect("the hostile server ends when the client hangs up");
    }
}

/// A TLS SMTP server on 127.0.0.1 (port 0, the bound port returned) that offers STARTTLS
/// and, after it, AUTH PLAIN LOGIN, takes anything, and records every command line of one
/// conversation (the thread's result, when the client has said QUIT or hung up).
fn tls_server_offering_auth(
    cert: &Path,
    key: &Path,
) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let mut said = Vec::new();
        let Ok((mut tcp, _)) = listener.accept() else {
            return said;
        };
        let _ = tcp.set_read_timeout(Some(BOUND));
        let _ = tcp.write_all(b"220 tls ESMTP\r\n");
        let mut plain = BufReader::new(tcp.try_clone().expect("clone"));
        let mut line = String::new();
        while plain.read_line(&mut line).is_ok_and(|n| n > 0) {
            said.push(line.trim_end().to_owned());
            let reply: &[u8] = if line.starts_with("STARTTLS") {
                b"220 go ahead\r\n"
            } else {
                b"250-tls\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
            };
            if tcp.write_all(reply).is_err() {
                return said;
            }
            if line.starts_with("STARTTLS") {
                break;
            }
            line.clear();
        }
        let Ok(conn) = rustls::ServerConnection::new(config) else {
            return said;
        };
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut in_data = false;
        line.clear();
        while tls.read_line(&mut line).is_ok_and(|n| n > 0) {
            let reply: &[u8] = match (in_data, line.as_str()) {
                (true, ".\r\n") => {
                    in_data = false;
                    b"250 queued\r\n"
                }
                (true, _) => b"",
                (false, l) => {
                    said.push(l.trim_end().to_owned());
                    match l.get(..4).unwrap_or_default().to_ascii_uppercase().as_str() {
                        "EHLO" => b"250-tls\r\n250 AUTH PLAIN LOGIN\r\n",
                        "AUTH" => b"235 authenticated\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = tls.get_mut().write_all(b"221 bye\r\n");
                            return said;
                        }
                        _ => b"250 ok\r\n",
                    }
                }
            };
            if !reply.is_empty() && tls.get_mut().write_all(reply).is_err() {
                return said;
            }
            line.clear();
        }
        said
    });
    (port, thread)
}

/// Red-team finding 3: opportunistic STARTTLS does not verify the certificate, so a man in
/// the middle could present any: the credentials of `smtpauth` are not sent there, only on a
/// `?starttls=required` line whose certificate verified (here against the test CA).
#[test]
fn credentials_go_only_over_a_verified_certificate() {
    let host = Host::new();
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_certificate(certs.path());
    let auth = host.home().join("control/smtpauth");
    std::fs::write(&auth, "* jason s3cret\n").expect("smtpauth");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // Opportunistic: TLS, and no AUTH.
    let (port, server) = tls_server_offering_auth(&cert, &key);
    host.control("qmqpservers", &format!("smtp://127.0.0.1:{port}"));
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "sent without AUTH: {err}");
    let said = server.join().expect("server");
    assert!(said.iter().any(|l| l == "STARTTLS"), "{said:?}");
    assert!(said.iter().any(|l| l.starts_with("MAIL FROM:")), "{said:?}");
    assert!(
        !said
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "no AUTH over an unverified certificate: {said:?}"
    );

    // Required, verified against the test CA: AUTH is sent.
    let (port, server) = tls_server_offering_auth(&cert, &key);
    host.control("tlscafile", &ca.display().to_string());
    host.control(
        "qmqpservers",
        &format!("smtp://127.0.0.1:{port}?starttls=required"),
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let said = server.join().expect("server");
    assert!(
        said.iter().any(|l| l.starts_with("AUTH PLAIN ")),
        "AUTH over a verified certificate: {said:?}"
    );

    // qmail-showctl says where credentials go.
    let out = run(host.cmd("qmail-showctl"), b"", BOUND);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Credentials are sent only on ?starttls=required lines"),
        "{text}"
    );
}
