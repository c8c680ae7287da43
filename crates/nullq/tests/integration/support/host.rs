//! A null-client host for the client tests: a temporary qmail home with the nullq binary
//! linked under every program name `nullq install` links, MUAs (mutt, bsd-mailx) configured to
//! use its sendmail, and bounded runs of its programs with the qmail-queue interface.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use super::{have, wait_child};

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
        // Each host its own memory of failed servers, laid out as on a real host (1777 root),
        // so that no test's dead servers reorder another's.
        let memory = host.memory_dir();
        std::fs::create_dir(&memory).expect("server memory dir");
        std::fs::set_permissions(&memory, std::fs::Permissions::from_mode(0o1777))
            .expect("chmod server memory dir");
        host.control("qmqpstate", "servers");
        host
    }

    /// The directory of the host's memory of failed servers (`control/qmqpstate`).
    pub fn memory_dir(&self) -> PathBuf {
        self.home().join("servers")
    }

    /// This user's file in it.
    pub fn memory_file(&self) -> PathBuf {
        self.memory_dir()
            .join(rustix::process::geteuid().as_raw().to_string())
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
        "mutt is not installed (scripts/test installs it)"
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
        "bsd-mailx is not installed (scripts/test installs it)"
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
        "/usr/bin/time (Debian package time) is not installed (scripts/test installs it)"
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
    // Drain both pipes while the child runs, so a full pipe cannot stall it.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    if wait_child(&mut child, limit).is_none() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let _ = writer.join();
    let collect =
        |h: Option<thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// `run` with the qmail-queue interface: message on fd 0, envelope on fd 1 (a pipe we write),
/// stdout discarded (fd 1 is the envelope), stderr captured. The exit code is -2 when the
/// program had to be killed after `limit`.
pub fn run_queue(
    host: &Host,
    name: &str,
    message: &[u8],
    envelope: &[u8],
    limit: Duration,
) -> (i32, String) {
    run_queue_cmd(host.cmd(name), message, envelope, limit)
}

/// [`run_queue`] for any command (a program in a namespace of its own, say).
pub fn run_queue_cmd(
    mut cmd: Command,
    message: &[u8],
    envelope: &[u8],
    limit: Duration,
) -> (i32, String) {
    let (env_read, env_write) = pipe();
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
    let err = child.stderr.take().map(drain);
    let code = match wait_child(&mut child, limit) {
        Some(status) => status.code().unwrap_or(-1),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            -2
        }
    };
    let _ = writer.join();
    let err = err.and_then(|h| h.join().ok()).unwrap_or_default();
    (code, String::from_utf8_lossy(&err).into_owned())
}

/// A pipe (read end, write end), both ends close-on-exec.
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
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

/// Program `name` of `host` in a mount namespace of its own, where each `(target, source)` of
/// `binds` has `source` bind-mounted over the system path `target` (`/etc/mailname`,
/// `/dev/log`): the program sees the test's file at the real path, and nothing outside the
/// namespace changes. A target that does not exist is made in an overlay of its folder whose
/// upper layer lies in the host's temporary directory. Needs root (`unshare -m`).
pub fn in_namespace(host: &Host, name: &str, binds: &[(&str, &Path)]) -> Command {
    super::require_root("a mount namespace");
    const SCRIPT: &str = r#"set -e
while [ "$1" != -- ]; do
    target=$1 source=$2
    shift 2
    if [ ! -e "$target" ]; then
        layer=$(mktemp -d)
        mkdir "$layer/upper" "$layer/work"
        parent=$(dirname "$target")
        mount -t overlay overlay -o "lowerdir=$parent,upperdir=$layer/upper,workdir=$layer/work" "$parent"
        : > "$target"
    fi
    mount --bind "$source" "$target"
done
shift
exec "$@""#;
    let template = host.cmd(name);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"]);
    for (target, source) in binds {
        cmd.arg(target).arg(source);
    }
    cmd.arg("--").arg(template.get_program());
    cmd.env_clear();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.current_dir(host.dir.path());
    cmd
}
