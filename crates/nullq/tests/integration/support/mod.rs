//! The one support module of the integration tests: processes and waits (here), the nullq
//! server under test ([`server`]), QMQP on the wire and test QMQP peers ([`qmqp`]), real peers
//! from Debian's packages ([`peers`]), a temporary null-client host ([`host`]), and test
//! certificates for QMQP over TLS ([`certs`]).
//!
//! Two rules keep the suite from flaking:
//! - nothing waits by sleeping a fixed time: every wait is for an event (a log line, a process
//!   exit, a file appearing), bounded by a limit that only a broken program reaches;
//! - nothing picks a port by binding and releasing it: servers bind port 0 and say which port
//!   they got (nullq's ready line, `tcpserver -1`, or the peer's socket in `/proc`), and a
//!   "nobody listens here" port is held bound, without `listen`, for as long as the test runs.

#![allow(dead_code)] // not every helper is used by every build of the test binary

pub mod certs;
pub mod host;
pub mod peers;
pub mod qmqp;
pub mod server;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn nullq() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nullq"))
}

/// Check `cond` until it holds or `limit` passes; returns whether it held. The one polling
/// loop of the suite, for events that announce themselves only in the file system or in
/// another program's state (a file delivered, a queue emptied).
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (bounded) for `child` to exit; `None` if it is still running after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_for(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Run a command to completion with a time limit (killed after it); returns (exit code,
/// stdout, stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read both pipes while waiting, so a chatty child cannot block on a full pipe.
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    if wait_child(&mut child, limit).is_none() {
        let _ = child.kill();
    }
    let status = child.wait().ok().and_then(|s| s.code());
    let text = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        String::from_utf8_lossy(&h.and_then(|h| h.join().ok()).unwrap_or_default()).into_owned()
    };
    (status, text(out), text(err))
}

fn reader(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Run a shell command (bounded), panicking with its output if it fails; returns stdout.
pub fn sh(script: &str) -> String {
    let (status, out, err) = run_bounded(
        Command::new("sh").args(["-c", script]),
        Duration::from_secs(120),
    );
    assert_eq!(status, Some(0), "{script}\nstdout: {out}\nstderr: {err}");
    out
}

/// A child process that is killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Killed {
    pub fn spawn(cmd: &mut Command) -> Killed {
        Killed(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another process holding an exclusive `flock` on a file, as a live writer (a `nullq qmqpd`
/// receiving, another runner writing a Maildir) holds its tmp/ file: util-linux's `flock(1)`
/// running a command that says when it holds the lock, then waits for its stdin to close.
pub struct Flocked {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Flocked {
    /// Returns once the lock on `path` is held (no sleeping: the command's "locked" line says so).
    pub fn hold(path: &Path) -> Flocked {
        use std::io::BufRead;
        let mut child = Command::new("flock")
            .arg("--exclusive")
            .arg(path)
            .args(["sh", "-c", "echo locked; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        assert_eq!(
            line, "locked\n",
            "flock(1) did not take the lock on {path:?}"
        );
        let stdin = child.stdin.take();
        Flocked { child, stdin }
    }
}

impl Drop for Flocked {
    /// Closing stdin ends the command; flock(1) waits for it, so once flock(1) is reaped no
    /// process holds the lock.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Whether a program (or any file) is installed at `path`.
pub fn have(path: &str) -> bool {
    Path::new(path).exists()
}

/// Fail the test unless it runs as root (mounts, private Postfix instances, `--user`).
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root ({why}); CI runs as root");
}

/// The TCP port on which process `pid` listens, once it does (bounded): found through the
/// socket inodes in `/proc/PID/fd` and the LISTEN entries of `/proc/net/tcp*`. For peers told
/// to bind port 0 that do not say which port they got (smtp-sink, Postfix). A process with
/// more than one listening socket is a test bug (a descriptor inherited without
/// close-on-exec from another test's socket), reported as such.
pub fn listening_port(pid: u32, limit: Duration) -> Option<u16> {
    let mut ports = Vec::new();
    wait_for(limit, || {
        ports = listening_ports(pid);
        !ports.is_empty()
    });
    assert!(
        ports.len() <= 1,
        "process {pid} listens on several ports {ports:?}: an inherited descriptor?"
    );
    ports.first().copied()
}

fn listening_ports(pid: u32) -> Vec<u16> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
    if let Err(e) = &fds {
        // A peer that switched user (smtp-sink -u) can be read only with CAP_SYS_PTRACE.
        assert!(
            e.kind() != std::io::ErrorKind::PermissionDenied,
            "cannot read /proc/{pid}/fd ({e}): the tests need root with CAP_SYS_PTRACE"
        );
    }
    let inodes: Vec<String> = fds
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    let inode = l.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(inode.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

/// A loopback port where nobody listens, reserved for the life of this value: a TCP socket
/// bound to 127.0.0.1:0 and never put into the listening state, so every connection to it is
/// refused, and no other server can take the port while a test counts on it being dead.
pub struct RefusedPort {
    pub addr: SocketAddr,
    socket: OwnedFd,
}

impl RefusedPort {
    pub fn new() -> RefusedPort {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_in is a valid value (port 0, address 0).
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: sin is a properly initialised sockaddr_in of length len.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got = len;
        // SAFETY: getsockname writes at most `got` bytes into sin.
        let rc = unsafe {
            libc::getsockname(
                socket.as_raw_fd(),
                (&mut sin as *mut libc::sockaddr_in).cast(),
                &mut got,
            )
        };
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        let port = u16::from_be(sin.sin_port);
        RefusedPort {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Start listening on the reserved port: from now on connections are accepted. The port
    /// never passes through a moment where another program could bind it.
    pub fn listen(self) -> std::net::TcpListener {
        // SAFETY: listen(2) on the socket this value owns.
        let rc = unsafe { libc::listen(self.socket.as_raw_fd(), 128) };
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        std::net::TcpListener::from(self.socket)
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

/// Write `text` as `dir/name` and return the path (a config file, a rules file, a script).
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The `Subject:` of a message, or "".
pub fn subject(m: &str) -> String {
    m.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

/// A loop-mounted ext4 image (made with `mkfs.ext4 -m 0`, so a small one fills up for real),
/// for the power-cut and full-disk tests. Needs root. Unmounted when dropped.
pub struct LoopFs {
    pub mount: PathBuf,
    image: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn new(megabytes: u32) -> LoopFs {
        require_root("mount -o loop");
        let dir = tempfile::Builder::new()
            .prefix("nullq-loopfs.")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mkdir");
        sh(&format!(
            "truncate -s {megabytes}M {i} && mkfs.ext4 -q -F -m 0 {i} && mount -o loop {i} {m}",
            i = image.display(),
            m = mount.display()
        ));
        LoopFs {
            mount,
            image,
            _dir: dir,
        }
    }

    /// Unmount and mount again (after a shutdown, this replays the journal: power back on).
    pub fn remount(&self) {
        sh(&format!(
            "umount {m} && mount -o loop {i} {m}",
            i = self.image.display(),
            m = self.mount.display()
        ));
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.mount)
            .output()
            .is_ok_and(|o| o.status.success());
        if !done {
            // Still busy: detach it now so that its loop device is freed once the last user
            // lets go, instead of leaking it into later runs.
            eprintln!(
                "umount {} failed; detaching it lazily",
                self.mount.display()
            );
            let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        }
    }
}
