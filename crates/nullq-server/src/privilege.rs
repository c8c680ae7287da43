//! Dropping root: bind the privileged port first, then become the unprivileged user before the
//! spool is touched or a client byte is read (qmail runs qmail-qmqpd as qmaild the same way,
//! through tcpserver's -u and -g).

use std::ffi::CString;
use std::io;

/// A user and group to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: libc::uid_t,
    /// Group id.
    pub gid: libc::gid_t,
}

/// Resolve `user` (name or number) and `group` (name or number; default: the user's group).
pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, String> {
    let (uid, user_gid) = match user.parse::<libc::uid_t>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let name = CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
            // SAFETY: `name` is a valid NUL-terminated string; getpwnam returns NULL or a pointer
            // to a static record, read at once, before any other call could overwrite it.
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            if pw.is_null() {
                return Err(format!("unknown user {user:?}"));
            }
            // SAFETY: `pw` was checked non-null just above.
            unsafe { ((*pw).pw_uid, Some((*pw).pw_gid)) }
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<libc::gid_t>() {
            Ok(gid) => gid,
            Err(_) => {
                let name = CString::new(g).map_err(|_| format!("bad group name {g:?}"))?;
                // SAFETY: as for getpwnam above.
                let gr = unsafe { libc::getgrnam(name.as_ptr()) };
                if gr.is_null() {
                    return Err(format!("unknown group {g:?}"));
                }
                // SAFETY: `gr` was checked non-null just above.
                unsafe { (*gr).gr_gid }
            }
        },
        None => user_gid.ok_or_else(|| format!("user {user:?} is numeric: give --group too"))?,
    };
    Ok(Identity { uid, gid })
}

/// Become `id` for good: supplementary groups, then group, then user, and check it worked.
pub fn drop_to(id: Identity) -> io::Result<()> {
    // SAFETY: plain system calls on integers; setgroups reads one gid from a live local.
    unsafe {
        if libc::setgroups(1, &id.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(id.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(id.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        // A process that could take root back has not dropped it.
        if id.uid != 0 && libc::setuid(0) == 0 {
            return Err(io::Error::other("could regain root after setuid"));
        }
    }
    Ok(())
}
