//! `ROOT/trigger`: how a `nullq queue` tool tells the spool's delivery runner to look at the
//! queue again, without signals and pid files (qmail's `lock/trigger` idea, as a Unix datagram
//! socket instead of a FIFO).
//!
//! - The runner binds it ([`crate::Spool::bind_trigger`]) only on a spool it opened, so while
//!   it holds the spool's lock: a socket left by a runner that was killed is its own to replace,
//!   and no other runner can be bound there. It binds before its start-up scan, so a wake-up
//!   sent during the scan waits in the socket and is seen after it.
//! - A tool sends one byte, without blocking ([`pull_trigger`]): nobody bound (a dead runner's
//!   socket: `ECONNREFUSED`, or none: `ENOENT`) is "no runner". A full socket buffer means
//!   wake-ups are already waiting, which is as good as a delivered one.
//! - A lost wake-up costs a little delay, never a message: the runner also rescans the queue
//!   on a timer.
//! - The socket is mode 0600 inside the spool's 0700 root: only the spool's owner (and root,
//!   which the tools leave for the owner) can write to it.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::error::{Result, SpoolError, Step};

/// The socket's name in the spool root.
pub const TRIGGER: &str = "trigger";

/// Bind `root/trigger`, replacing a socket left there (the caller holds the spool's lock).
pub(crate) fn bind(root: &Path) -> Result<UnixDatagram> {
    let path = root.join(TRIGGER);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(&path).map_err(|e| SpoolError::io(Step::Unlink, &path, e))?;
        }
        Ok(_) => {
            let e = io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something that is not a socket is in the way",
            );
            return Err(SpoolError::io(Step::Create, &path, e));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io(Step::Open, &path, e)),
    }
    let socket = UnixDatagram::bind(&path).map_err(|e| SpoolError::io(Step::Create, &path, e))?;
    let set = || -> io::Result<()> {
        socket.set_nonblocking(true)?;
        // The path was bound a moment ago by us, in a directory only the owner can write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
    };
    set().map_err(|e| SpoolError::io(Step::Create, &path, e))?;
    Ok(socket)
}

/// Wake the runner of the spool at `root`: one datagram to `root/trigger`, never blocking.
/// True when a runner's socket took it (or already had wake-ups waiting); false when no runner
/// is bound there.
pub fn pull_trigger(root: &Path) -> bool {
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    if socket.set_nonblocking(true).is_err() {
        return false;
    }
    match socket.send_to(b"!", root.join(TRIGGER)) {
        Ok(_) => true,
        Err(e) => matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_reaches_the_bound_socket_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!pull_trigger(dir.path()), "nobody bound");
        let socket = bind(dir.path()).unwrap();
        assert!(pull_trigger(dir.path()));
        let mut buf = [0u8; 8];
        assert_eq!(socket.recv(&mut buf).unwrap(), 1);
        assert_eq!(
            socket.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // A runner killed without clean-up leaves its socket: nobody reads it any more.
        drop(socket);
        assert!(!pull_trigger(dir.path()), "a dead runner's socket");
        // The next runner replaces it.
        let socket = bind(dir.path()).unwrap();
        assert!(pull_trigger(dir.path()));
        assert_eq!(socket.recv(&mut buf).unwrap(), 1);
        // Wake-ups pile up without blocking the sender; a full buffer still counts as woken.
        for _ in 0..10_000 {
            assert!(pull_trigger(dir.path()));
        }
        // Something else under the name is not replaced.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(TRIGGER), b"x").unwrap();
        assert!(bind(other.path()).is_err());
    }
}
