//! Helpers for the delivery tests (`delivery_*.rs`): sending QMQP requests, waiting for
//! deliveries, reading Maildirs, and real peers: Postfix's `smtp-sink` and a private Postfix
//! instance in a temporary directory (never the machine's /etc/postfix). Every wait is bounded.

#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nullq_proto::qmqp::encode_request;

/// Send one QMQP request; returns the answer as text (`Kok ...`, `D...`, `Z...`, or empty).
pub fn send(addr: SocketAddr, sender: &str, rcpts: &[&str], message: &str) -> String {
    let rcpts: Vec<Vec<u8>> = rcpts.iter().map(|r| r.as_bytes().to_vec()).collect();
    let request = encode_request(message.as_bytes(), sender.as_bytes(), &rcpts);
    let answer = crate::common::exchange(addr, &request, Duration::from_secs(20));
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether a QMQP answer is `K`.
pub fn is_k(answer: &str) -> bool {
    answer
        .split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with('K'))
}

/// Poll `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Files in `dir` (not recursive), sorted; empty if it does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The messages delivered into Maildir `dir` (its `new/`), as text.
pub fn maildir_messages(dir: &Path) -> Vec<String> {
    files(&dir.join("new"))
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

/// A test message with a unique subject.
pub fn message(subject: &str) -> String {
    format!("From: jason@example.net\nTo: bob@example.net\nSubject: {subject}\n\nHello world.\n")
}

/// A child process killed when dropped.
pub struct Peer {
    pub child: Child,
    pub name: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Postfix's smtp-sink on 127.0.0.1:`port`, dumping each message to `dump/` as a file
/// (`X-Mail-Args:`, one `X-Rcpt-Args:` per recipient, then the message). `extra` goes before the
/// address (e.g. `-f RCPT`).
pub fn smtp_sink(port: u16, dump: &Path, extra: &[&str]) -> Peer {
    std::fs::create_dir_all(dump).expect("dump dir");
    // smtp-sink drops to -u's privileges after binding; that user must write the dump dir.
    let _ = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(dump)
        .status();
    let chain = dump.parent().map(Path::to_path_buf).unwrap_or_default();
    let _ = Command::new("chmod").arg("0755").arg(&chain).status();
    let template = format!("{}/%Y%m%d%H%M%S.", dump.display());
    let child = Command::new("smtp-sink")
        .args(["-u", "nobody", "-d", &template])
        .args(extra)
        .arg(format!("127.0.0.1:{port}"))
        .arg("100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn smtp-sink (apt-get install postfix)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        crate::common::wait_listening(addr, Duration::from_secs(10)),
        "smtp-sink did not listen"
    );
    Peer {
        child,
        name: "smtp-sink".into(),
    }
}

/// The messages smtp-sink dumped into `dump`, as text.
pub fn sink_messages(dump: &Path) -> Vec<String> {
    files(dump)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
}

/// The `X-Rcpt-Args:` of a dumped message (its recipients, `<a@b>` form).
pub fn sink_rcpts(dumped: &str) -> Vec<String> {
    dumped
        .lines()
        .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
        .map(|a| {
            a.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("TO:")
                .to_owned()
        })
        .collect()
}

/// Run a shell command (bounded), panicking with its output if it fails.
pub fn sh(script: &str) -> String {
    let (status, out, err) = crate::common::run_bounded(
        Command::new("sh").args(["-c", script]),
        Duration::from_secs(120),
    );
    assert_eq!(status, Some(0), "{script}\nstdout: {out}\nstderr: {err}");
    out
}

/// A private Postfix instance in a temporary directory: `smtpd` on 127.0.0.1:`port`
/// (optionally with STARTTLS), refusing with 550 the recipients in `reject`, relaying
/// everything it accepts to 127.0.0.1:`relay_port` (an smtp-sink). Stopped when dropped.
pub struct Postfix {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Postfix {
    pub fn start(
        port: u16,
        relay_port: u16,
        reject: &[&str],
        tls: Option<(&Path, &Path)>,
    ) -> Postfix {
        let tmp = tempfile::Builder::new()
            .prefix("nullq-postfix.")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).expect("conf");
        let access: String = reject
            .iter()
            .map(|r| format!("{r} REJECT no such user here\n"))
            .collect();
        std::fs::write(conf.join("access"), access).expect("access");
        let mut main = format!(
            "compatibility_level = 3.6\n\
             config_directory = {d}/conf\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             syslog_name = postfix-nullq-test\n\
             maillog_file = {d}/maillog\n\
             myhostname = postfix-test.localdomain\n\
             mydestination =\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{relay_port}\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{d}/conf/access, permit_mynetworks, reject\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_tls_security_level = none\n",
            d = dir.display()
        );
        if let Some((cert, key)) = tls {
            main.push_str(&format!(
                "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        let d = dir.display();
        sh(&format!(
            "set -e; chmod 0755 {d} $(dirname {d}); install -d -o root -g root -m 0755 {d}/queue; \
             install -d -o postfix -g postfix -m 0700 {d}/data; \
             cp /etc/postfix/master.cf.proto {d}/conf/master.cf; \
             postconf -c {d}/conf -MX smtp/inet; postconf -c {d}/conf -F '*/*/chroot = n'; \
             postconf -c {d}/conf -M '127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd'; \
             postfix -c {d}/conf check; postfix -c {d}/conf start"
        ));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        assert!(
            crate::common::wait_listening(addr, Duration::from_secs(20)),
            "postfix did not listen"
        );
        Postfix { dir, _tmp: tmp }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let conf = self.dir.join("conf");
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("stop")
            .output();
        let pid_file = self.dir.join("queue/pid/master.pid");
        let _ = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                // SAFETY (test): signal 0 only checks whether the process exists.
                .is_none_or(|pid| unsafe { libc::kill(pid, 0) } != 0)
        });
    }
}

/// A test CA and a certificate it signed for 127.0.0.1 / localhost, made with openssl:
/// (CA certificate, server certificate, server key).
pub fn test_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let d = dir.display();
    sh(&format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=nullq-test-ca \
           -keyout ca.key -out ca.pem 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.pem 2>/dev/null; \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; \
         openssl x509 -req -in req.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out cert.pem 2>/dev/null; \
         chmod 0644 ca.pem cert.pem key.pem"
    ));
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}
