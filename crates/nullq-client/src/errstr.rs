//! qmail's words for system errors: the text notqmail's error_str.c gives each errno, so that
//! the client programs' fatal lines read as qmail's do (`unable to mkdir md: file already
//! exists`, not Rust's `File exists (os error 17)`).
//!
//! This module owns only that table; errors without an errno (ours, not the system's) keep
//! their own text.

use std::fmt;
use std::io;

/// error_str.c's text for `errno`, `unknown error` for the ones it does not name.
pub fn errno_text(errno: i32) -> &'static str {
    use libc::*;
    match errno {
        0 => "no error",
        EINTR => "interrupted system call",
        ENOMEM => "out of memory",
        ENOENT => "file does not exist",
        ETXTBSY => "text busy",
        EIO => "input/output error",
        EEXIST => "file already exists",
        ETIMEDOUT => "timed out",
        EINPROGRESS => "operation in progress",
        // EAGAIN and EWOULDBLOCK are one errno on Linux; qmail names EAGAIN first.
        EAGAIN => "temporary failure",
        EPIPE => "broken pipe",
        EPERM => "permission denied",
        EACCES => "access denied",
        ESRCH => "no such process",
        ENXIO => "device not configured",
        E2BIG => "argument list too long",
        ENOEXEC => "exec format error",
        EBADF => "file descriptor not open",
        ECHILD => "no child processes",
        EDEADLK => "operation would cause deadlock",
        EFAULT => "bad address",
        ENOTBLK => "not a block device",
        EBUSY => "device busy",
        EXDEV => "cross-device link",
        ENODEV => "device does not support operation",
        ENOTDIR => "not a directory",
        EISDIR => "is a directory",
        EINVAL => "invalid argument",
        ENFILE => "system cannot open more files",
        EMFILE => "process cannot open more files",
        ENOTTY => "not a tty",
        EFBIG => "file too big",
        ENOSPC => "out of disk space",
        ESPIPE => "unseekable descriptor",
        EROFS => "read-only file system",
        EMLINK => "too many links",
        EDOM => "input out of range",
        ERANGE => "output out of range",
        EALREADY => "operation already in progress",
        ENOTSOCK => "not a socket",
        EDESTADDRREQ => "destination address required",
        EMSGSIZE => "message too long",
        EPROTOTYPE => "incorrect protocol type",
        ENOPROTOOPT => "protocol not available",
        EPROTONOSUPPORT => "protocol not supported",
        ESOCKTNOSUPPORT => "socket type not supported",
        EOPNOTSUPP => "operation not supported",
        EPFNOSUPPORT => "protocol family not supported",
        EAFNOSUPPORT => "address family not supported",
        EADDRINUSE => "address already used",
        EADDRNOTAVAIL => "address not available",
        ENETDOWN => "network down",
        ENETUNREACH => "network unreachable",
        ENETRESET => "network reset",
        ECONNABORTED => "connection aborted",
        ECONNRESET => "connection reset",
        ENOBUFS => "out of buffer space",
        EISCONN => "already connected",
        ENOTCONN => "not connected",
        ESHUTDOWN => "socket shut down",
        ETOOMANYREFS => "too many references",
        ECONNREFUSED => "connection refused",
        ELOOP => "symbolic link loop",
        ENAMETOOLONG => "file name too long",
        EHOSTDOWN => "host down",
        EHOSTUNREACH => "host unreachable",
        ENOTEMPTY => "directory not empty",
        EUSERS => "too many users",
        EDQUOT => "disk quota exceeded",
        ESTALE => "stale NFS file handle",
        EREMOTE => "too many levels of remote in path",
        ENOLCK => "no locks available",
        ENOSYS => "system call not available",
        ENOSTR => "not a stream device",
        ETIME => "timer expired",
        ENOSR => "out of stream resources",
        ENOMSG => "no message of desired type",
        EBADMSG => "bad message type",
        EIDRM => "identifier removed",
        ENONET => "machine not on network",
        ENOLINK => "link severed",
        EADV => "advertise error",
        ESRMNT => "srmount error",
        ECOMM => "communication error",
        EPROTO => "protocol error",
        EMULTIHOP => "multihop attempted",
        EREMCHG => "remote address changed",
        _ => "unknown error",
    }
}

/// An I/O error as qmail prints it: error_str's text for its errno, or the error's own text
/// when it carries none.
pub struct Qmail<'a>(pub &'a io::Error);

impl fmt::Display for Qmail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(errno) => f.write_str(errno_text(errno)),
            None => self.0.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_error_str_says() {
        assert_eq!(errno_text(libc::ENOENT), "file does not exist");
        assert_eq!(errno_text(libc::EEXIST), "file already exists");
        assert_eq!(errno_text(libc::EACCES), "access denied");
        assert_eq!(errno_text(-1), "unknown error");
        let e = io::Error::from_raw_os_error(libc::EISDIR);
        assert_eq!(Qmail(&e).to_string(), "is a directory");
        let e = io::Error::other("mine");
        assert_eq!(Qmail(&e).to_string(), "mine");
    }
}
