//! Dropping root, once and for good, before the tokio runtime exists.
//!
//! `nullq serve` binds its listeners (port 628 needs root), then calls [`drop_to`], then builds
//! the runtime; `nullq deliver` and `nullq qmqpd` drop the same way before they touch the spool
//! (qmail runs qmail-qmqpd as qmaild the same way, through tcpserver's -u and -g). The `nullq
//! queue` tools and an unconfigured `nullq deliver`, started as root on a spool that belongs to
//! another user, become that user ([`spool_owner`]), so every file they write is the owner's.
//!
//! Why this order, and why [`nix`]:
//! - the user and group are looked up with `getpwnam_r`/`getgrnam_r` (nix's `User::from_name`,
//!   `Group::from_name`), which use a buffer of the caller's, not a static record that another
//!   thread's look-up could overwrite;
//! - `setgroups`, `setgid` and `setuid` are glibc's (through nix): POSIX says credentials belong
//!   to the process, and glibc makes every thread change them (the kernel's system calls change
//!   only the calling thread; rustix's `set_thread_uid` is that raw call). On top of that, the
//!   drop happens while the process has one thread ([`drop_to`] checks `/proc/self/task` and
//!   refuses otherwise), so no thread can keep root by having started earlier;
//! - `PR_SET_NO_NEW_PRIVS` is per thread and inherited by threads created later: set on the
//!   only thread before the runtime starts, it covers every runtime thread and every child (the
//!   pipe and qmail-queue targets), so no set-uid program can give root back;
//! - at the end it is checked: real, effective and saved ids are the new ones, the
//!   supplementary groups are exactly those asked for, no capability is left (`CapEff`,
//!   `CapPrm` in `/proc/self/status`), and `setuid(0)` fails.

use std::io;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// A user, group and supplementary groups to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups (empty unless configured).
    pub groups: Vec<u32>,
    /// How to name it in messages (`nobody`, `uid 1009`).
    pub name: String,
}

/// Resolve `user` (name or number), `group` (name or number; default: the user's group) and
/// the supplementary `groups` (names or numbers; default none). A user that resolves to uid 0
/// is refused: running as root is what leaving `user` out means.
pub fn resolve(user: &str, group: Option<&str>, groups: &[String]) -> Result<Identity, String> {
    let (uid, user_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => match User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            Ok(None) => return Err(format!("unknown user {user:?}")),
            Err(e) => return Err(format!("cannot look up user {user:?}: {e}")),
        },
    };
    if uid == 0 {
        return Err(format!(
            "user {user:?} is root: leave user out to keep running as root"
        ));
    }
    let gid = match group {
        Some(g) => group_id(g)?,
        None => user_gid.ok_or_else(|| format!("user {user:?} is numeric: give the group too"))?,
    };
    let groups = groups
        .iter()
        .map(|g| group_id(g))
        .collect::<Result<Vec<_>, _>>()?;
    // Group 0 (root's) owns much of the system; keeping it undoes the drop. A user whose own
    // group is 0 is refused for the same reason.
    if gid == 0 || groups.contains(&0) {
        return Err(format!(
            "group 0 (root's) for user {user:?}: give an unprivileged group"
        ));
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        name: user.to_owned(),
    })
}

/// A group name or number as its gid (getgrnam_r: safe while other threads run).
pub(crate) fn group_id(g: &str) -> Result<u32, String> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {g:?}")),
        Err(e) => Err(format!("cannot look up group {g:?}: {e}")),
    }
}

/// The identity the configuration asks for (`user`, `group`, `groups`), if any.
pub fn configured(
    user: Option<&str>,
    group: Option<&str>,
    groups: &[String],
) -> Result<Option<Identity>, String> {
    match user {
        Some(u) => resolve(u, group, groups).map(Some),
        None if group.is_some() || !groups.is_empty() => {
            Err("group and groups need user (--user)".into())
        }
        None => Ok(None),
    }
}

/// The owner of the spool at `root`, when this process is root and the spool (its directory
/// exists) belongs to another user: the identity the queue tools and an unconfigured `nullq
/// deliver` switch to, so that what they write stays readable by the server. `None`: stay as
/// we are (not root, or a spool of root's, or no spool yet). As another user than the owner
/// (and not root) this is an error that says so, instead of permission errors file by file.
pub fn spool_owner(root: &Path) -> Result<Option<Identity>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot look at the spool {}: {e}", root.display())),
    };
    if !meta.is_dir() {
        return Err(format!("the spool {} is not a directory", root.display()));
    }
    let me = Uid::effective().as_raw();
    let owner = meta.uid();
    if owner == me {
        return Ok(None);
    }
    if me != 0 {
        return Err(format!(
            "the spool {} belongs to uid {owner}, and this process runs as uid {me}: run as \
             that user (or as root, which becomes it)",
            root.display()
        ));
    }
    if owner == 0 {
        return Ok(None);
    }
    let name = User::from_uid(Uid::from_raw(owner))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {owner}"), |u| u.name);
    Ok(Some(Identity {
        uid: owner,
        gid: meta.gid(),
        groups: Vec::new(),
        name,
    }))
}

/// Become `id` for good: supplementary groups, group, user, no new privileges; then check all
/// of it (see the module docs). Call it while the process has a single thread.
pub fn drop_to(id: &Identity) -> Result<(), String> {
    let fail =
        |step: &str, e: &dyn std::fmt::Display| format!("cannot become {}: {step}: {e}", id.name);
    match threads() {
        Some(n) if n > 1 => {
            return Err(fail(
                "check",
                &format!("{n} threads are running; privileges are dropped before any starts"),
            ))
        }
        _ => {}
    }
    let uid = Uid::from_raw(id.uid);
    let gid = Gid::from_raw(id.gid);
    // Already this user and group (`nullq qmqpd` under `tcpserver -u -g`): nothing to change,
    // and nothing could be changed without root; the checks below still apply.
    let already = matches!(
        (nix::unistd::getresuid(), nix::unistd::getresgid()),
        (Ok(u), Ok(g)) if [u.real, u.effective, u.saved] == [uid; 3]
            && [g.real, g.effective, g.saved] == [gid; 3]
    );
    if !already {
        let groups: Vec<Gid> = id.groups.iter().copied().map(Gid::from_raw).collect();
        // Groups first: once the user is not root, setgroups and setgid are refused.
        nix::unistd::setgroups(&groups).map_err(|e| fail("setgroups", &e))?;
        nix::unistd::setgid(gid).map_err(|e| fail("setgid", &e))?;
        nix::unistd::setuid(uid).map_err(|e| fail("setuid", &e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS", &e))?;
    verify(id).map_err(|e| fail("check", &e))
}

/// What [`drop_to`] promises, read back from the kernel.
fn verify(id: &Identity) -> Result<(), String> {
    let u = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let g = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    let uids = [u.real, u.effective, u.saved].map(Uid::as_raw);
    let gids = [g.real, g.effective, g.saved].map(Gid::as_raw);
    if uids.iter().any(|&x| x != id.uid) || gids.iter().any(|&x| x != id.gid) {
        return Err(format!("uids {uids:?}, gids {gids:?} after the change"));
    }
    let mut have: Vec<u32> = nix::unistd::getgroups()
        .map_err(|e| format!("getgroups: {e}"))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let mut want = id.groups.clone();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    if have != want {
        return Err(format!("supplementary groups {have:?}, wanted {want:?}"));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("could become root again".into());
    }
    if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        return Err("no_new_privs is not set".into());
    }
    // No capability survives setuid from root to another user (no SECBIT_KEEP_CAPS here).
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for key in ["CapEff:", "CapPrm:", "CapAmb:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim);
            if let Some(v) = value {
                if v.bytes().any(|b| b != b'0') {
                    return Err(format!("capabilities left: {key} {v}"));
                }
            }
        }
    }
    Ok(())
}

/// How many threads this process has (`None` where `/proc` cannot tell).
pub(crate) fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// Bind a TCP listener on `addr` as tokio's own `bind` does (close-on-exec, non-blocking,
/// `SO_REUSEADDR`), but without a runtime: the server binds before it drops root, and builds
/// the runtime only after that. The backlog is 4096, not tokio's 1024 (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default): a burst of connections waits to be accepted and
/// answered instead of having its SYNs dropped and retried a second later.
///
/// An IPv6 listener is `IPV6_V6ONLY`: `[::]:628` takes IPv6 clients only, whatever the
/// system's `net.ipv6.bindv6only`, so `0.0.0.0:628` and `[::]:628` can both be listened on (as
/// tcpserver would need two instances for); without it Linux lets `[::]` take the IPv4 port as
/// well, and the second bind fails with "Address already in use".
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    if addr.is_ipv6() {
        rustix::net::sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 4096)?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_roots_group() {
        for (group, groups) in [(Some("0"), vec![]), (Some("nogroup"), vec!["0".to_owned()])] {
            let e = resolve("nobody", group, &groups).unwrap_err();
            assert!(e.contains("group 0"), "{e}");
        }
    }

    #[test]
    fn resolves_names_and_numbers() {
        let id = resolve("1009", Some("1002"), &["8".into(), "mail".into()]).unwrap();
        assert_eq!((id.uid, id.gid), (1009, 1002));
        assert_eq!(id.groups.len(), 2);
        assert_eq!(id.groups[0], 8);
        assert!(resolve("1009", None, &[]).unwrap_err().contains("numeric"));
        assert!(resolve("0", Some("0"), &[]).unwrap_err().contains("root"));
        assert!(resolve("root", None, &[]).unwrap_err().contains("root"));
        assert!(resolve("no-such-user-here", None, &[])
            .unwrap_err()
            .contains("unknown user"));
        assert!(resolve("1009", Some("no-such-group-here"), &[])
            .unwrap_err()
            .contains("unknown group"));
        assert!(configured(None, Some("mail"), &[]).is_err());
        assert!(configured(None, None, &["mail".into()]).is_err());
        assert_eq!(configured(None, None, &[]), Ok(None));
    }

    #[test]
    fn binds_without_a_runtime() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // Non-blocking: accept with nobody connecting returns at once.
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// The README's `--listen 0.0.0.0:628 --listen [::]:628`, on one port: `[::]:P` is bound
    /// first and held while `0.0.0.0:P` is bound. No port is picked by binding and releasing:
    /// P is the kernel's choice for the IPv6 socket and stays ours throughout; only its IPv4
    /// side could be taken by another program in between, and then the pair is tried again
    /// on a new port (bounded).
    #[test]
    fn ipv4_and_ipv6_any_share_a_port() {
        let mut last = None;
        for _ in 0..20 {
            let v6 = bind("[::]:0".parse().unwrap()).unwrap();
            let port = v6.local_addr().unwrap().port();
            assert!(
                rustix::net::sockopt::ipv6_v6only(&v6).unwrap(),
                "the IPv6 listener is V6ONLY"
            );
            match bind(std::net::SocketAddr::from(([0, 0, 0, 0], port))) {
                Ok(v4) => {
                    assert_eq!(v4.local_addr().unwrap().port(), port);
                    // Each takes its own family: a v4 client reaches the v4 listener.
                    // connect returns once the handshake is done, so the connection is in
                    // the accept queue already: a blocking accept returns at once.
                    let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    v4.set_nonblocking(false).unwrap();
                    assert_eq!(v4.accept().unwrap().1, c.local_addr().unwrap());
                    assert_eq!(v6.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => panic!("0.0.0.0:{port} beside [::]:{port}: {e}"),
            }
        }
        panic!("0.0.0.0:P never bound beside [::]:P: {last:?}");
    }
}
