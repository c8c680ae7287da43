//! `nullq qmqpd` under the real ucspi-tcp `tcpserver`, with access rules compiled by the real
//! `tcprules`: the seed's migration path (`tcpserver -x /etc/qmqp.cdb ... cgp-qmqpd`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use nullq_proto::qmqp::encode_request;

use crate::support::qmqp::exchange;
use crate::support::server::{queued_files, tmp_files};
use crate::support::{nullq, Killed};

const T: Duration = Duration::from_secs(60);

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

/// `tcpserver -1 -x CDB -R -H -l mx.test 127.0.0.1 0 nullq qmqpd --data DATA`: tcpserver
/// binds a port of its choosing and `-1` makes it print the number once it listens.
fn tcpserver(cdb: &std::path::Path, data: &std::path::Path) -> (Killed, SocketAddr) {
    let mut child = Killed::spawn(
        Command::new("tcpserver")
            .arg("-1")
            .arg("-x")
            .arg(cdb)
            .args(["-R", "-H", "-l", "mx.test", "127.0.0.1", "0"])
            .arg(nullq())
            .args(["qmqpd", "--error-delay", "0", "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("tcpserver -1 printed {line:?}, not a port"));
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
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
    assert_eq!(tmp_files(&data), 0);
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
