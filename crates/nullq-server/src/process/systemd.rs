//! What `nullq serve` says to and takes from systemd: listening sockets passed by socket
//! activation (`LISTEN_FDS`, e.g. from `nullq.socket` with `ListenStream=628`, so the server
//! needs no privilege to listen on port 628), and notifications on `NOTIFY_SOCKET`
//! (`Type=notify`): `READY=1` once the spool is recovered and the listeners are up,
//! `STOPPING=1` when it stops accepting, `WATCHDOG=1` from the delivery runner's loop.
//!
//! Without systemd (no variables set) every function here does nothing.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Why the sockets systemd passed cannot be served.
#[derive(Debug)]
#[non_exhaustive]
pub enum ActivationError {
    /// Called after threads started (a bug: the environment cannot be changed safely).
    Threads,
    /// `LISTEN_PID`/`LISTEN_FDS` could not be read.
    Environment(io::Error),
    /// A passed descriptor is not a listening TCP socket, or cannot be made non-blocking.
    Descriptor {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        problem: SocketProblem,
    },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::Threads => write!(
                f,
                "internal error: socket activation read after threads started"
            ),
            ActivationError::Environment(e) => write!(f, "socket activation: {e}"),
            ActivationError::Descriptor { fd, problem } => {
                write!(f, "socket activation: descriptor {fd}: {problem}")
            }
        }
    }
}

impl std::error::Error for ActivationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ActivationError::Threads => None,
            ActivationError::Environment(e) => Some(e),
            ActivationError::Descriptor { problem, .. } => Some(problem),
        }
    }
}

/// What is wrong with a descriptor systemd passed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SocketProblem {
    /// Not a socket at all.
    NotSocket(rustix::io::Errno),
    /// A datagram or other socket, not a stream.
    NotStream,
    /// Not an IPv4 or IPv6 socket (a Unix socket, say).
    NotTcp,
    /// A socket that does not listen (`Accept=yes` passes connections).
    NotListening,
    /// Its family, its listening state or non-blocking mode could not be read or set.
    Call(rustix::io::Errno),
}

impl fmt::Display for SocketProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketProblem::NotSocket(e) => write!(f, "not a socket ({e})"),
            SocketProblem::NotStream => {
                write!(f, "not a stream socket (ListenStream= is needed)")
            }
            SocketProblem::NotTcp => write!(
                f,
                "not a TCP socket (ListenStream= needs an address and a port)"
            ),
            SocketProblem::NotListening => write!(f, "not listening (Accept=no is needed)"),
            SocketProblem::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SocketProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocketProblem::NotSocket(e) | SocketProblem::Call(e) => Some(e),
            _ => None,
        }
    }
}

/// The listening sockets systemd passed, if any (an empty list without socket activation).
/// `LISTEN_PID` and `LISTEN_FDS` are removed from the environment, so that
/// delivery programs do not think they were passed sockets. Each must be a listening TCP
/// socket.
///
/// Call it while the process has one thread (before the runtime): it changes the environment.
pub fn inherited_listeners() -> Result<Vec<std::net::TcpListener>, ActivationError> {
    if crate::process::privilege::threads().is_some_and(|n| n > 1) {
        return Err(ActivationError::Threads);
    }
    // SAFETY: the process has one thread (checked just above), so nothing reads the
    // environment while it is changed.
    let fds =
        unsafe { sd_notify::listen_fds_and_unset_env() }.map_err(ActivationError::Environment)?;
    let mut listeners = Vec::new();
    for raw in fds {
        // SAFETY: by the socket activation protocol, descriptors 3 .. 3 + LISTEN_FDS are open,
        // passed to this process (LISTEN_PID is ours, checked by listen_fds), and owned by
        // nobody else in it; each is taken exactly once here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bad = |problem| ActivationError::Descriptor { fd: raw, problem };
        check_listening_tcp(&fd).map_err(bad)?;
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| bad(SocketProblem::Call(e)))?;
        listeners.push(std::net::TcpListener::from(fd));
    }
    Ok(listeners)
}

fn check_listening_tcp(fd: &OwnedFd) -> Result<(), SocketProblem> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let kind = sockopt::socket_type(fd).map_err(SocketProblem::NotSocket)?;
    if kind != SocketType::STREAM {
        return Err(SocketProblem::NotStream);
    }
    let family = sockopt::socket_domain(fd).map_err(SocketProblem::Call)?;
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Err(SocketProblem::NotTcp);
    }
    if !sockopt::socket_acceptconn(fd).map_err(SocketProblem::Call)? {
        return Err(SocketProblem::NotListening);
    }
    Ok(())
}

/// Whether a failed notification was reported already: once is enough.
static WARNED: AtomicBool = AtomicBool::new(false);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "nullq::server", "cannot notify systemd (NOTIFY_SOCKET): {e}");
        }
    }
}

/// `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: the server no longer accepts and finishes its open sessions.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Keep-alives for `WatchdogSec=`: [`Watchdog::pet`] is called from a loop that stalls when
/// the work stalls (the delivery runner's), every third of the interval, and sends `WATCHDOG=1`
/// each time: no "is it due yet" check, which a timer's jitter would turn into skipped
/// keep-alives and a gap of a whole interval.
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC` for this process), if any.
    pub fn from_env() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|d| d / 3),
        }
    }

    /// The interval at which [`Watchdog::pet`] must be called at least, if enabled.
    pub fn interval(&self) -> Option<Duration> {
        self.every
    }

    /// Send `WATCHDOG=1`, if systemd asked for keep-alives.
    pub fn pet(&mut self) {
        if self.every.is_some() {
            notify(&[NotifyState::Watchdog]);
        }
    }
}
