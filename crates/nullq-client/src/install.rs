//! `nullq install [--root DIR] [--server ADDR]... [--me NAME] [--fallback DIR] [--dry-run]`:
//! lay out a mini-qmail host that runs on the nullq binary.
//!
//! This module owns the installed layout (mini-qmail's, from the seed):
//! - `ROOT/var/qmail/bin/NAME` → the nullq binary, for every program name of the client;
//! - `ROOT/var/qmail/control/me` (the host's name) when absent and `/etc/mailname` names no
//!   host (that file is then me's default), `qmqpservers` from `--server`,
//!   `fallbackqueue` from `--fallback` (and that queue's directories, with the modes of
//!   [`crate::fallback::LAYOUT`]: an older layout's modes are fixed);
//! - `ROOT/var/lib/nullq/servers`, mode 1777: the memory of failed servers
//!   ([`crate::server_memory`]), one file per user;
//! - the man pages under `ROOT/usr/share/man/man1`, `man5` and `man8` (every page of the
//!   sources' `man/`, the server's too: one binary, one set of pages);
//! - `ROOT/usr/sbin/sendmail` and `ROOT/usr/lib/sendmail` → `/var/qmail/bin/sendmail`. A file
//!   there that is not ours is kept as `sendmail.nullq-orig`, never overwritten.
//!
//! Every change is printed as it is made (`--dry-run`: printed, not made). What is already right
//! is left alone, so a second run changes nothing. `--root` works like DESTDIR: files go under
//! ROOT, and links name the paths the installed system will see (`/var/qmail/bin/sendmail`).

use std::ffi::OsString;
use std::fs::{self, DirBuilder};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::control::parse_server;

/// The qmail home directory on the installed system.
pub const HOME: &str = "/var/qmail";

/// The names under `bin/`, each a symlink to the nullq binary.
pub const PROGRAMS: &[&str] = &[
    "sendmail",
    "qmail-inject",
    "qmail-qmqpc",
    "qmail-queue",
    "qmail-showctl",
    "predate",
    "datemail",
    "mailsubj",
    "forward",
    "maildirmake",
    "maildir2mbox",
    "maildirwatch",
    "elq",
    "pinq",
    "qail",
    "mailq",
    "newaliases",
];

/// The system's sendmail paths, linked to `bin/sendmail`.
pub const SENDMAIL_LINKS: &[&str] = &["usr/sbin/sendmail", "usr/lib/sendmail"];

/// A man page shipped in the binary: file name, section directory, text.
pub struct ManPage {
    /// File name, e.g. `sendmail.8`.
    pub name: &'static str,
    /// `man1`, `man5` or `man8`.
    pub dir: &'static str,
    /// The roff source.
    pub text: &'static str,
}

macro_rules! man {
    ($name:literal, $dir:literal) => {
        ManPage {
            name: $name,
            dir: $dir,
            text: include_str!(concat!("../../../man/", $name)),
        }
    };
}

/// Every man page `nullq install` writes.
pub const MAN_PAGES: &[ManPage] = &[
    man!("sendmail.8", "man8"),
    man!("mailq.8", "man8"),
    man!("newaliases.8", "man8"),
    man!("qmail-inject.8", "man8"),
    man!("qmail-showctl.8", "man8"),
    man!("qmail-qmqpc.8", "man8"),
    man!("qmail-queue.8", "man8"),
    man!("nullq.8", "man8"),
    man!("nullq-flush.8", "man8"),
    man!("nullq-install.8", "man8"),
    man!("nullq-serve.8", "man8"),
    man!("nullq-qmqpd.8", "man8"),
    man!("nullq-deliver.8", "man8"),
    man!("nullq-queue.8", "man8"),
    man!("nullq-health.8", "man8"),
    man!("nullq-server.8", "man8"),
    man!("nullq.toml.5", "man5"),
    man!("predate.1", "man1"),
    man!("datemail.1", "man1"),
    man!("mailsubj.1", "man1"),
    man!("forward.1", "man1"),
    man!("maildirmake.1", "man1"),
    man!("maildir2mbox.1", "man1"),
    man!("maildirwatch.1", "man1"),
    man!("elq.1", "man1"),
    man!("pinq.1", "man1"),
    man!("qail.1", "man1"),
];

const USAGE: &str =
    "nullq install: usage: nullq install [--root DIR] [--server ADDR]... [--me NAME] [--fallback DIR] [--dry-run]";

/// `nullq install --help`.
const HELP: &str = "\
Lay out a mini-qmail host that runs on the nullq binary: /var/qmail/bin links for every
program name, control/me, control/qmqpservers, control/fallbackqueue, the man pages, and
/usr/sbin/sendmail, /usr/lib/sendmail. Every change is printed; a second run changes nothing.

Usage: nullq install [--root DIR] [--server ADDR]... [--me NAME] [--fallback DIR] [--dry-run]

Options:
  --root DIR      install under DIR, as DESTDIR (links name the installed paths) [default: /]
  --server ADDR   a QMQP server for control/qmqpservers (IPv4, [IPv6] or host name, with an
                  optional :PORT); repeat for more, in order
  --me NAME       this host's name for control/me [default: the host name, when control/me
                  is absent and /etc/mailname names no host]
  --fallback DIR  control/fallbackqueue, and the queue's directories
  -n, --dry-run   print what would change, change nothing
  -h, --help      print this help

Exit status: 0 everything is in place, 100 usage error, 111 some step failed. See
nullq-install(8).";

/// The parsed command line.
#[derive(Debug, Default)]
struct Options {
    root: PathBuf,
    servers: Vec<String>,
    me: Option<String>,
    fallback: Option<String>,
    dry_run: bool,
    help: bool,
}

/// Why install stops; mapped to an exit code in [`main`] only.
enum Failure {
    Usage(String),
    Failed(usize),
}

/// `nullq install`. Exit 0 when everything is in place, 100 on a usage error, 111 when some
/// step failed (each printed).
pub fn main(args: &[OsString]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(Failure::Usage(why)) => {
            eprintln!("nullq install: {why}");
            eprintln!("{USAGE}");
            100
        }
        Err(Failure::Failed(n)) => {
            eprintln!("nullq install: {n} step(s) failed");
            111
        }
    }
}

fn parse(args: &[OsString]) -> Result<Options, Failure> {
    let mut opts = Options {
        root: PathBuf::from("/"),
        ..Options::default()
    };
    let mut words = args.iter().skip(1);
    let value =
        |flag: &str, words: &mut dyn Iterator<Item = &OsString>| -> Result<String, Failure> {
            words
                .next()
                .and_then(|v| v.to_str())
                .map(str::to_owned)
                .ok_or_else(|| Failure::Usage(format!("{flag} needs a (UTF-8) value")))
        };
    while let Some(word) = words.next() {
        match word.to_str() {
            Some("--root") => opts.root = PathBuf::from(value("--root", &mut words)?),
            Some("--server") => {
                let server = value("--server", &mut words)?;
                parse_server(&server)
                    .map_err(|e| Failure::Usage(format!("--server {server}: {e}")))?;
                opts.servers.push(server);
            }
            Some("--me") => opts.me = Some(value("--me", &mut words)?),
            Some("--fallback") => opts.fallback = Some(value("--fallback", &mut words)?),
            Some("--dry-run" | "-n") => opts.dry_run = true,
            Some("--help" | "-h") => opts.help = true,
            _ => {
                return Err(Failure::Usage(format!(
                    "unknown argument {}",
                    word.to_string_lossy()
                )))
            }
        }
    }
    Ok(opts)
}

/// The installer: prints and (unless dry) performs each change, counting failures.
struct Installer {
    dry_run: bool,
    changes: usize,
    failures: usize,
    out: io::Stdout,
}

impl Installer {
    fn say(&mut self, what: &str) {
        let prefix = if self.dry_run { "would " } else { "" };
        let _ = writeln!(self.out.lock(), "{prefix}{what}");
    }

    /// Print a change, then do it (unless dry); a failure is printed and counted.
    fn change(&mut self, what: String, act: impl FnOnce() -> io::Result<()>) {
        self.say(&what);
        self.changes += 1;
        if !self.dry_run {
            if let Err(e) = act() {
                eprintln!("nullq install: failed: {what}: {e}");
                self.failures += 1;
            }
        }
    }

    fn warn(&mut self, what: &str) {
        eprintln!("nullq install: warning: {what}");
    }

    fn dir(&mut self, path: &Path, mode: u32) {
        if path.is_dir() {
            return;
        }
        let p = path.to_path_buf();
        self.change(format!("mkdir {}", path.display()), move || {
            DirBuilder::new().recursive(true).mode(mode).create(&p)
        });
    }

    /// Make `path` a directory of exactly `mode` (not through a symlink): created if absent,
    /// its mode fixed if it differs (an older layout); one owned by another user is reported.
    fn queue_dir(&mut self, path: &Path, mode: u32) {
        let p = path.to_path_buf();
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.change(
                    format!("mkdir {} (mode {mode:o})", path.display()),
                    move || {
                        // Missing parents are 0755, so that every user can reach the
                        // directory (a queue or the server memory every user's client writes);
                        // only the directory itself gets `mode`, set once it is there.
                        if let Some(parent) = p.parent() {
                            make_parents(parent)?;
                        }
                        DirBuilder::new().mode(0o700).create(&p)?;
                        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    },
                );
            }
            Err(e) => {
                eprintln!(
                    "nullq install: failed: unable to look at {}: {e}",
                    path.display()
                );
                self.failures += 1;
            }
            Ok(meta) if !meta.file_type().is_dir() => {
                eprintln!(
                    "nullq install: failed: {} is not a directory",
                    path.display()
                );
                self.failures += 1;
            }
            Ok(meta) => {
                if meta.uid() != 0 {
                    self.warn(&format!(
                        "{} is owned by uid {}: root's nullq flush will not use it until it is root's",
                        path.display(),
                        meta.uid()
                    ));
                }
                let current = meta.permissions().mode() & 0o7777;
                if current != mode {
                    self.change(
                        format!("chmod {mode:o} {} (was {current:o})", path.display()),
                        move || fs::set_permissions(&p, fs::Permissions::from_mode(mode)),
                    );
                }
            }
        }
    }

    /// Make `path` a symlink to `target`. An existing link to `target` is left alone; a link
    /// that `ours` recognises is replaced; anything else is moved aside to `NAME.nullq-orig`.
    fn link(&mut self, path: &Path, target: &Path, ours: impl Fn(&Path) -> bool) {
        let aside = path.with_file_name(format!(
            "{}.nullq-orig",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                eprintln!(
                    "nullq install: failed: unable to look at {}: {e}",
                    path.display()
                );
                self.failures += 1;
                return;
            }
            Ok(meta) => {
                let current = fs::read_link(path).ok();
                if current.as_deref() == Some(target) {
                    return; // already right
                }
                let replace =
                    meta.file_type().is_symlink() && current.as_deref().is_some_and(&ours);
                if !replace {
                    if fs::symlink_metadata(&aside).is_ok() {
                        self.warn(&format!(
                            "{} is not nullq's, and {} already exists: left both alone",
                            path.display(),
                            aside.display()
                        ));
                        self.failures += 1;
                        return;
                    }
                    let (from, to) = (path.to_path_buf(), aside.clone());
                    self.change(
                        format!("move {} to {}", path.display(), aside.display()),
                        move || fs::rename(&from, &to),
                    );
                }
            }
        }
        if let Some(parent) = path.parent() {
            self.dir(parent, 0o755);
        }
        let (p, t) = (path.to_path_buf(), target.to_path_buf());
        self.change(
            format!("symlink {} -> {}", path.display(), target.display()),
            move || {
                // Build the link beside and rename it over: the name never goes missing.
                let tmp = p.with_file_name(format!(
                    ".{}.nullq-new",
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&t, &tmp)?;
                fs::rename(&tmp, &p)
            },
        );
    }

    /// Make `path` hold exactly `content` (written beside, then renamed), mode `mode`.
    fn file(&mut self, path: &Path, content: &str, mode: u32) {
        match fs::read(path) {
            Ok(current) if current == content.as_bytes() => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                eprintln!(
                    "nullq install: failed: unable to read {}: {e}",
                    path.display()
                );
                self.failures += 1;
                return;
            }
        }
        let (p, c) = (path.to_path_buf(), content.to_owned());
        self.change(format!("write {}", path.display()), move || {
            // The project's one durable write: a temporary beside it (never through a planted
            // name), mode on the descriptor, fsync, rename over the old file, fsync the folder.
            let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str()))
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a file name", p.display()),
                ));
            };
            let options = nullq_fs::Options {
                mode,
                replace: true,
                ..nullq_fs::Options::default()
            };
            nullq_fs::publish(dir, &format!(".{name}.nullq-new"), name, &options, |f| {
                f.write_all(c.as_bytes())
            })
            .map_err(io::Error::from)
        });
    }
}

fn run(args: &[OsString]) -> Result<(), Failure> {
    let opts = parse(args)?;
    if opts.help {
        let _ = writeln!(io::stdout(), "{HELP}");
        return Ok(());
    }
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Failure::Usage(format!("unable to find the nullq binary: {e}")))?;
    let mut inst = Installer {
        dry_run: opts.dry_run,
        changes: 0,
        failures: 0,
        out: io::stdout(),
    };
    let under = |p: &str| opts.root.join(p.trim_start_matches('/'));
    let home = under(HOME);
    let bin = home.join("bin");
    let control = home.join("control");
    inst.dir(&bin, 0o755);
    inst.dir(&control, 0o755);

    // A link to any file called `nullq` is an older install of ours (the binary moved).
    let is_nullq = |t: &Path| t.file_name().is_some_and(|n| n == "nullq");
    for name in PROGRAMS {
        inst.link(&bin.join(name), &exe, is_nullq);
    }

    let me_path = control.join("me");
    // Debian's /etc/mailname is me's default (crate::control::ControlDir::me): a host
    // that has one keeps it the one place its name is set.
    let mailname = crate::control::read_first_line(&under(crate::control::MAILNAME))
        .ok()
        .flatten()
        .filter(|name| !name.trim_ascii().is_empty());
    match (&opts.me, me_path.exists()) {
        (Some(me), _) => inst.file(&me_path, &format!("{me}\n"), 0o644),
        (None, false) if mailname.is_some() => {}
        (None, false) => match hostname() {
            Some(me) => inst.file(&me_path, &format!("{me}\n"), 0o644),
            None => {
                inst.warn("unable to find this host's name: write control/me yourself, or use --me")
            }
        },
        (None, true) => {}
    }
    if !opts.servers.is_empty() {
        let content: String = opts.servers.iter().map(|s| format!("{s}\n")).collect();
        inst.file(&control.join("qmqpservers"), &content, 0o644);
    } else if !control.join("qmqpservers").exists() {
        inst.warn("no --server given and no control/qmqpservers: mail cannot leave this host until it exists");
    }
    if let Some(dir) = &opts.fallback {
        inst.file(&control.join("fallbackqueue"), &format!("{dir}\n"), 0o644);
        // Every user's sendmail writes there: the layout and its modes are the queue's
        // (crate::fallback::LAYOUT, explained there). An older layout's modes are fixed.
        let base = under(dir);
        for (sub, mode) in crate::fallback::LAYOUT {
            let d = if sub.is_empty() {
                base.clone()
            } else {
                base.join(sub)
            };
            inst.queue_dir(&d, *mode);
        }
    }

    // The memory of failed servers: one file per user in a sticky directory every user's
    // client writes (crate::server_memory explains the modes). Without it the memory is off.
    inst.queue_dir(&under(crate::server_memory::DEFAULT_DIR), 0o1777);

    for page in MAN_PAGES {
        let dir = under("usr/share/man").join(page.dir);
        inst.dir(&dir, 0o755);
        inst.file(&dir.join(page.name), page.text, 0o644);
    }

    let sendmail = Path::new(HOME).join("bin/sendmail");
    for link in SENDMAIL_LINKS {
        // Ours: a link to /var/qmail/bin/sendmail (this one) or to a nullq binary.
        inst.link(&under(link), &sendmail, |t: &Path| {
            is_nullq(t) || t == sendmail
        });
    }

    if inst.changes == 0 {
        let _ = writeln!(
            io::stdout(),
            "nullq install: nothing to change under {}",
            opts.root.display()
        );
    }
    if inst.failures > 0 {
        return Err(Failure::Failed(inst.failures));
    }
    Ok(())
}

/// This host's name (gethostname(2)), for control/me.
fn hostname() -> Option<String> {
    nullq_fs::host::machine_hostname()
}

/// Create `dir` and its missing ancestors, each mode 0755 whatever the umask; existing ones
/// are left as they are.
fn make_parents(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_parents(parent)?;
    }
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_a_name_the_dispatcher_knows() {
        for name in PROGRAMS {
            assert!(crate::program(name).is_some(), "{name}");
        }
    }

    #[test]
    fn man_pages_are_roff() {
        for page in MAN_PAGES {
            // A real page each: a `.so` link would dangle when read from the sources.
            assert!(page.text.starts_with(".TH "), "{}", page.name);
            assert!(
                page.name.ends_with(&page.dir[3..]),
                "{} in {}",
                page.name,
                page.dir
            );
        }
    }

    #[test]
    fn options() {
        let args: Vec<OsString> = [
            "install",
            "--root",
            "/tmp/x",
            "--server",
            "10.0.0.1",
            "--server",
            "[::1]:6280",
            "--dry-run",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let opts = match parse(&args) {
            Ok(o) => o,
            Err(_) => panic!("parse failed"),
        };
        assert_eq!(opts.root, PathBuf::from("/tmp/x"));
        assert_eq!(opts.servers, vec!["10.0.0.1", "[::1]:6280"]);
        assert!(opts.dry_run);
        let bad: Vec<OsString> = ["install", "--server", "not a server!"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(matches!(parse(&bad), Err(Failure::Usage(_))));
    }
}
