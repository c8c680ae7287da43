//! Shared by the client tests (`client_*.rs`): a temporary qmail home with the nullq binary
//! linked under every program name, and QMQP peers on loopback: a capturing server that answers
//! what it is told, a black hole that accepts and never answers, and a port nobody listens on.
//!
//! Every wait here is bounded, so a broken client fails a test instead of hanging it.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nullq_proto::qmqp::{Event, Limits, RequestDecoder, Response, Status};

/// Program names the tests run through symlinks: the ones `nullq install` links.
pub const NAMES: &[&str] = nullq_client::install::PROGRAMS;

/// A temporary qmail home (`home/control/...`) and a `bin/` of symlinks to the nullq binary.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home/control")).expect("control dir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin dir");
        for name in NAMES {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_nullq"),
                dir.path().join("bin").join(name),
            )
            .expect("symlink");
        }
        let host = Host { dir };
        host.control("me", "host1.example.net");
        host.control("defaulthost", "example.net");
        host
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin").join(name)
    }

    /// Write control file `name` (one line).
    pub fn control(&self, name: &str, value: &str) {
        std::fs::write(self.home().join("control").join(name), format!("{value}\n"))
            .expect("control file");
    }

    /// `qmqpservers` naming these addresses, in order.
    pub fn servers(&self, addrs: &[SocketAddr]) {
        let lines: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        self.control("qmqpservers", &lines.join("\n"));
    }

    /// A command for program `name` with a clean, predictable environment.
    pub fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin(name));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NULLQ_HOME", self.home())
            .env("USER", "jason")
            .env("LOGNAME", "jason")
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .env("TZ", "UTC")
            .current_dir(self.dir.path());
        c
    }
}

/// `program` (an MUA) with the host's environment (NULLQ_HOME, USER, ...), run in its directory.
pub fn with_host_env(host: &Host, program: &str) -> Command {
    let template = host.cmd("sendmail");
    let mut cmd = Command::new(program);
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.current_dir(host.dir.path());
    cmd
}

/// mutt, configured to send through the host's sendmail as Jason Mader, sending `subject` to
/// `to` with the body on stdin.
pub fn mutt(host: &Host, subject: &str, to: &str) -> Command {
    assert!(
        have("/usr/bin/mutt"),
        "mutt is not installed (.ci/run installs it)"
    );
    let muttrc = host.dir.path().join("muttrc");
    std::fs::write(
        &muttrc,
        format!(
            "set sendmail=\"{}\"\nset from=\"Jason Mader <jason@example.net>\"\nset use_from=yes\n\
             set copy=no\nset record=\"\"\nset charset=\"utf-8\"\nset send_charset=\"us-ascii:utf-8\"\n",
            host.bin("sendmail").display()
        ),
    )
    .expect("muttrc");
    let mut cmd = with_host_env(host, "/usr/bin/mutt");
    cmd.args(["-n", "-F"])
        .arg(&muttrc)
        .args(["-s", subject, "--", to])
        .env("TERM", "dumb");
    cmd
}

/// bsd-mailx, configured to send through the host's sendmail, sending `subject` to `to`.
pub fn mailx(host: &Host, subject: &str, to: &str) -> Command {
    assert!(
        have("/usr/bin/bsd-mailx"),
        "bsd-mailx is not installed (.ci/run installs it)"
    );
    let mailrc = host.dir.path().join("mailrc");
    std::fs::write(
        &mailrc,
        format!("set sendmail={}\n", host.bin("sendmail").display()),
    )
    .expect("mailrc");
    let mut cmd = with_host_env(host, "/usr/bin/bsd-mailx");
    cmd.env("MAILRC", &mailrc).args(["-s", subject, to]);
    cmd
}

/// About 50 MB of message: `header`, then lines of text.
pub fn fifty_megabytes(header: &[u8]) -> Vec<u8> {
    let size: usize = 50 * 1024 * 1024;
    let mut message = header.to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    while message.len() < size {
        message.extend_from_slice(line);
    }
    message
}

/// A program `bin/timed-NAME` that runs `NAME` under `/usr/bin/time`, which writes the child's
/// peak RSS to a file: returns the wrapper's name (for [`Host::cmd`]) and that file.
pub fn timed(host: &Host, name: &str) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        have("/usr/bin/time"),
        "/usr/bin/time (Debian package time) is not installed (.ci/run installs it)"
    );
    let rss_file = host.dir.path().join(format!("rss-{name}"));
    let wrapper = format!("timed-{name}");
    let path = host.bin(&wrapper);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec /usr/bin/time -f %M -o {} {} \"$@\"\n",
            rss_file.display(),
            host.bin(name).display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (wrapper, rss_file)
}

/// The peak RSS in KiB that a [`timed`] run wrote.
pub fn peak_rss_kib(rss_file: &Path) -> u64 {
    std::fs::read_to_string(rss_file)
        .expect("rss")
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("a number")
}

/// Run `cmd` with `input` on stdin, killing it after `limit`.
pub fn run(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    child.wait_with_output().expect("output")
}

/// `run` with the qmail-queue interface: message on fd 0, envelope on fd 1 (a pipe we write),
/// stdout discarded (fd 1 is the envelope), stderr captured.
pub fn run_queue(
    host: &Host,
    name: &str,
    message: &[u8],
    envelope: &[u8],
    limit: Duration,
) -> (i32, String) {
    let (env_read, env_write) = pipe();
    let mut cmd = host.cmd(name);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(env_read))
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let message = message.to_vec();
    let envelope = envelope.to_vec();
    let writer = thread::spawn(move || {
        // As qmail-inject does: the whole message, close fd 0, then the envelope.
        let _ = stdin.write_all(&message);
        drop(stdin);
        let mut w = std::fs::File::from(env_write);
        let _ = w.write_all(&envelope);
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -2;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let mut fds = [0i32; 2];
    // Close-on-exec: a child that inherited the write end would never see the envelope end.
    // SAFETY: pipe2 writes two new descriptors into the array, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe");
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just created by pipe and are owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// One request a test server received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The message, up to its first MiB.
    pub message: Vec<u8>,
    /// The message's length in bytes.
    pub bytes: u64,
    pub sender: Vec<u8>,
    pub recipients: Vec<Vec<u8>>,
}

/// What a [`QmqpServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    TempFail,
    PermFail,
    /// Read the request, answer nothing, keep the connection open.
    Silence,
}

/// A QMQP server on 127.0.0.1 that decodes each request with nullq-proto, records it, and
/// answers as told. Message bytes are counted, and kept only up to `keep` bytes.
pub struct QmqpServer {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<Mutex<usize>>,
    stop: mpsc::Sender<()>,
}

impl QmqpServer {
    pub fn start(answer: Answer) -> QmqpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let (g, c) = (got.clone(), connections.clone());
        thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: tests finish in minutes; the thread ends when the test drops the server.
            while stopped.try_recv() == Err(mpsc::TryRecvError::Empty) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        *c.lock().expect("lock") += 1;
                        let g = g.clone();
                        if let Some(s) = serve(stream, answer, g) {
                            held.push(s);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        QmqpServer {
            addr,
            got,
            connections,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }
}

impl Drop for QmqpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Serve one connection; returns the stream when it must be held open (silence).
fn serve(
    mut stream: TcpStream,
    answer: Answer,
    got: Arc<Mutex<Vec<Received>>>,
) -> Option<TcpStream> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut decoder = RequestDecoder::new(Limits {
        max_message: 200 * 1024 * 1024,
        ..Limits::default()
    });
    let mut rec = Received::default();
    let mut buf = vec![0u8; 65536];
    let mut done = false;
    while !done {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        while !input.is_empty() || !done {
            let (used, event) = match decoder.feed(input) {
                Ok(x) => x,
                Err(_) => return None,
            };
            input = &input[used..];
            match event {
                Some(Event::Message(bytes)) => {
                    rec.bytes += bytes.len() as u64;
                    if rec.message.len() < 1024 * 1024 {
                        rec.message.extend_from_slice(bytes)
                    }
                }
                Some(Event::Sender(s)) => rec.sender = s,
                Some(Event::Recipient(r)) => rec.recipients.push(r),
                Some(Event::End) | Some(Event::Rejected(_)) => {
                    done = true;
                    break;
                }
                Some(Event::MessageStart { .. }) => {}
                None => break,
            }
        }
    }
    let response = match answer {
        Answer::Accept => Response::new(Status::Ok, "ok test"),
        Answer::TempFail => Response::new(Status::TempFail, "try later"),
        Answer::PermFail => Response::new(Status::PermFail, "go away"),
        Answer::Silence => {
            got.lock().expect("lock").push(rec);
            return Some(stream);
        }
    };
    if answer == Answer::Accept {
        got.lock().expect("lock").push(rec);
    }
    let _ = stream.write_all(&response.encode());
    None
}

/// A port on 127.0.0.1 where nobody listens (connection refused).
pub fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// A listener that accepts connections (the kernel does, from its backlog) and never reads or
/// answers: the client's read timeout is what ends the conversation.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: TcpListener,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        BlackHole {
            addr: l.local_addr().expect("addr"),
            _listener: l,
        }
    }
}

/// Wait (bounded) until `f` is true.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether a program is installed.
pub fn have(path: &str) -> bool {
    Path::new(path).exists()
}
