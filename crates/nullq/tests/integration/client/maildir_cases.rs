//! maildirmake and maildir2mbox against notqmail's, case by case: the exit code, stderr, and
//! the files each leaves (maildirmake's directories and their modes; maildir2mbox's mbox, its
//! mode and bytes, what is left of the maildir and of `$MAILTMP`).
//!
//! Every expected value below was produced by notqmail's maildirmake and maildir2mbox
//! (notqmail/notqmail at a7012e4, built from source with conf-qmail set to a scratch directory,
//! `make maildirmake maildir2mbox`), run with `env -i` plus the case's variables, in a scratch
//! directory holding the case's files, messages' mtimes set to the fixed times of the table (so
//! the `From_` dates are fixed too); nothing varied from run to run. The same comparison was
//! run against the real binaries, through the `maildirmake` and `maildir2mbox` names of the
//! nullq binary, for every case here. Paths are relative: maildir2mbox works inside `$MAILDIR`,
//! so `$MAIL` is `../mbox`.
//!
//! Where nullq differs on purpose (maildir2mbox(1)) the case says how: a last line without a
//! newline is kept, ended with one, where qmail's maildir2mbox drops it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::support::host::{run, Host};

const LIMIT: Duration = Duration::from_secs(60);

/// What a case leaves under the work directory (bin/ and home/ aside): each path, `dir MODE`
/// for a directory, `link` for a symlink, or `MODE` and the file's bytes.
type Tree = BTreeMap<String, String>;

fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if dir == root && (rel == "bin" || rel == "home") {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                out.insert(rel, "link".into());
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                todo.push(path);
            } else {
                let bytes = fs::read(&path).expect("read");
                out.insert(rel, format!("{mode:o} {}", String::from_utf8_lossy(&bytes)));
            }
        }
    }
    out
}

fn expected_tree(entries: &[(&str, &str)]) -> Tree {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

struct MakeCase {
    name: &'static str,
    /// Directories made before the run; a name ending in `=file` is a file instead.
    before: &'static [&'static str],
    args: &'static [&'static str],
    /// Run under `sh -c 'umask MASK; exec ...'`.
    umask: Option<&'static str>,
    code: i32,
    err: &'static str,
    /// The directories the run made (those of `before` aside), with their modes.
    made: &'static [&'static str],
}

const MAILDIR: &[&str] = &["md", "md/cur", "md/new", "md/tmp"];

const MAKE_CASES: &[MakeCase] = &[
    MakeCase {
        name: "no argument",
        before: &[],
        args: &[],
        umask: None,
        code: 100,
        err: "maildirmake: usage: maildirmake name\n",
        made: &[],
    },
    MakeCase {
        name: "a new maildir",
        before: &[],
        args: &["md"],
        umask: None,
        code: 0,
        err: "",
        made: MAILDIR,
    },
    MakeCase {
        name: "only the first argument",
        before: &[],
        args: &["md", "md2"],
        umask: None,
        code: 0,
        err: "",
        made: MAILDIR,
    },
    MakeCase {
        name: "mode 700 under umask 277",
        before: &[],
        args: &["md"],
        umask: Some("277"),
        code: 0,
        err: "",
        made: MAILDIR,
    },
    MakeCase {
        name: "mode 700 under umask 0",
        before: &[],
        args: &["md"],
        umask: Some("0"),
        code: 0,
        err: "",
        made: MAILDIR,
    },
    MakeCase {
        name: "the directory exists",
        before: &["md"],
        args: &["md"],
        umask: None,
        code: 111,
        err: "maildirmake: fatal: unable to mkdir md: file already exists\n",
        made: &[],
    },
    MakeCase {
        name: "a trailing slash, the directory exists",
        before: &["md"],
        args: &["md/"],
        umask: None,
        code: 111,
        err: "maildirmake: fatal: unable to mkdir md/: file already exists\n",
        made: &[],
    },
    MakeCase {
        name: "no parent",
        before: &[],
        args: &["no/such/md"],
        umask: None,
        code: 111,
        err: "maildirmake: fatal: unable to mkdir no/such/md: file does not exist\n",
        made: &[],
    },
    MakeCase {
        name: "the parent is a file",
        before: &["afile=file"],
        args: &["afile/md"],
        umask: None,
        code: 111,
        err: "maildirmake: fatal: unable to mkdir afile/md: not a directory\n",
        made: &[],
    },
    MakeCase {
        name: "an empty name",
        before: &[],
        args: &[""],
        umask: None,
        code: 111,
        err: "maildirmake: fatal: unable to mkdir : file does not exist\n",
        made: &[],
    },
];

#[test]
fn maildirmake_as_qmails() {
    let mut failures = Vec::new();
    for case in MAKE_CASES {
        let host = Host::new();
        let root = host.dir.path();
        for b in case.before {
            match b.strip_suffix("=file") {
                Some(f) => fs::write(root.join(f), "").expect("file"),
                None => fs::create_dir_all(root.join(b)).expect("dir"),
            }
        }
        let before = tree(root);
        let mut cmd = match case.umask {
            Some(mask) => {
                let mut c = Command::new("/bin/sh");
                for (k, v) in host.cmd("maildirmake").get_envs() {
                    if let Some(v) = v {
                        c.env(k, v);
                    }
                }
                c.current_dir(root)
                    .arg("-c")
                    .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
                    .arg(host.bin("maildirmake"));
                c
            }
            None => host.cmd("maildirmake"),
        };
        cmd.args(case.args);
        let out = run(cmd, b"", LIMIT);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut made = tree(root);
        made.retain(|k, _| !before.contains_key(k));
        let want: Tree = case
            .made
            .iter()
            .map(|d| ((*d).to_owned(), "dir 700".to_owned()))
            .collect();
        if out.status.code() != Some(case.code) || err != case.err || made != want {
            failures.push(format!(
                "{}: expected {} {:?} {want:?}, got {:?} {err:?} {made:?}",
                case.name,
                case.code,
                case.err,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// qmail's maildirmake works inside the new directory, so `DIR/tmp` may be longer than a path
/// may be (PATH_MAX, 4096 with its NUL) as long as DIR is not: notqmail's made this one.
#[test]
fn maildirmake_of_a_name_near_path_max() {
    let host = Host::new();
    let long: String = vec!["d".repeat(250); 17].join("/")[..4094].to_owned();
    assert!(!long.ends_with('/'));
    let parent = Path::new(&long).parent().expect("parent");
    fs::create_dir_all(host.dir.path().join(parent)).expect("parents");
    let mut cmd = host.cmd("maildirmake");
    cmd.arg(&long);
    let out = run(cmd, b"", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    // The names are too long for stat(2) from here: look from inside, one directory at a time.
    let mut ls = Command::new("/bin/sh");
    ls.current_dir(host.dir.path())
        .arg("-c")
        .arg("IFS=/; for d in $0; do cd -P \"$d\" || exit 1; done; stat -c '%F %a' tmp new cur")
        .arg(&long);
    let out = run(ls, b"", LIMIT);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "directory 700\n".repeat(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One file made before a maildir2mbox run: its path, bytes and mtime (seconds since the epoch;
/// its atime too).
type Put = (&'static str, &'static str, u64);

struct MboxCase {
    name: &'static str,
    /// Directories made first (none: the usual `md/{new,cur,tmp}`).
    dirs: Option<&'static [&'static str]>,
    files: &'static [Put],
    /// Symlinks: (path, target).
    links: &'static [(&'static str, &'static str)],
    /// `MAIL`, `MAILTMP`, `MAILDIR`; `None` unset.
    env: [Option<&'static str>; 3],
    code: i32,
    err: &'static str,
    /// Everything under the work directory afterwards (see [`tree`]).
    after: &'static [(&'static str, &'static str)],
    /// Where nullq differs by design: its `after` for the one path that differs, and why.
    nullq: Option<(&'static str, &'static str, &'static str)>,
}

const MD: &[(&str, &str)] = &[
    ("md", "dir 755"),
    ("md/cur", "dir 755"),
    ("md/new", "dir 755"),
    ("md/tmp", "dir 755"),
];
const STD_ENV: [Option<&str>; 3] = [Some("../mbox"), Some("../mbox.tmp"), Some("md")];
/// 2003-05-22 01:41:42 UTC and two earlier times.
const T3: u64 = 1_053_567_702;
const T2: u64 = 1_053_567_650;
const T1: u64 = 1_053_567_600;
/// 2001-09-09 01:46:40 UTC.
const T0: u64 = 1_000_000_000;
/// 2100-01-01: a message from the future waits (maildir_scan takes only those before now).
const FUTURE: u64 = 4_102_444_800;

macro_rules! with_md {
    ($($e:expr),* $(,)?) => {
        &[("md", "dir 755"), ("md/cur", "dir 755"), ("md/new", "dir 755"), ("md/tmp", "dir 755"), $($e),*]
    };
}

const MBOX_CASES: &[MboxCase] = &[
    MboxCase {
        name: "nothing set",
        dirs: None,
        files: &[],
        links: &[],
        env: [None, None, None],
        code: 111,
        err: "maildir2mbox: fatal: MAIL not set\n",
        after: MD,
        nullq: None,
    },
    MboxCase {
        name: "no MAILTMP",
        dirs: None,
        files: &[],
        links: &[],
        env: [Some("../mbox"), None, Some("md")],
        code: 111,
        err: "maildir2mbox: fatal: MAILTMP not set\n",
        after: MD,
        nullq: None,
    },
    MboxCase {
        name: "no MAILDIR",
        dirs: None,
        files: &[],
        links: &[],
        env: [Some("../mbox"), Some("../mbox.tmp"), None],
        code: 111,
        err: "maildir2mbox: fatal: MAILDIR not set\n",
        after: MD,
        nullq: None,
    },
    MboxCase {
        name: "no maildir",
        dirs: None,
        files: &[],
        links: &[],
        env: [Some("../mbox"), Some("../mbox.tmp"), Some("nodir")],
        code: 111,
        err: "maildir2mbox: fatal: unable to chdir to nodir: file does not exist\n",
        after: MD,
        nullq: None,
    },
    MboxCase {
        name: "the maildir is a file",
        dirs: None,
        files: &[("afile", "", T0)],
        links: &[],
        env: [Some("../mbox"), Some("../mbox.tmp"), Some("afile")],
        code: 111,
        err: "maildir2mbox: fatal: unable to chdir to afile: not a directory\n",
        after: with_md![("afile", "644 ")],
        nullq: None,
    },
    MboxCase {
        name: "no new/",
        dirs: Some(&["md/cur", "md/tmp"]),
        files: &[],
        links: &[],
        env: STD_ENV,
        code: 111,
        err: "maildir2mbox: fatal: unable to scan $MAILDIR/new: file does not exist\n",
        after: &[("md", "dir 755"), ("md/cur", "dir 755"), ("md/tmp", "dir 755")],
        nullq: None,
    },
    MboxCase {
        name: "no cur/",
        dirs: Some(&["md/new", "md/tmp"]),
        files: &[("md/new/1", "x\n", T0)],
        links: &[],
        env: STD_ENV,
        code: 111,
        err: "maildir2mbox: fatal: unable to scan $MAILDIR/cur: file does not exist\n",
        after: &[
            ("md", "dir 755"),
            ("md/new", "dir 755"),
            ("md/new/1", "644 x\n"),
            ("md/tmp", "dir 755"),
        ],
        nullq: None,
    },
    MboxCase {
        name: "an empty maildir: no mbox made",
        dirs: None,
        files: &[],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: MD,
        nullq: None,
    },
    MboxCase {
        name: "new/ and cur/ in order of mtime after the old mbox, quoting, Return-Path forms",
        dirs: None,
        files: &[
            ("mbox", "From old Thu Jan 01 00:00:00 1970\nold\n\n", T0),
            (
                "md/new/3.x",
                "Return-Path: <jason@example.net>\nSubject: a\n\nFrom me\n>From you\n>>From them\nFrom:\n>Fro\nend\n",
                T3,
            ),
            ("md/cur/1.y:2,S", "Subject: no return path\n\nbody\n", T1),
            ("md/new/2.z", "Return-Path: <>\nSubject: bounce\n\nFrom \n", T2),
            ("md/new/.dot", "hidden\n", T0),
        ],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![
            ("md/new/.dot", "644 hidden\n"),
            (
                "mbox",
                "600 From old Thu Jan 01 00:00:00 1970\nold\n\n\
                 From XXX Thu May 22 01:40:00 2003\nSubject: no return path\n\nbody\n\n\
                 From MAILER-DAEMON Thu May 22 01:40:50 2003\nReturn-Path: <>\nSubject: bounce\n\n>From \n\n\
                 From jason@example.net Thu May 22 01:41:42 2003\nReturn-Path: <jason@example.net>\nSubject: a\n\n\
                 >From me\n>>From you\n>>>From them\nFrom:\n>Fro\nend\n\n"
            ),
        ],
        nullq: None,
    },
    MboxCase {
        name: "odd Return-Path lines",
        dirs: None,
        files: &[
            ("md/new/1", "Return-Path: <a b\tc>\nx\n", T0),
            ("md/new/2", "Return-Path: <\n", T0 + 1),
            ("md/new/4", "Return-Path: <y>  \nz\n", T0 + 3),
            ("md/new/5", "return-path: <lower>\n\n", T0 + 4),
            ("md/new/6", "", T0 + 5),
            ("md/new/7", "\n", T0 + 6),
            ("md/new/8", "Return-Path:<nospace>\n", T0 + 7),
            ("md/new/9", "Return-Path: <\r\n", T0 + 8),
            ("md/new/10", "Return-Path: <>x\n", T0 + 9),
            ("md/new/11", "Return-Path: <a>\r\n", T0 + 10),
        ],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![(
            "mbox",
            "600 From a-b-c Sun Sep 09 01:46:40 2001\nReturn-Path: <a b\tc>\nx\n\n\
             From  Sun Sep 09 01:46:41 2001\nReturn-Path: <\n\n\
             From y>- Sun Sep 09 01:46:43 2001\nReturn-Path: <y>  \nz\n\n\
             From XXX Sun Sep 09 01:46:44 2001\nreturn-path: <lower>\n\n\n\
             From XXX Sun Sep 09 01:46:45 2001\n\n\
             From XXX Sun Sep 09 01:46:46 2001\n\n\n\
             From XXX Sun Sep 09 01:46:47 2001\nReturn-Path:<nospace>\n\n\
             From  Sun Sep 09 01:46:48 2001\nReturn-Path: <\r\n\n\
             From MAILER-DAEMON Sun Sep 09 01:46:49 2001\nReturn-Path: <>x\n\n\
             From a> Sun Sep 09 01:46:50 2001\nReturn-Path: <a>\r\n\n"
        )],
        nullq: None,
    },
    MboxCase {
        name: "a last line without newline",
        dirs: None,
        files: &[("md/new/1", "Return-Path: <a@b>\n\nbody\nend", T0)],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![(
            "mbox",
            "600 From a@b Sun Sep 09 01:46:40 2001\nReturn-Path: <a@b>\n\nbody\n\n"
        )],
        nullq: Some((
            "mbox",
            "600 From a@b Sun Sep 09 01:46:40 2001\nReturn-Path: <a@b>\n\nbody\nend\n\n",
            "the last line is kept",
        )),
    },
    MboxCase {
        name: "a message of one line without newline",
        dirs: None,
        files: &[("md/new/1", "Return-Path: <x>", T0)],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![("mbox", "600 From XXX Sun Sep 09 01:46:40 2001\n\n")],
        nullq: Some((
            "mbox",
            "600 From XXX Sun Sep 09 01:46:40 2001\nReturn-Path: <x>\n\n",
            "the line is kept",
        )),
    },
    MboxCase {
        name: "relative MAIL and MAILTMP are inside the maildir",
        dirs: None,
        files: &[("md/new/1", "Return-Path: <a@b>\nx\n", T3)],
        links: &[],
        env: [Some("mbox"), Some("mbox.tmp"), Some("md")],
        code: 0,
        err: "",
        after: with_md![(
            "md/mbox",
            "600 From a@b Thu May 22 01:41:42 2003\nReturn-Path: <a@b>\nx\n\n"
        )],
        nullq: None,
    },
    MboxCase {
        name: "the mode of an existing MAILTMP is kept",
        dirs: None,
        files: &[("mbox.tmp", "junk", T0), ("md/new/1", "x\n", T0)],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![("mbox", "644 From XXX Sun Sep 09 01:46:40 2001\nx\n\n")],
        nullq: None,
    },
    MboxCase {
        name: "the mbox is a directory",
        dirs: Some(&["md/new", "md/cur", "md/tmp", "mbox"]),
        files: &[("md/new/1", "x\n", T0)],
        links: &[],
        env: STD_ENV,
        code: 111,
        err: "maildir2mbox: fatal: unable to lock ../mbox: is a directory\n",
        after: with_md![("mbox", "dir 755"), ("md/new/1", "644 x\n")],
        nullq: None,
    },
    MboxCase {
        name: "the mbox is under a file",
        dirs: None,
        files: &[("afile", "", T0), ("md/new/1", "x\n", T0)],
        links: &[],
        env: [Some("../afile/mbox"), Some("../mbox.tmp"), Some("md")],
        code: 111,
        err: "maildir2mbox: fatal: unable to lock ../afile/mbox: not a directory\n",
        after: with_md![("afile", "644 "), ("md/new/1", "644 x\n")],
        nullq: None,
    },
    MboxCase {
        name: "the mbox's directory does not exist",
        dirs: None,
        files: &[("md/new/1", "x\n", T0)],
        links: &[],
        env: [Some("../no/mbox"), Some("../mbox.tmp"), Some("md")],
        code: 111,
        err: "maildir2mbox: fatal: unable to lock ../no/mbox: file does not exist\n",
        after: with_md![("md/new/1", "644 x\n")],
        nullq: None,
    },
    MboxCase {
        name: "MAILTMP's directory does not exist: the mbox is made, empty",
        dirs: None,
        files: &[("md/new/1", "x\n", T0)],
        links: &[],
        env: [Some("../mbox"), Some("../no/mbox.tmp"), Some("md")],
        code: 111,
        err: "maildir2mbox: fatal: unable to create ../no/mbox.tmp: file does not exist\n",
        after: with_md![("mbox", "600 "), ("md/new/1", "644 x\n")],
        nullq: None,
    },
    MboxCase {
        name: "MAILTMP is a directory",
        dirs: Some(&["md/new", "md/cur", "md/tmp", "mbox.tmp"]),
        files: &[("md/new/1", "x\n", T0)],
        links: &[],
        env: STD_ENV,
        code: 111,
        err: "maildir2mbox: fatal: unable to create ../mbox.tmp: is a directory\n",
        after: with_md![
            ("mbox", "600 "),
            ("mbox.tmp", "dir 755"),
            ("md/new/1", "644 x\n")
        ],
        nullq: None,
    },
    MboxCase {
        name: "a message that cannot be read: nothing removed, MAILTMP left",
        dirs: Some(&["md/new", "md/cur", "md/tmp", "md/new/d"]),
        files: &[("md/new/1", "x\n", T0 + 1)],
        links: &[],
        env: STD_ENV,
        code: 111,
        err: "maildir2mbox: fatal: unable to read $MAILDIR/new/d: is a directory\n",
        after: with_md![
            ("mbox", "600 "),
            ("mbox.tmp", "600 "),
            ("md/new/1", "644 x\n"),
            ("md/new/d", "dir 755")
        ],
        nullq: None,
    },
    MboxCase {
        name: "a dangling symlink is not a message",
        dirs: None,
        files: &[],
        links: &[("md/new/l", "/nonexistent")],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![("md/new/l", "link")],
        nullq: None,
    },
    MboxCase {
        name: "a message from the future waits",
        dirs: None,
        files: &[("md/new/f", "x\n", FUTURE), ("md/cur/1", "y\n", T0)],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![
            ("mbox", "600 From XXX Sun Sep 09 01:46:40 2001\ny\n\n"),
            ("md/new/f", "644 x\n")
        ],
        nullq: None,
    },
    MboxCase {
        name: "files in tmp/ unread for 36 hours are removed, dot files kept",
        dirs: None,
        files: &[("md/tmp/old", "x", T0), ("md/tmp/.olddot", "z", T0)],
        links: &[],
        env: STD_ENV,
        code: 0,
        err: "",
        after: with_md![("md/tmp/.olddot", "644 z")],
        nullq: None,
    },
];

/// Set a file's or directory's atime and mtime (owned by us, so read access is enough).
fn set_times(path: &Path, secs: u64) {
    let when = UNIX_EPOCH + Duration::from_secs(secs);
    let times = fs::FileTimes::new().set_accessed(when).set_modified(when);
    fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .expect("times");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn maildir2mbox_as_qmails() {
    let mut failures = Vec::new();
    for case in MBOX_CASES {
        let host = Host::new();
        let root = host.dir.path();
        // Modes set, not left to the test's umask: the table records them.
        for d in case.dirs.unwrap_or(&["md/new", "md/cur", "md/tmp"]) {
            fs::create_dir_all(root.join(d)).expect("dir");
            let mut p = root.join(d);
            while p != root {
                chmod(&p, 0o755);
                p.pop();
            }
        }
        for (path, bytes, mtime) in case.files {
            fs::write(root.join(path), bytes).expect("file");
            chmod(&root.join(path), 0o644);
            set_times(&root.join(path), *mtime);
        }
        // A directory in new/ is a message to maildir_scan: give it the table's time too.
        if root.join("md/new/d").is_dir() {
            set_times(&root.join("md/new/d"), T0);
        }
        for (path, target) in case.links {
            std::os::unix::fs::symlink(target, root.join(path)).expect("symlink");
        }
        // A file in tmp/ written now is fresh, however slow the run.
        let fresh = root.join("md/tmp/fresh");
        let with_fresh = root.join("md/tmp").is_dir();
        if with_fresh {
            fs::write(&fresh, "y").expect("fresh");
        }
        let mut cmd = host.cmd("maildir2mbox");
        for (name, value) in ["MAIL", "MAILTMP", "MAILDIR"].iter().zip(case.env) {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let out = run(cmd, b"", LIMIT);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut got = tree(root);
        if with_fresh && got.remove("md/tmp/fresh").is_none() {
            failures.push(format!("{}: a fresh file in tmp/ was removed", case.name));
        }
        let mut want = expected_tree(case.after);
        if let Some((path, value, _why)) = case.nullq {
            want.insert(path.to_owned(), value.to_owned());
        }
        if out.status.code() != Some(case.code) || err != case.err || got != want {
            failures.push(format!(
                "{}: expected {} {:?}\n  {want:?}\ngot {:?} {err:?}\n  {got:?}",
                case.name,
                case.code,
                case.err,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
