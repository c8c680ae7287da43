//! `nullq serve` under systemd: a socket passed by socket activation (the real
//! `systemd-socket-activate`, in a network namespace of the test's own, so that port 628 is
//! free without picking a port), and the notifications of `Type=notify` on a datagram socket
//! of the test (`READY=1` only once the listener accepts, `STOPPING=1`, `WATCHDOG=1`).

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{message, send};
use crate::support::server::{Server, LOG_LEVEL};
use crate::support::{nullq, require_root, run_bounded};

const T: Duration = Duration::from_secs(60);

#[test]
fn socket_activation_takes_messages_on_the_inherited_socket() {
    require_root("a network namespace (unshare -n, nsenter)");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut cmd = Command::new("unshare");
    // The server runs in a new network namespace; systemd-socket-activate binds 127.0.0.1:628
    // there, waits for the first connection and then execs nullq with the socket as fd 3
    // (LISTEN_FDS=1), as systemd does for nullq.socket.
    cmd.args(["-n", "sh", "-c"])
        .arg(r#"ip link set lo up && exec systemd-socket-activate -l 127.0.0.1:628 "$@""#)
        .arg("sh")
        .arg(nullq())
        .args(["serve", "--data"])
        .arg(&data)
        // Ignored with an inherited socket: proof that the socket came from systemd.
        .args(["--listen", "127.0.0.1:1", "--deliver", "none"])
        .args(["--log-level", LOG_LEVEL]);
    let server = Server::spawn_until(
        cmd,
        &data,
        &dir.path().join("log"),
        "Listening on 127.0.0.1:628 as 3",
    );
    // Postfix's qmqp-source, in the server's namespace: its first connection starts nullq.
    let (code, out, err) = run_bounded(
        Command::new("nsenter")
            .args(["-t", &server.pid().to_string(), "-n", "--"])
            .args(["qmqp-source", "-s", "2", "-m", "20", "127.0.0.1:628"]),
        T,
    );
    assert_eq!(code, Some(0), "{out}{err}\n{}", server.log_text());
    let ready = server
        .wait_log(T, |l| l.contains("nullq serve ready"))
        .expect("ready");
    assert!(ready.contains("listen=127.0.0.1:628"), "{ready}");
    assert!(
        server
            .wait_log(T, |l| l.contains(
                "socket activation: 1 listening socket(s) passed by systemd"
            ))
            .is_some(),
        "{}",
        server.log_text()
    );
    assert_eq!(
        server
            .wait_log_count(T, 20, |l| l.contains("answer=K"))
            .len(),
        20,
        "{}",
        server.log_text()
    );
    assert_eq!(server.queued().len(), 20);
}

/// Every datagram that arrives on `socket` within `limit`, until one contains `until`.
fn datagrams_until(socket: &UnixDatagram, until: &str, limit: Duration) -> Vec<String> {
    socket.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.contains(until);
        got.push(text);
        if done {
            break;
        }
    }
    got
}

#[test]
fn ready_comes_once_the_listener_accepts_then_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("notify socket");
    let data = dir.path().join("data");
    let mut cmd = Command::new(nullq());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args(["--log-level", LOG_LEVEL])
        .env("NOTIFY_SOCKET", &path)
        // 2 s: the runner sends WATCHDOG=1 every second.
        .env("WATCHDOG_USEC", "2000000");
    let mut server = Server::launch(cmd, &data, &dir.path().join("log"));
    let first = datagrams_until(&socket, "READY=1", T);
    let ready = first.last().expect("a notification");
    assert!(ready.contains("READY=1\n"), "{first:?}");
    assert!(
        ready.contains(&format!("STATUS=accepting QMQP on {}", server.addr)),
        "{ready}"
    );
    // READY=1 means the listener takes messages now.
    let answer = send(
        server.addr,
        "a@example.net",
        &["b@example.net"],
        &message("ready"),
    );
    assert!(answer.contains(":Kok"), "{answer}");
    // The keep-alives come from the delivery runner's loop.
    let pets = datagrams_until(&socket, "WATCHDOG=1", T);
    assert!(pets.iter().any(|d| d == "WATCHDOG=1\n"), "{pets:?}");
    server.signal(libc::SIGTERM);
    let last = datagrams_until(&socket, "STOPPING=1", T);
    assert!(last.iter().any(|d| d.contains("STOPPING=1")), "{last:?}");
    let status = server.terminate(T).expect("exits");
    assert_eq!(status.code(), Some(0));
}
