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

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// Why the identity to run as could not be found or taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// No such user name.
    UnknownUser(String),
    /// The user database could not be read.
    UserLookup {
        /// The name looked up.
        user: String,
        /// The system's error.
        source: nix::Error,
    },
    /// The user is root (uid 0).
    Root(String),
    /// A numeric user, and no group given.
    NumericUser(String),
    /// No such group name.
    UnknownGroup(String),
    /// The group database could not be read.
    GroupLookup {
        /// The name looked up.
        group: String,
        /// The system's error.
        source: nix::Error,
    },
    /// Group 0 as the group or among the supplementary groups.
    RootGroup {
        /// The user it was for.
        user: String,
    },
    /// A group or groups without a user.
    GroupWithoutUser,
    /// The spool's directory could not be looked at.
    SpoolUnreadable {
        /// The spool's root.
        root: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The spool's root is not a directory.
    SpoolNotDirectory(PathBuf),
    /// The spool belongs to another user, and this process cannot become it.
    SpoolOwner {
        /// The spool's root.
        root: PathBuf,
        /// The spool's owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// A step of the drop was refused.
    Drop {
        /// Whom the process was becoming.
        name: String,
        /// `setgroups`, `setgid`, `setuid` or `PR_SET_NO_NEW_PRIVS`.
        step: &'static str,
        /// The system's error.
        source: nix::Error,
    },
    /// The check before or after the drop failed.
    Check {
        /// Whom the process was becoming.
        name: String,
        /// What the check found.
        problem: CheckFailure,
    },
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivilegeError::UnknownUser(user) => write!(f, "unknown user {user:?}"),
            PrivilegeError::UserLookup { user, source } => {
                write!(f, "cannot look up user {user:?}: {source}")
            }
            PrivilegeError::Root(user) => write!(
                f,
                "user {user:?} is root: leave user out to keep running as root"
            ),
            PrivilegeError::NumericUser(user) => {
                write!(f, "user {user:?} is numeric: give the group too")
            }
            PrivilegeError::UnknownGroup(group) => write!(f, "unknown group {group:?}"),
            PrivilegeError::GroupLookup { group, source } => {
                write!(f, "cannot look up group {group:?}: {source}")
            }
            PrivilegeError::RootGroup { user } => write!(
                f,
                "group 0 (root's) for user {user:?}: give an unprivileged group"
            ),
            PrivilegeError::GroupWithoutUser => write!(f, "group and groups need user (--user)"),
            PrivilegeError::SpoolUnreadable { root, source } => {
                write!(f, "cannot look at the spool {}: {source}", root.display())
            }
            PrivilegeError::SpoolNotDirectory(root) => {
                write!(f, "the spool {} is not a directory", root.display())
            }
            PrivilegeError::SpoolOwner { root, owner, me } => write!(
                f,
                "the spool {} belongs to uid {owner}, and this process runs as uid {me}: run as \
                 that user (or as root, which becomes it)",
                root.display()
            ),
            PrivilegeError::Drop { name, step, source } => {
                write!(f, "cannot become {name}: {step}: {source}")
            }
            PrivilegeError::Check { name, problem } => {
                write!(f, "cannot become {name}: check: {problem}")
            }
        }
    }
}

impl std::error::Error for PrivilegeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivilegeError::UserLookup { source, .. }
            | PrivilegeError::GroupLookup { source, .. }
            | PrivilegeError::Drop { source, .. } => Some(source),
            PrivilegeError::SpoolUnreadable { source, .. } => Some(source),
            PrivilegeError::Check { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// What the check around the drop found wrong ([`drop_to`]; see the module docs).
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckFailure {
    /// More than one thread before the drop.
    Threads(usize),
    /// The ids could not be read back (`getresuid`, `getresgid`, `getgroups`).
    Read {
        /// The call.
        call: &'static str,
        /// The system's error.
        source: nix::Error,
    },
    /// Real, effective or saved ids are not the new ones.
    Ids {
        /// Real, effective, saved uid.
        uids: [u32; 3],
        /// Real, effective, saved gid.
        gids: [u32; 3],
    },
    /// The supplementary groups are not those asked for.
    Groups {
        /// The groups the process has (sorted, once each).
        have: Vec<u32>,
        /// The groups asked for (sorted, once each).
        want: Vec<u32>,
    },
    /// `setuid(0)` worked.
    RootAgain,
    /// `PR_SET_NO_NEW_PRIVS` is not set.
    NoNewPrivs,
    /// A capability set is not empty.
    Capabilities {
        /// The `/proc/self/status` key (`CapEff:`).
        key: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Threads(n) => write!(
                f,
                "{n} threads are running; privileges are dropped before any starts"
            ),
            CheckFailure::Read { call, source } => write!(f, "{call}: {source}"),
            CheckFailure::Ids { uids, gids } => {
                write!(f, "uids {uids:?}, gids {gids:?} after the change")
            }
            CheckFailure::Groups { have, want } => {
                write!(f, "supplementary groups {have:?}, wanted {want:?}")
            }
            CheckFailure::RootAgain => write!(f, "could become root again"),
            CheckFailure::NoNewPrivs => write!(f, "no_new_privs is not set"),
            CheckFailure::Capabilities { key, value } => {
                write!(f, "capabilities left: {key} {value}")
            }
        }
    }
}

impl std::error::Error for CheckFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckFailure::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

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
pub fn resolve(
    user: &str,
    group: Option<&str>,
    groups: &[String],
) -> Result<Identity, PrivilegeError> {
    let (uid, user_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => match User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            Ok(None) => return Err(PrivilegeError::UnknownUser(user.to_owned())),
            Err(source) => {
                return Err(PrivilegeError::UserLookup {
                    user: user.to_owned(),
                    source,
                })
            }
        },
    };
    if uid == 0 {
        return Err(PrivilegeError::Root(user.to_owned()));
    }
    let gid = match group {
        Some(g) => group_id(g)?,
        None => user_gid.ok_or_else(|| PrivilegeError::NumericUser(user.to_owned()))?,
    };
    let groups = groups
        .iter()
        .map(|g| group_id(g))
        .collect::<Result<Vec<_>, _>>()?;
    // Group 0 (root's) owns much of the system; keeping it undoes the drop. A user whose own
    // group is 0 is refused for the same reason.
    if gid == 0 || groups.contains(&0) {
        return Err(PrivilegeError::RootGroup {
            user: user.to_owned(),
        });
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        name: user.to_owned(),
    })
}

/// A group name or number as its gid (getgrnam_r: safe while other threads run).
pub(crate) fn group_id(g: &str) -> Result<u32, PrivilegeError> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        Ok(None) => Err(PrivilegeError::UnknownGroup(g.to_owned())),
        Err(source) => Err(PrivilegeError::GroupLookup {
            group: g.to_owned(),
            source,
        }),
    }
}

/// The identity the configuration asks for (`user`, `group`, `groups`), if any.
pub fn configured(
    user: Option<&str>,
    group: Option<&str>,
    groups: &[String],
) -> Result<Option<Identity>, PrivilegeError> {
    match user {
        Some(u) => resolve(u, group, groups).map(Some),
        None if group.is_some() || !groups.is_empty() => Err(PrivilegeError::GroupWithoutUser),
        None => Ok(None),
    }
}

/// The owner of the spool at `root`, when this process is root and the spool (its directory
/// exists) belongs to another user: the identity the queue tools and an unconfigured `nullq
/// deliver` switch to, so that what they write stays readable by the server. `None`: stay as
/// we are (not root, or a spool of root's, or no spool yet). As another user than the owner
/// (and not root) this is an error that says so, instead of permission errors file by file.
pub fn spool_owner(root: &Path) -> Result<Option<Identity>, PrivilegeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PrivilegeError::SpoolUnreadable {
                root: root.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(PrivilegeError::SpoolNotDirectory(root.to_path_buf()));
    }
    let me = Uid::effective().as_raw();
    let owner = meta.uid();
    if owner == me {
        return Ok(None);
    }
    if me != 0 {
        return Err(PrivilegeError::SpoolOwner {
            root: root.to_path_buf(),
            owner,
            me,
        });
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
pub fn drop_to(id: &Identity) -> Result<(), PrivilegeError> {
    let fail = |step: &'static str| {
        move |source: nix::Error| PrivilegeError::Drop {
            name: id.name.clone(),
            step,
            source,
        }
    };
    let check = |problem| PrivilegeError::Check {
        name: id.name.clone(),
        problem,
    };
    match threads() {
        Some(n) if n > 1 => return Err(check(CheckFailure::Threads(n))),
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
        nix::unistd::setgroups(&groups).map_err(fail("setgroups"))?;
        nix::unistd::setgid(gid).map_err(fail("setgid"))?;
        nix::unistd::setuid(uid).map_err(fail("setuid"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(fail("PR_SET_NO_NEW_PRIVS"))?;
    verify(id).map_err(check)
}

/// What [`drop_to`] promises, read back from the kernel.
fn verify(id: &Identity) -> Result<(), CheckFailure> {
    let read = |call: &'static str| move |source: nix::Error| CheckFailure::Read { call, source };
    let u = nix::unistd::getresuid().map_err(read("getresuid"))?;
    let g = nix::unistd::getresgid().map_err(read("getresgid"))?;
    let uids = [u.real, u.effective, u.saved].map(Uid::as_raw);
    let gids = [g.real, g.effective, g.saved].map(Gid::as_raw);
    if uids.iter().any(|&x| x != id.uid) || gids.iter().any(|&x| x != id.gid) {
        return Err(CheckFailure::Ids { uids, gids });
    }
    let mut have: Vec<u32> = nix::unistd::getgroups()
        .map_err(read("getgroups"))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let mut want = id.groups.clone();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    if have != want {
        return Err(CheckFailure::Groups { have, want });
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(CheckFailure::RootAgain);
    }
    if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        return Err(CheckFailure::NoNewPrivs);
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
                    return Err(CheckFailure::Capabilities {
                        key,
                        value: v.to_owned(),
                    });
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
            assert!(matches!(e, PrivilegeError::RootGroup { .. }), "{e}");
            assert!(e.to_string().contains("group 0"), "{e}");
        }
    }

    #[test]
    fn resolves_names_and_numbers() {
        let id = resolve("1009", Some("1002"), &["8".into(), "mail".into()]).unwrap();
        assert_eq!((id.uid, id.gid), (1009, 1002));
        assert_eq!(id.groups.len(), 2);
        assert_eq!(id.groups[0], 8);
        let text = |e: PrivilegeError| e.to_string();
        assert!(text(resolve("1009", None, &[]).unwrap_err()).contains("numeric"));
        assert!(text(resolve("0", Some("0"), &[]).unwrap_err()).contains("root"));
        assert!(text(resolve("root", None, &[]).unwrap_err()).contains("root"));
        assert!(text(resolve("no-such-user-here", None, &[]).unwrap_err())
            .contains("unknown user \"no-such-user-here\""));
        assert!(
            text(resolve("1009", Some("no-such-group-here"), &[]).unwrap_err())
                .contains("unknown group \"no-such-group-here\"")
        );
        assert!(matches!(
            configured(None, Some("mail"), &[]),
            Err(PrivilegeError::GroupWithoutUser)
        ));
        assert!(configured(None, None, &["mail".into()]).is_err());
        assert!(matches!(configured(None, None, &[]), Ok(None)));
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
