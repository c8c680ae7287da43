//! The "must show": with `qmqpservers` naming a Postfix qmqpd on loopback,
//! `printf 'To: bob\nSubject: hi\n\nbody\n' | sendmail -oem -oi -t` exits 0 and Postfix's queue
//! holds the message for bob@DEFAULTHOST. A private Postfix instance (its own config and queue
//! under /var/tmp) is started for the test; it needs root and the Debian postfix package, and
//! the test fails without them (.ci/run installs them; CI runs as root).

mod client_support;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use client_support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A Postfix instance with only a QMQP listener; mail for elsewhere is deferred (never leaves).
struct PostfixQmqpd {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl PostfixQmqpd {
    fn start(port: u16) -> Result<PostfixQmqpd, String> {
        let tmp = tempfile::Builder::new()
            .prefix("nullq-client-postfix.")
            .tempdir_in("/var/tmp")
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        let d = dir.display();
        std::fs::create_dir_all(dir.join("conf")).map_err(|e| e.to_string())?;
        let main = format!(
            "compatibility_level = 3.6\n\
             config_directory = {d}/conf\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             syslog_name = postfix-nullq-client-test\n\
             maillog_file = {d}/maillog\n\
             myhostname = postfix-test.localdomain\n\
             mydestination =\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             qmqpd_authorized_clients = 127.0.0.0/8\n\
             defer_transports = smtp\n\
             relayhost = [127.0.0.1]:9\n"
        );
        std::fs::write(dir.join("conf/main.cf"), main).map_err(|e| e.to_string())?;
        sh(&format!(
            "set -e; chmod 0755 {d} $(dirname {d}); install -d -o root -g root -m 0755 {d}/queue; \
             install -d -o postfix -g postfix -m 0700 {d}/data; \
             cp /etc/postfix/master.cf.proto {d}/conf/master.cf; \
             postconf -c {d}/conf -MX smtp/inet; postconf -c {d}/conf -F '*/*/chroot = n'; \
             postconf -c {d}/conf -M '127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - qmqpd'; \
             postfix -c {d}/conf check; postfix -c {d}/conf start"
        ))?;
        let pf = PostfixQmqpd { dir, _tmp: tmp };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_for(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()) {
            return Err(format!("postfix did not listen:\n{}", pf.log()));
        }
        Ok(pf)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// `postqueue -j`: one JSON object a line, one per queued message.
    fn queue_json(&self) -> String {
        Command::new("postqueue")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("-j")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn postcat(&self, id: &str) -> String {
        Command::new("postcat")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .args(["-q", id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for PostfixQmqpd {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("stop")
            .output();
        let pid_file = self.dir.join("queue/pid/master.pid");
        let _ = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                // SAFETY: signal 0 only asks whether the process exists.
                .is_none_or(|pid| unsafe { libc::kill(pid, 0) } != 0)
        });
    }
}

#[test]
fn sendmail_t_into_postfix_qmqpd() {
    // SAFETY: geteuid has no preconditions.
    if !have("/usr/sbin/postfix") || unsafe { libc::geteuid() } != 0 {
        panic!("cannot run this test: needs root and the postfix package (.ci/run sets this up)");
    }
    let port = dead_port().port();
    let postfix = match PostfixQmqpd::start(port) {
        Ok(p) => p,
        Err(e) => panic!("postfix: {e}"),
    };
    let host = Host::new();
    host.control("qmqpservers", &format!("127.0.0.1:{port}"));
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
        json = postfix.queue_json();
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
