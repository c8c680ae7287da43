//! `nullq serve --tls-listen` beside the plain listener: a required client certificate (the
//! nullq client with and without one), the Received line and the policy class the certificate's
//! name selects, Postfix's qmqp-source on the plain listener of the same server, and the
//! certificates reloaded on SIGHUP. Certificates are made by openssl per test.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use nullq_spool::Spool;

use crate::support::certs::{Certs, CLIENT_NAME};
use crate::support::host::{run, Host};
use crate::support::qmqp::{qmqp_source, send};
use crate::support::server::Server;

const T: Duration = Duration::from_secs(60);

/// Every spooled message's bytes.
fn spooled(data: &Path) -> Vec<String> {
    let spool = Spool::attach(data).expect("attach");
    let mut out = Vec::new();
    for id in spool.list().expect("list") {
        let mut bytes = Vec::new();
        spool
            .message(&id)
            .expect("message")
            .read_to_end(&mut bytes)
            .expect("read");
        out.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    out
}

/// A receive-only server with a TLS listener requiring certificates from `certs.ca`, whose
/// policy lets only the class of the client certificate's name send from host1.example.net.
fn tls_server(dir: &Path, certs: &Certs) -> Server {
    let config = dir.join("nullq.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\nsenders = [\"*@example.net\"]\n\
             [[policy.clients]]\ntls_names = [\"{CLIENT_NAME}\"]\nsenders = [\"*@{CLIENT_NAME}\"]\n"
        ),
    )
    .expect("config");
    Server::start_tls(
        certs,
        &[
            "--deliver",
            "none",
            "--config",
            &config.display().to_string(),
            "--tls-client-ca",
            &certs.ca.display().to_string(),
        ],
    )
}

/// A null-client host sending to `qmqps://ADDR`, trusting `ca`, with the client certificate
/// when `with_cert`.
fn tls_host(server: &Server, ca: &Path, certs: &Certs, with_cert: bool) -> Host {
    let host = Host::new();
    let addr = server
        .tls_addr()
        .expect("the ready line names the TLS listener");
    host.control("qmqpservers", &format!("qmqps://{addr}"));
    host.control("tlscafile", &ca.display().to_string());
    if with_cert {
        host.control("tlsclientcert", &certs.client_cert.display().to_string());
        host.control("tlsclientkey", &certs.client_key.display().to_string());
    }
    host
}

fn sendmail(host: &Host, from: &str) -> std::process::Output {
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-f", from, "postmaster@example.net"]);
    run(cmd, b"Subject: over TLS\n\nhello\n", T)
}

#[test]
fn a_client_certificate_is_required_and_its_name_is_the_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path());
    let server = tls_server(dir.path(), &certs);

    // With the certificate: K, the message in the spool, TLS in the Received line, and the
    // sender allowed only to the class of the certificate's name.
    let host = tls_host(&server, &certs.ca, &certs, true);
    let out = sendmail(&host, &format!("jason@{CLIENT_NAME}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let messages = spooled(&server.data);
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert!(
        m.contains("Received: from unknown (127.0.0.1)\n  (using TLSv1.3 with cipher TLS13_"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "  (Client CN \"{CLIENT_NAME}\" (verified OK))\n  by mx.test with QMQPS; "
        )),
        "{m}"
    );
    let line = server
        .wait_log(T, |l| l.contains("answer=K") && l.contains("tls=TLSv1.3/"))
        .expect("the session's line");
    assert!(line.contains(&format!("/{CLIENT_NAME} ")), "{line}");

    // The same sender over the plain listener has no certificate name: the default class
    // refuses it. Postfix's qmqp-source with a default-class sender is taken there.
    let answer = send(
        server.addr,
        &format!("jason@{CLIENT_NAME}"),
        &["postmaster@example.net"],
        "Subject: plain\n\nx\n",
    );
    assert!(
        answer.contains(":D") && answer.contains("#5.7.1"),
        "{answer}"
    );
    let (status, err) = qmqp_source(
        server.addr,
        &[
            "-c",
            "-s",
            "2",
            "-m",
            "20",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
        ],
    );
    assert_eq!(status, Some(0), "qmqp-source: {err}");
    assert_eq!(spooled(&server.data).len(), 21);

    // Without a certificate: refused in the handshake, before any QMQP byte is read.
    let bare = tls_host(&server, &certs.ca, &certs, false);
    let out = sendmail(&bare, &format!("jason@{CLIENT_NAME}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(111), "stderr: {stderr}");
    assert!(
        stderr.contains("TLS") || stderr.contains("conversation failed"),
        "{stderr}"
    );
    let refused = server
        .wait_log(T, |l| l.contains("TLS handshake failed"))
        .unwrap_or_else(|| panic!("no handshake failure logged:\n{}", server.log_text()));
    assert!(
        refused.contains("answer=\"-\"") && refused.contains("peer sent no certificates"),
        "{refused}"
    );
    assert_eq!(spooled(&server.data).len(), 21, "nothing more was spooled");
    assert!(
        !server
            .log_text()
            .lines()
            .any(|l| l.contains("rcpts=") && l.contains("answer=D") && l.contains("tls=TLS")),
        "no TLS session read a request:\n{}",
        server.log_text()
    );
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path());
    let server = Server::start_tls(&certs, &["--deliver", "none"]);
    let addr = server.tls_addr().expect("tls address");
    assert!(Certs::served_subject(addr).ends_with("CN = localhost"));

    Certs::sign(dir.path(), "server", "renewed.example.net", "server.cnf");
    server.signal(libc::SIGHUP);
    server
        .wait_log(T, |l| l.contains("SIGHUP: TLS certificates reloaded"))
        .unwrap_or_else(|| panic!("no reload line:\n{}", server.log_text()));
    assert!(
        Certs::served_subject(addr).ends_with("CN = renewed.example.net"),
        "a new connection sees the new certificate"
    );

    std::fs::write(&certs.server_cert, "not a certificate\n").expect("garbage");
    server.signal(libc::SIGHUP);
    let line = server
        .wait_log(T, |l| l.contains("TLS certificates NOT reloaded"))
        .unwrap_or_else(|| panic!("no error line:\n{}", server.log_text()));
    assert!(
        line.contains("ERROR") && line.contains("tls.cert"),
        "{line}"
    );
    assert!(Certs::served_subject(addr).ends_with("CN = renewed.example.net"));
}

/// Over TLS (rustls fills the spare room `read_buf` hands it), messages around the read
/// buffer's sizes are stored byte for byte (a red-team test of 904c4c3).
#[test]
fn messages_of_every_size_are_stored_exactly_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path());
    let server = tls_server(dir.path(), &certs);
    let host = tls_host(&server, &certs.ca, &certs, true);
    let mut bodies = Vec::new();
    for (i, len) in [1usize, 400, 600, 8_000, 9_000, 17_000, 70_000, 300_000]
        .into_iter()
        .enumerate()
    {
        let mut body = String::new();
        let mut n = 0u64;
        while body.len() < len {
            n += 1;
            body.push_str(&format!(
                "{i}:{n}:{}\n",
                "abcdefghijklmnopqrstuvwxyz".repeat((n % 3) as usize)
            ));
        }
        let mut cmd = host.cmd("sendmail");
        cmd.args([
            "-f",
            &format!("jason@{CLIENT_NAME}"),
            "postmaster@example.net",
        ]);
        let text = format!("Subject: size {len}\n\n{body}");
        let out = run(cmd, text.as_bytes(), T);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bodies.push(body);
    }
    let messages = spooled(&server.data);
    assert_eq!(messages.len(), bodies.len());
    for body in &bodies {
        let hits = messages
            .iter()
            .filter(|m| m.ends_with(&format!("\n\n{body}")))
            .count();
        assert_eq!(
            hits,
            1,
            "a body of {} bytes stored exactly once",
            body.len()
        );
    }
}
