//! qmail-qmqpc / qmail-queue run as the real binary through its symlinks: failover, exit codes
//! by the last error, the fallback queue and `nullq flush`, a 50 MB message in bounded memory,
//! and Postfix's qmqp-sink as a server that is not ours.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::host::*;
use crate::support::peers::QmqpSink;
use crate::support::qmqp::{Answer, BlackHole, QmqpServer};
use crate::support::server::Server;
use crate::support::{wait_child, RefusedPort};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"From: jason@example.net\nTo: bob@example.net\nSubject: hi\n\nbody\n";
const ENVELOPE: &[u8] = b"Fjason@example.net\0Tbob@example.net\0Teve@example.net\0\0";

fn queue(host: &Host) -> (i32, String) {
    run_queue(host, "qmail-qmqpc", MESSAGE, ENVELOPE, LIMIT)
}

#[test]
fn first_server_down_second_up_delivers() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    let down = RefusedPort::new();
    host.servers(&[down.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, MESSAGE);
    assert_eq!(got[0].sender, b"jason@example.net");
    assert_eq!(
        got[0].recipients,
        vec![b"bob@example.net".to_vec(), b"eve@example.net".to_vec()]
    );
}

#[test]
fn qmail_queue_name_is_the_same_program() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let (code, err) = run_queue(&host, "qmail-queue", MESSAGE, ENVELOPE, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(up.received().len(), 1);
}

#[test]
fn every_server_answering_z_is_71_after_trying_each() {
    let host = Host::new();
    let a = QmqpServer::start(Answer::TempFail);
    let b = QmqpServer::start(Answer::TempFail);
    host.servers(&[a.addr, b.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 71, "{err}");
    assert_eq!(
        (a.connections(), b.connections()),
        (1, 1),
        "unlike qmail-qmqpc, Z moves on"
    );
    assert!(err.contains("try later"), "{err}");
}

#[test]
fn a_servers_answer_reaches_stderr_without_control_characters() {
    let host = Host::new();
    // Z with an escape sequence that would clear the operator's terminal, and a CR.
    let hostile = QmqpServer::start(Answer::Raw(b"17:Z\x1b[2Jcleared\rnow!,"));
    host.servers(&[hostile.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 71, "{err}");
    assert!(err.contains("?[2Jcleared?now!"), "{err:?}");
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
}

#[test]
fn z_then_k_delivers() {
    let host = Host::new();
    let a = QmqpServer::start(Answer::TempFail);
    let b = QmqpServer::start(Answer::Accept);
    host.servers(&[a.addr, b.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.received().len(), 1);
}

#[test]
fn every_server_down_is_73() {
    let host = Host::new();
    let (a, b) = (RefusedPort::new(), RefusedPort::new());
    host.servers(&[a.addr, b.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 73, "{err}");
}

#[test]
fn d_is_31_and_stops() {
    let host = Host::new();
    let a = QmqpServer::start(Answer::PermFail);
    let b = QmqpServer::start(Answer::Accept);
    host.servers(&[a.addr, b.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("go away"), "{err}");
    assert_eq!(
        b.connections(),
        0,
        "a permanent refusal is not retried elsewhere"
    );
}

/// A message far over `--databytes 1000` and over the largest request the server reads in any
/// case (databytes plus the largest envelope, about 1 MB), and more than socket buffers hold.
fn far_over_databytes() -> Vec<u8> {
    let mut m = b"From: jason@example.net\nSubject: big\n\n".to_vec();
    m.resize(16 * 1024 * 1024, b'x');
    m
}

#[test]
fn qmail_qmqpc_over_databytes_is_31() {
    let host = Host::new();
    let server = Server::start(&["--deliver", "none", "--databytes", "1000"]);
    let after = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr, after.addr]);
    host.control("fallbackqueue", "fallback");
    let (code, err) = run_queue(&host, "qmail-qmqpc", &far_over_databytes(), ENVELOPE, LIMIT);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("over the size limit of 1000 bytes"), "{err}");
    assert_eq!(after.connections(), 0, "a D is not retried elsewhere");
    assert!(
        crate::support::files(&host.home().join("fallback/new")).is_empty(),
        "a D-refused message is not queued"
    );
    assert!(server.queued().is_empty());
}

#[test]
fn qmail_qmqpc_reads_the_d_of_a_server_that_stopped_reading() {
    // Past its drain budget (here: the least it can be, the largest request its limits allow)
    // the server answers D and closes without reading on: this client's writes fail with a
    // reset or a broken pipe, and the D that arrived before it is still there to be read.
    let host = Host::new();
    let server = Server::start(&[
        "--deliver",
        "none",
        "--databytes",
        "1000",
        "--drain-bytes",
        "1",
    ]);
    host.servers(&[server.addr]);
    let (code, err) = run_queue(&host, "qmail-qmqpc", &far_over_databytes(), ENVELOPE, LIMIT);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("over the size limit of 1000 bytes"), "{err}");
    assert!(
        server
            .wait_log(LIMIT, |l| l.contains("nullq::session")
                && l.contains("answer=D "))
            .is_some(),
        "the server answered D: {}",
        server.log_text()
    );
}

#[test]
fn black_hole_times_out_and_moves_on() {
    let host = Host::new();
    let hole = BlackHole::start();
    let up = QmqpServer::start(Answer::Accept);
    // Long enough for the good server (a thread of this test binary) on a loaded machine.
    host.control("timeoutremote", "5");
    host.servers(&[hole.addr, up.addr]);
    let start = Instant::now();
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(up.received().len(), 1);
}

#[test]
fn black_hole_alone_is_74() {
    let host = Host::new();
    let hole = BlackHole::start();
    host.control("timeoutremote", "1");
    host.servers(&[hole.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 74, "{err}");
}

/// A listener whose accept queue is full: Linux drops the SYN, so connecting times out.
fn full_backlog() -> Option<(SocketAddr, Vec<std::net::TcpStream>, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we create and then own; the sockaddr is a
    // zero-initialised sockaddr_in that we fill in and pass with its true size.
    unsafe {
        // Close-on-exec: a program another test starts meanwhile must not inherit it.
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0
            || libc::listen(fd, 0) != 0
        {
            return None;
        }
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        if libc::getsockname(fd, (&mut got as *mut libc::sockaddr_in).cast(), &mut glen) != 0 {
            return None;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(got.sin_port)));
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                fillers.push(s);
            }
        }
        Some((addr, fillers, owned))
    }
}

#[test]
fn connect_timeout_is_72() {
    let Some((addr, _fillers, _listener)) = full_backlog() else {
        panic!("cannot run this test: could not build a full listen queue on loopback");
    };
    // Is the queue really full here? If a fresh connect still succeeds, the kernel does not
    // drop SYNs on this machine and the case cannot be made on loopback.
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        panic!("cannot run this test: this kernel completes connections to a full listen queue, so a connect timeout cannot be made on loopback");
    }
    let host = Host::new();
    host.control("timeoutconnect", "1");
    host.servers(&[addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 72, "{err}");
}

#[test]
fn no_servers_is_55() {
    let host = Host::new();
    let (code, _) = queue(&host);
    assert_eq!(code, 55);
    host.control("qmqpservers", "# only a comment");
    let (code, _) = queue(&host);
    assert_eq!(code, 55);
}

#[test]
fn envelope_errors() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let (code, _) = run_queue(&host, "qmail-qmqpc", MESSAGE, b"Xjason\0Tbob\0\0", LIMIT);
    assert_eq!(code, 91, "not F first");
    let (code, _) = run_queue(&host, "qmail-qmqpc", MESSAGE, b"Fjason\0Tbob\0", LIMIT);
    assert_eq!(
        code, 91,
        "cut short: qmail-qmqpc's code, not qmail-queue's 54"
    );
    assert_eq!(up.connections(), 0, "nothing is sent for a bad envelope");
    // What follows the final NUL is not read, as in qmail-qmqpc (qmqpc_cases::).
    let (code, err) = run_queue(
        &host,
        "qmail-qmqpc",
        MESSAGE,
        b"Fjason@example.net\0Tbob@example.net\0\0junk",
        LIMIT,
    );
    assert_eq!(code, 0, "bytes after the end: {err}");
    assert_eq!(up.received().len(), 1);
}

#[test]
fn home_directory_missing_is_61() {
    let host = Host::new();
    let mut cmd = host.cmd("qmail-qmqpc");
    cmd.env("NULLQ_HOME", host.dir.path().join("nonexistent"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = cmd.status().expect("run");
    assert_eq!(status.code(), Some(61));
}

#[test]
fn message_on_a_file_is_read_in_place() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let path = host.dir.path().join("msg");
    std::fs::write(&path, MESSAGE).expect("write");
    let (env_r, env_w) = std::os::unix::net::UnixStream::pair().expect("pair");
    let mut cmd = host.cmd("qmail-qmqpc");
    cmd.stdin(std::fs::File::open(&path).expect("open"))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(env_r)))
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut w = env_w;
        w.write_all(ENVELOPE).expect("envelope");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(up.received()[0].message, MESSAGE);
}

#[test]
fn fifty_megabytes_in_bounded_memory() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let message = fifty_megabytes(b"Subject: big\n\n");
    let (wrapper, rss_file) = timed(&host, "qmail-qmqpc");
    let (code, err) = run_queue(
        &host,
        &wrapper,
        &message,
        ENVELOPE,
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{err}");
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bytes, message.len() as u64);
    let rss_kib = peak_rss_kib(&rss_file);
    eprintln!(
        "qmail-qmqpc peak RSS for a {} byte message: {rss_kib} KiB",
        message.len()
    );
    assert!(rss_kib < 16 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn postfix_qmqp_sink_accepts() {
    let sink = QmqpSink::start();
    let down = RefusedPort::new();
    let host = Host::new();
    host.servers(&[down.addr, sink.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
}

fn flush(host: &Host) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nullq"));
    cmd.arg("flush").arg("-v");
    for (k, v) in host.cmd("sendmail").get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = run(cmd, b"", LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mailq(host: &Host) -> String {
    let out = run(host.cmd("mailq"), b"", LIMIT);
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fallback_queue_keeps_then_flush_delivers_once() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let z = QmqpServer::start(Answer::TempFail);
    let down = RefusedPort::new();
    host.servers(&[z.addr, down.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains("fallback queue"), "{err}");
    let listing = mailq(&host);
    assert!(listing.contains("<jason@example.net>"), "{listing}");
    assert!(listing.contains("\tremote\tbob@example.net\n"), "{listing}");
    assert!(listing.contains("\tremote\teve@example.net\n"), "{listing}");

    // Servers still failing: flush keeps it and says so.
    let (code, _) = flush(&host);
    assert_eq!(code, 111);

    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let (code, err) = flush(&host);
    assert_eq!(code, 0, "{err}");
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, MESSAGE);
    assert_eq!(got[0].recipients.len(), 2);
    assert_eq!(mailq(&host), "");
    let (code, _) = flush(&host);
    assert_eq!(code, 0);
    assert_eq!(up.received().len(), 1, "sent once");
}

#[test]
fn fallback_is_not_used_for_d() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let d = QmqpServer::start(Answer::PermFail);
    host.servers(&[d.addr]);
    let (code, _) = queue(&host);
    assert_eq!(code, 31);
    assert_eq!(mailq(&host), "");
}

#[test]
fn next_successful_injection_flushes_the_fallback_queue() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    assert_eq!(queue(&host).0, 0);
    assert!(!mailq(&host).is_empty());
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let (code, err) = run_queue(
        &host,
        "qmail-qmqpc",
        b"Subject: second\n\n",
        ENVELOPE,
        LIMIT,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        up.received().len(),
        2,
        "the new message and the waiting one"
    );
    assert_eq!(mailq(&host), "");
}

#[test]
fn two_concurrent_flushes_send_each_message_once() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let n = 40;
    for i in 0..n {
        let msg = format!("Subject: message {i}\n\nbody {i}\n");
        let (code, err) = run_queue(&host, "qmail-qmqpc", msg.as_bytes(), ENVELOPE, LIMIT);
        assert_eq!(code, 0, "{err}");
    }
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nullq"));
        cmd.arg("flush");
        for (k, v) in host.cmd("sendmail").get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flush")
    };
    let mut flushes: Vec<_> = (0..3).map(|_| spawn()).collect();
    for f in &mut flushes {
        if wait_child(f, LIMIT).is_none() {
            let _ = f.kill();
        }
        let _ = f.wait();
    }
    let got = up.received();
    let mut subjects: Vec<String> = got
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.message)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("Subject: message {i}")).collect();
    expected.sort();
    assert_eq!(subjects, expected, "each message exactly once");
    assert_eq!(mailq(&host), "");
}
