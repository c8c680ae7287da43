//! The client's `qmqps://` lines against a real `nullq serve --tls-listen`: a server whose
//! certificate does not verify fails over to the next line, with rustls's reason when it was
//! the last; no TLS file is read while no qmqps line is listed; qmail-showctl shows the files.

use std::time::Duration;

use crate::support::certs::Certs;
use crate::support::host::{run, Host};
use crate::support::server::Server;

const T: Duration = Duration::from_secs(60);

fn tls_server(certs: &Certs) -> Server {
    Server::start_tls(certs, &["--deliver", "none"])
}

fn sendmail(host: &Host) -> std::process::Output {
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-f", "jason@example.net", "postmaster@example.net"]);
    run(cmd, b"Subject: failover\n\nhello\n", T)
}

#[test]
fn a_server_certificate_from_another_ca_fails_over_to_the_next_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path());
    let server = tls_server(&certs);
    let tls = server.tls_addr().expect("tls address");
    let host = Host::new();
    host.control("tlscafile", &certs.other_ca.display().to_string());

    // Alone: the reason is in the error line, a temporary failure.
    host.control("qmqpservers", &format!("qmqps://{tls}"));
    let out = sendmail(&host);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(111), "{stderr}");
    assert!(
        stderr.contains(&format!("qmqps://{tls}"))
            && stderr.contains("TLS handshake")
            && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(server.queued().is_empty());

    // Followed by the plain listener: delivered there.
    host.control("qmqpservers", &format!("qmqps://{tls}\n{}", server.addr));
    let out = sendmail(&host);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.queued().len(), 1);
    let line = server
        .wait_log(T, |l| l.contains("answer=K"))
        .expect("session line");
    assert!(
        line.contains("tls=- "),
        "the plain listener took it: {line}"
    );

    // With the right CA, the TLS server takes it (listed alone: the host's memory of failed
    // servers now tries it after the plain one, which would take the message first).
    host.control("tlscafile", &certs.ca.display().to_string());
    host.control("qmqpservers", &format!("qmqps://{tls}"));
    let out = sendmail(&host);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server
        .wait_log(T, |l| l.contains("answer=K") && l.contains("tls=TLSv1.3/"))
        .is_some());
}

#[test]
fn plain_lines_never_read_the_tls_files() {
    let server = Server::start(&["--deliver", "none"]);
    let host = Host::new();
    host.servers(&[server.addr]);
    // Unusable TLS files: a plain-only list does not care.
    host.control("tlscafile", "/nonexistent/ca.pem");
    host.control("tlsclientcert", "/nonexistent/cert.pem");
    let out = sendmail(&host);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.queued().len(), 1);
}

#[test]
fn showctl_shows_the_tls_files_and_an_open_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::make(dir.path());
    let host = Host::new();
    host.control("qmqpservers", "qmqps://127.0.0.1\n127.0.0.1");
    let out = run(host.cmd("qmail-showctl"), b"", T);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("QMQP server: qmqps://127.0.0.1:7628."),
        "{text}"
    );
    assert!(
        text.contains("tlscafile: (Default.) Server certificates are checked against /etc/ssl/certs/ca-certificates.crt."),
        "{text}"
    );
    assert!(
        text.contains("tlsclientcert: (Default.) No client certificate."),
        "{text}"
    );
    host.control("tlscafile", &certs.ca.display().to_string());
    host.control("tlsclientcert", &certs.client_cert.display().to_string());
    host.control("tlsclientkey", &certs.client_key.display().to_string());
    std::fs::set_permissions(
        &certs.client_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let out = run(host.cmd("qmail-showctl"), b"", T);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "tlsclientkey: Client key is {}.",
            certs.client_key.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("mode 0644 lets group or others read"),
        "{text}"
    );
    assert!(
        text.contains("qmqps:// servers will fail for this user"),
        "{text}"
    );
    assert!(
        !text.contains("I have no idea what this file does"),
        "{text}"
    );
}
