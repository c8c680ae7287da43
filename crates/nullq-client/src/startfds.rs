//! Which of descriptors 0 and 1 were closed when the process started.
//!
//! Rust's runtime opens `/dev/null` on a closed descriptor 0, 1 or 2 before `main`, so by then a
//! closed fd 0 cannot be told from an empty message. qmail-qmqpc, run with fd 0 or fd 1 closed,
//! fails to read it and exits 54; to do the same, this module looks at both descriptors from an
//! ELF constructor (`.init_array`), which the C library runs before the runtime's start-up code,
//! and keeps the answer for [`closed_at_start`].

use std::sync::atomic::{AtomicU8, Ordering};

/// Bit `fd` set: descriptor `fd` (0 or 1) was closed at start.
static CLOSED: AtomicU8 = AtomicU8::new(0);

/// Run by the C library before `main`, once, with only this process's thread.
extern "C" fn record_closed_descriptors() {
    for fd in 0..2 {
        // SAFETY: F_GETFD only reads the descriptor's flags; on a closed one it fails (EBADF).
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            CLOSED.fetch_or(1 << fd, Ordering::Relaxed);
        }
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_DESCRIPTORS: extern "C" fn() = record_closed_descriptors;

/// Whether descriptor `fd` (0 or 1) was closed when the process started (before the runtime
/// reopened it on `/dev/null`). Always false for other descriptors, and off Linux.
pub fn closed_at_start(fd: u8) -> bool {
    fd < 2 && CLOSED.load(Ordering::Relaxed) & (1 << fd) != 0
}
