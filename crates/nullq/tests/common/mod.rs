//! Test helpers: run the real `nullq` binary as a server on a loopback port, talk raw QMQP to it,
//! record what real clients send. Every wait here is bounded.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn nullq() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nullq"))
}

/// A free loopback port (bound then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Wait until something accepts on `addr`, at most `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A `nullq serve` child on a loopback port with its own data directory; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Start `nullq serve` with `extra` arguments, in a fresh temporary directory.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut s = Server::start_in(&data, extra);
        s._dir = Some(dir);
        s
    }

    /// Start `nullq serve` on `data` (kept after the server stops).
    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log = data.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(nullq())
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(data)
            .args(["--error-delay", "0", "--hostname", "mx.test"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn nullq serve");
        let mut server = Server {
            child,
            addr,
            data: data.to_path_buf(),
            log,
            _dir: None,
        };
        if !wait_listening(addr, Duration::from_secs(20)) {
            let log = server.log_text();
            server.kill();
            panic!("nullq serve did not listen on {addr}; its log:\n{log}");
        }
        // Let the sessions of the readiness probes end, so they do not count against limits.
        thread::sleep(Duration::from_millis(200));
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Committed message files in the spool.
    pub fn queued(&self) -> Vec<PathBuf> {
        queued_files(&self.data)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The committed message files of the spool at `data`.
pub fn queued_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("queue"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Files left in the spool's tmp/.
pub fn tmp_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Send `request` on a new connection, then read until the server closes (bounded).
/// Returns what the server answered (empty if it closed without answering).
pub fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = match TcpStream::connect_timeout(&addr, limit) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// One connection seen by a [`Recorder`]: what the client sent and what the server answered.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

/// A transparent TCP proxy in front of a server that records every exchange, so a test can
/// compare what a real client (qmqp-source) sent with what the server stored.
pub struct Recorder {
    pub addr: SocketAddr,
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl Recorder {
    pub fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("recorder addr");
        let exchanges: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let log = Arc::clone(&exchanges);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let log = Arc::clone(&log);
                thread::spawn(move || relay(client, upstream, log));
            }
        });
        Recorder { addr, exchanges }
    }

    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.exchanges.lock().expect("lock"))
    }
}

fn relay(mut client: TcpStream, upstream: SocketAddr, log: Arc<Mutex<Vec<Exchange>>>) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let limit = Some(Duration::from_secs(60));
    for s in [&client, &server] {
        let _ = s.set_read_timeout(limit);
    }
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || {
        let mut sent = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = client_r.read(&mut buf) {
            if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                break;
            }
            sent.extend_from_slice(&buf[..n]);
        }
        let _ = server_w.shutdown(std::net::Shutdown::Write);
        sent
    });
    let mut response = Vec::new();
    let _ = server.read_to_end(&mut response);
    let _ = client.write_all(&response);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let request = up.join().unwrap_or_default();
    log.lock()
        .expect("lock")
        .push(Exchange { request, response });
}

/// Run a command to completion with a time limit; returns (status, stdout, stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < limit => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
