//! `nullq qmqpd` under the real ucspi-tcp `tcpserver`, with access rules compiled by the real
//! `tcprules`: the seed's migration path (`tcpserver -x /etc/qmqp.cdb ... cgp-qmqpd`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{exchange, free_port, nullq, queued_files, wait_listening};
use nullq_proto::qmqp::encode_request;

const T: Duration = Duration::from_secs(10);

/// Compile `rules` with the real tcprules into DIR/rules.cdb.
fn tcprules(dir: &std::path::Path, rules: &str) -> std::path::PathBuf {
    let cdb = dir.join("rules.cdb");
    let mut child = Command::new("tcprules")
        .arg(&cdb)
        .arg(dir.join("rules.tmp"))
        .stdin(Stdio::piped())
        .spawn()
        .expect("tcprules is installed (Debian package ucspi-tcp)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write rules");
    assert!(child.wait().expect("tcprules").success(), "tcprules failed");
    cdb
}

struct Tcpserver(std::process::Child);

impl Drop for Tcpserver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tcpserver -x CDB -R -H -l mx.test 127.0.0.1 PORT nullq qmqpd --data DATA`
fn tcpserver(cdb: &std::path::Path, data: &std::path::Path) -> (Tcpserver, std::net::SocketAddr) {
    let port = free_port();
    let child = Command::new("tcpserver")
        .arg("-x")
        .arg(cdb)
        .args(["-R", "-H", "-l", "mx.test", "127.0.0.1", &port.to_string()])
        .arg(nullq())
        .args(["qmqpd", "--error-delay", "0", "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpserver is installed (Debian package ucspi-tcp)");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let guard = Tcpserver(child);
    assert!(wait_listening(addr, T), "tcpserver did not listen");
    (guard, addr)
}

#[test]
fn allowed_clients_get_k_and_the_message_is_spooled() {
    let dir = tempfile::tempdir().expect("tmp");
    let cdb = tcprules(dir.path(), "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n");
    let data = dir.path().join("data");
    let (_server, addr) = tcpserver(&cdb, &data);
    let message = b"Subject: via tcpserver\n\nhello\n";
    let request = encode_request(
        message,
        b"jason@example.net",
        &[b"jason@example.net".to_vec()],
    );
    let answer = String::from_utf8_lossy(&exchange(addr, &request, T)).into_owned();
    assert!(answer.contains(":Kok"), "answer: {answer:?}");
    let files = queued_files(&data);
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(&files[0]).expect("read");
    let text = String::from_utf8_lossy(&stored);
    // TCPREMOTEIP and TCPLOCALHOST (-l) from tcpserver's environment.
    assert!(
        text.contains("Received: from unknown (127.0.0.1)\n  by mx.test with QMQP; "),
        "{text}"
    );
    assert!(text.contains("Subject: via tcpserver\n\nhello\n"));

    // The seed's example request, byte for byte.
    let seed = b"45:0:,17:jason@example.net,17:jason@example.net,,";
    let answer = String::from_utf8_lossy(&exchange(addr, seed, T)).into_owned();
    assert!(answer.contains(":Kok"), "answer: {answer:?}");
    assert_eq!(queued_files(&data).len(), 2);
    // Several sessions at once under tcpserver share the spool without stepping on each other.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let request = encode_request(
                format!("n: {i}\n").as_bytes(),
                b"a@b.c",
                &[b"d@e.f".to_vec()],
            );
            std::thread::spawn(move || exchange(addr, &request, T))
        })
        .collect();
    for t in threads {
        let a = t.join().expect("thread");
        assert!(String::from_utf8_lossy(&a).contains(":Kok"));
    }
    assert_eq!(queued_files(&data).len(), 10);
    assert_eq!(common::tmp_files(&data), 0);
}

#[test]
fn a_deny_rule_closes_the_connection_with_nothing_stored() {
    let dir = tempfile::tempdir().expect("tmp");
    let cdb = tcprules(dir.path(), "128.164.26.3:allow\n:deny\n");
    let data = dir.path().join("data");
    let (_server, addr) = tcpserver(&cdb, &data);
    let request = encode_request(
        b"x\n",
        b"jason@example.net",
        &[b"jason@example.net".to_vec()],
    );
    let answer = exchange(addr, &request, T);
    assert!(answer.is_empty(), "denied client got an answer: {answer:?}");
    assert!(queued_files(&data).is_empty());
}
