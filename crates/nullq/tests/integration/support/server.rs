//! The server under test: `nullq serve` as a child process on a port it chose itself (it binds
//! 127.0.0.1:0 and its "nullq serve ready listen=..." line says which port it got), with its
//! log lines kept in memory so a test waits for a line instead of sleeping.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{nullq, wait_child};

/// How long a server may take to start (it recovers the spool first).
const START: Duration = Duration::from_secs(60);

/// The log level every test server runs at: info, plus the "admitted" line of each session.
pub const LOG_LEVEL: &str = "info,nullq::session=debug";

/// A `nullq serve` child with its own data directory; killed when dropped.
pub struct Server {
    pub child: Child,
    /// The first listening address (127.0.0.1 unless the test chose otherwise).
    pub addr: SocketAddr,
    /// Every listening address, in the order of the ready line.
    pub addrs: Vec<SocketAddr>,
    pub data: PathBuf,
    /// The log file (a copy of stderr), kept after the server stops.
    pub log: PathBuf,
    lines: Arc<Lines>,
    /// The thread that copies stderr into `lines` and `log`: it holds the log file open until
    /// it sees EOF, so it is joined when the server stops (a loop mount holding the log could
    /// not be unmounted before).
    tee: Option<thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// Log lines read so far from the server's stderr, and whether stderr has closed.
#[derive(Default)]
struct Lines {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
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

    /// [`Server::start`] with a TLS listener (`--tls-listen` on a port of its own, `certs`'
    /// server certificate and key) beside the plain one, then `extra`.
    pub fn start_tls(certs: &super::certs::Certs, extra: &[&str]) -> Server {
        let (cert, key) = (
            certs.server_cert.display().to_string(),
            certs.server_key.display().to_string(),
        );
        let mut args = vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Start `nullq serve` on `data` (kept after the server stops).
    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(nullq());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--error-delay", "0", "--hostname", "mx.test"])
            .args(["--log-level", LOG_LEVEL])
            .args(extra);
        Server::launch(cmd, data, &data.with_extension("log"))
    }

    /// Spawn `cmd` (a `nullq serve` command line) and wait for its ready line. Its stderr
    /// goes to `log` and to memory.
    pub fn launch(cmd: Command, data: &Path, log: &Path) -> Server {
        let mut server = Server::spawn_until(cmd, data, log, "nullq serve ready");
        let ready = server.wait_log(START, |l| l.contains("nullq serve ready"));
        let addrs: Vec<SocketAddr> = ready
            .as_deref()
            .and_then(|l| l.split("listen=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|list| list.split(',').filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        if addrs.is_empty() {
            let log = server.log_text();
            server.kill();
            panic!("nullq serve did not get ready; its log:\n{log}");
        }
        server.addr = addrs[0];
        server.addrs = addrs;
        server
    }

    /// Spawn `cmd` (a `nullq deliver` command line) and wait for its runner's start line.
    /// `addr` and `addrs` mean nothing for it.
    pub fn launch_deliver(cmd: Command, data: &Path, log: &Path) -> Server {
        Server::spawn_until(cmd, data, log, "delivery runner started")
    }

    /// Spawn `cmd` with its stderr going to `log` and to memory, and wait for a log line
    /// containing `ready` (panicking with the log if it exits or times out first).
    /// `addr` and `addrs` mean nothing until the test sets them.
    pub fn spawn_until(mut cmd: Command, data: &Path, log: &Path, ready: &str) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let lines = Arc::new(Lines::default());
        let stderr = child.stderr.take().expect("piped stderr");
        let mut file = std::fs::File::create(log).expect("log file");
        let tee = Arc::clone(&lines);
        let tee = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                tee.state.lock().expect("lock").0.push(line);
                tee.changed.notify_all();
            }
            tee.state.lock().expect("lock").1 = true;
            tee.changed.notify_all();
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            addrs: Vec::new(),
            data: data.to_path_buf(),
            log: log.to_path_buf(),
            lines,
            tee: Some(tee),
            _dir: None,
        };
        if server.wait_log(START, |l| l.contains(ready)).is_none() {
            let log = server.log_text();
            server.kill();
            panic!("{cmd:?} did not log {ready:?}; its log:\n{log}");
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The metrics endpoint's address, from the ready line's `metrics=` (`None` without
    /// `--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let ready = self.wait_log(START, |l| l.contains("nullq serve ready"))?;
        ready
            .split("metrics=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The first TLS listener's address, from the ready line's `tls=` (`None` without
    /// `--tls-listen`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        let ready = self.wait_log(START, |l| l.contains("nullq serve ready"))?;
        ready
            .split(" tls=")
            .nth(1)?
            .split([' ', ','])
            .next()?
            .parse()
            .ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log_text(&self) -> String {
        self.lines.state.lock().expect("lock").0.join("\n")
    }

    /// Wait (bounded) for the first log line that `pred` accepts, and return it. Gives up
    /// early when the server's stderr closes (it exited) without such a line.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_log_count(limit, 1, pred).pop()
    }

    /// Wait (bounded) until `n` log lines satisfy `pred`; returns the lines found (fewer than
    /// `n` if the limit passed or the server exited first).
    pub fn wait_log_count(
        &self,
        limit: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut state = self.lines.state.lock().expect("lock");
        loop {
            let found: Vec<String> = state.0.iter().filter(|l| pred(l)).cloned().collect();
            let now = Instant::now();
            if found.len() >= n || state.1 || now >= deadline {
                return found;
            }
            state = self
                .lines
                .changed
                .wait_timeout(state, deadline - now)
                .expect("lock")
                .0;
        }
    }

    /// Wait until the server has admitted the connection whose local end is `local` (the
    /// listener's debug line `admitted client=IP:PORT`).
    pub fn admitted(&self, local: SocketAddr) {
        let client = format!("client={local}");
        let line = self.wait_log(START, |l| {
            l.contains(" admitted") && l.split_whitespace().any(|w| w == client)
        });
        assert!(
            line.is_some(),
            "the server never admitted {local}; its log:\n{}",
            self.log_text()
        );
    }

    /// SIGKILL, reap, and wait (bounded) for the end of its stderr. A child of the server that
    /// outlived it (a pipe: program) can hold stderr open; then the copy goes on detached.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(tee) = self.tee.take() {
            if super::wait_for(START, || tee.is_finished()) {
                let _ = tee.join();
            }
        }
    }

    /// Send `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (Drop reaps).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        wait_child(&mut self.child, limit)
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
    super::files(&data.join("queue"))
}

/// Entries left in the spool's tmp/.
pub fn tmp_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}
