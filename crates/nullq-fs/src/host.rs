//! The few facts about the machine itself that the client and the server both need.

/// The machine's host name from `gethostname(2)`; `None` on failure or when empty or not
/// UTF-8.
pub fn machine_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call;
    // gethostname writes at most that many bytes into it and does not keep the pointer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves truncated names possibly unterminated: take up to the first NUL, if any.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// This process's id, asked of the kernel once: the server puts it in every queue id and every
/// `Received` line, and `getpid(2)` is a system call each time (glibc no longer caches it). The
/// server forks only to `exec` at once, so a child never makes ids with its parent's pid.
pub fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}
