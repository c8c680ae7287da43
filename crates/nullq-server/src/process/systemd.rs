//! What `nullq serve` says to and takes from systemd: listening sockets passed by socket
//! activation (`LISTEN_FDS`, e.g. from `nullq.socket` with `ListenStream=628`, so the server
//! needs no privilege to listen on port 628), and notifications on `NOTIFY_SOCKET`
//! (`Type=notify`): `READY=1` once the spool is recovered and the listeners are up,
//! `STOPPING=1` when it stops accepting, `WATCHDOG=1` from the delivery runner's loop.
//!
//! Without systemd (no variables set) every function here does nothing.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// The listening sockets systemd passed, if any (an empty list without socket activation).
/// `LISTEN_PID` and `LISTEN_FDS` are removed from the environment, so that
/// delivery programs do not think they were passed sockets. Each must be a listening TCP
/// socket.
///
/// Call it while the process has one thread (before the runtime): it changes the environment.
pub fn inherited_listeners() -> Result<Vec<std::net::TcpListener>, String> {
    if crate::process::privilege::threads().is_some_and(|n| n > 1) {
        return Err("internal error: socket activation read after threads started".to_owned());
    }
    // SAFETY: the process has one thread (checked just above), so nothing reads the
    // environment while it is changed.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() }
        .map_err(|e| format!("socket activation: {e}"))?;
    let mut listeners = Vec::new();
    for raw in fds {
        // SAFETY: by the socket activation protocol, descriptors 3 .. 3 + LISTEN_FDS are open,
        // passed to this process (LISTEN_PID is ours, checked by listen_fds), and owned by
        // nobody else in it; each is taken exactly once here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        check_listening_tcp(&fd)
            .map_err(|e| format!("socket activation: descriptor {raw}: {e}"))?;
        rustix::io::ioctl_fionbio(&fd, true)
            .map_err(|e| format!("socket activation: descriptor {raw}: {e}"))?;
        listeners.push(std::net::TcpListener::from(fd));
    }
    Ok(listeners)
}

fn check_listening_tcp(fd: &OwnedFd) -> Result<(), String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let kind = sockopt::socket_type(fd).map_err(|e| format!("not a socket ({e})"))?;
    if kind != SocketType::STREAM {
        return Err("not a stream socket (ListenStream= is needed)".to_owned());
    }
    let family = sockopt::socket_domain(fd).map_err(|e| e.to_string())?;
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Err("not a TCP socket (ListenStream= needs an address and a port)".to_owned());
    }
    if !sockopt::socket_acceptconn(fd).map_err(|e| e.to_string())? {
        return Err("not listening (Accept=no is needed)".to_owned());
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
