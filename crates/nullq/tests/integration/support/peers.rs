//! Real peers from Debian's packages, each on a loopback port it bound itself (port 0, found
//! through `/proc`): Postfix's `smtp-sink` and `qmqp-sink`, and a private Postfix instance in
//! a temporary directory (never the machine's /etc/postfix) acting as an SMTP relay or as a
//! QMQP server. Plus a test certificate authority made with openssl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{files, have, listening_port, require_root, sh, wait_for, Killed};

const START: Duration = Duration::from_secs(60);

/// Postfix's smtp-sink on 127.0.0.1, dumping each message to `dump/` as a file
/// (`X-Mail-Args:`, one `X-Rcpt-Args:` per recipient, then the message). Killed when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub dump: PathBuf,
    child: Killed,
}

impl SmtpSink {
    /// Start smtp-sink with `extra` options (e.g. `-v`), its stdout and stderr to `output`
    /// when given.
    pub fn start(dump: &Path, extra: &[&str], output: Option<&Path>) -> SmtpSink {
        assert!(
            have("/usr/sbin/smtp-sink"),
            "smtp-sink (Debian package postfix) is not installed; scripts/test installs it"
        );
        std::fs::create_dir_all(dump).expect("dump dir");
        // smtp-sink drops to -u's privileges after binding; that user must write the dump dir.
        let _ = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(dump)
            .status();
        if let Some(parent) = dump.parent() {
            // Search permission added, the mode kept (the parent may be a shared directory).
            let _ = Command::new("chmod").arg("a+x").arg(parent).status();
        }
        let template = format!("{}/%Y%m%d%H%M%S.", dump.display());
        let (out, err) = match output {
            Some(path) => {
                let f = std::fs::File::create(path).expect("sink output");
                (Stdio::from(f.try_clone().expect("dup")), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Killed::spawn(
            Command::new("/usr/sbin/smtp-sink")
                .args(["-u", "nobody", "-d", &template])
                .args(extra)
                .args(["127.0.0.1:0", "100"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        );
        let port = listening_port(child.pid(), START).expect("smtp-sink did not listen");
        SmtpSink {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dump: dump.to_path_buf(),
            child,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The messages dumped so far, as text.
    pub fn messages(&self) -> Vec<String> {
        sink_messages(&self.dump)
    }

    /// Stop the sink now (what it dumped stays).
    pub fn stop(self) {
        drop(self.child);
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

/// Postfix's qmqp-sink on 127.0.0.1 (accepts every request, stores nothing).
pub struct QmqpSink {
    pub addr: SocketAddr,
    _child: Killed,
}

impl QmqpSink {
    pub fn start() -> QmqpSink {
        assert!(
            have("/usr/sbin/qmqp-sink"),
            "qmqp-sink (Debian package postfix) is not installed; scripts/test installs it"
        );
        let child = Killed::spawn(
            Command::new("/usr/sbin/qmqp-sink")
                .args(["-4", "-c", "127.0.0.1:0", "10"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let port = listening_port(child.pid(), START).expect("qmqp-sink did not listen");
        QmqpSink {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }
}

/// What a private [`Postfix`] instance does.
pub enum Role<'a> {
    /// `smtpd`, refusing with 550 the recipients in `reject` and relaying everything it
    /// accepts to 127.0.0.1:`relay_port` (an smtp-sink); STARTTLS with `tls` (cert, key).
    Smtpd {
        relay_port: u16,
        reject: &'a [&'a str],
        tls: Option<(&'a Path, &'a Path)>,
    },
    /// `qmqpd` for loopback clients; mail for elsewhere is deferred (it never leaves).
    Qmqpd,
}

/// A private Postfix instance in a temporary directory under /var/tmp, on a loopback port of
/// its own choosing. Needs root and the postfix package. Stopped when dropped.
pub struct Postfix {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Postfix {
    pub fn start(role: Role) -> Postfix {
        require_root("a private Postfix instance");
        assert!(
            have("/usr/sbin/postfix"),
            "postfix is not installed; scripts/test installs it"
        );
        let tmp = tempfile::Builder::new()
            .prefix("nullq-postfix.")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let d = dir.display();
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).expect("conf");
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
             mynetworks = 127.0.0.0/8\n"
        );
        let service = match role {
            Role::Smtpd {
                relay_port,
                reject,
                tls,
            } => {
                let access: String = reject
                    .iter()
                    .map(|r| format!("{r} REJECT no such user here\n"))
                    .collect();
                std::fs::write(conf.join("access"), access).expect("access");
                main.push_str(&format!(
                    "relayhost = [127.0.0.1]:{relay_port}\n\
                     smtpd_recipient_restrictions = check_recipient_access texthash:{d}/conf/access, permit_mynetworks, reject\n\
                     smtpd_relay_restrictions = permit_mynetworks, reject\n\
                     smtp_tls_security_level = none\n"
                ));
                if let Some((cert, key)) = tls {
                    main.push_str(&format!(
                        "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\n\
                         smtpd_tls_loglevel = 1\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
                        cert.display(),
                        key.display()
                    ));
                }
                "smtpd"
            }
            Role::Qmqpd => {
                main.push_str(
                    "qmqpd_authorized_clients = 127.0.0.0/8\n\
                     defer_transports = smtp\n\
                     relayhost = [127.0.0.1]:9\n",
                );
                "qmqpd"
            }
        };
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        sh(&format!(
            "set -e; chmod 0755 {d}; install -d -o root -g root -m 0755 {d}/queue; \
             install -d -o postfix -g postfix -m 0700 {d}/data; \
             cp /etc/postfix/master.cf.proto {d}/conf/master.cf; \
             postconf -c {d}/conf -MX smtp/inet; postconf -c {d}/conf -F '*/*/chroot = n'; \
             postconf -c {d}/conf -M '127.0.0.1:0/inet = 127.0.0.1:0 inet n - n - - {service}'; \
             postfix -c {d}/conf check; postfix -c {d}/conf start"
        ));
        let mut postfix = Postfix {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            _tmp: tmp,
        };
        // The master process holds the listening socket; its pid file appears once it runs.
        let mut master = None;
        wait_for(START, || {
            master = postfix.master_pid();
            master.is_some()
        });
        let port = master.and_then(|pid| listening_port(pid, START));
        let Some(port) = port else {
            panic!("postfix did not listen:\n{}", postfix.log());
        };
        postfix.addr.set_port(port);
        postfix
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// `postqueue -j`: one JSON object a line, one per queued message; `None` when postqueue
    /// fails (so that a failure never reads as an empty queue).
    pub fn queue_json(&self) -> Option<String> {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("-j")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `postcat -q ID`: a queued message with its envelope.
    pub fn postcat(&self, id: &str) -> String {
        Command::new("postcat")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .args(["-q", id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let master = self.master_pid();
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("stop")
            .output();
        if let Some(pid) = master {
            // SAFETY: signal 0 only asks whether the process exists.
            let _ = wait_for(START, || unsafe { libc::kill(pid as libc::pid_t, 0) } != 0);
        }
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
