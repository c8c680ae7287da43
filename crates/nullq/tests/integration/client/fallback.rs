//! The fallback queue against local users (issue 9): entries another user planted in `new/` or
//! `failed/` (a FIFO, a symlink to one, a symlink at a `.why` name), a message queued by a
//! non-root user and flushed by root, and one message failing without holding back the rest.
//! The unprivileged user is `nobody`, run with `Command::uid`/`gid` (the tests run as root).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::{nullq, require_root, sh, RefusedPort};

/// Generous for a run that takes milliseconds; a program blocked on a FIFO is killed at it.
const BOUND: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"From: jason@example.net\nTo: bob@example.net\nSubject: hi\n\nbody\n";
const ENVELOPE: &[u8] = b"Fjason@example.net\0Tbob@example.net\0\0";

/// `nobody`'s uid and gid.
fn nobody() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        sh(&format!("id {flag} nobody"))
            .trim()
            .parse()
            .expect("a number")
    };
    (id("-u"), id("-g"))
}

/// Run `cmd` (bounded) with no input: (exit code, -1 when killed at the bound; stderr).
fn run_code(cmd: Command) -> (i32, String) {
    let out = run(cmd, b"", BOUND);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nullq flush -v` as root with the host's environment.
fn flush(host: &Host) -> (i32, String) {
    let mut cmd = with_host_env(host, env!("CARGO_BIN_EXE_nullq"));
    cmd.arg("flush").arg("-v");
    run_code(cmd)
}

/// What `nobody` plants in `new/`: a FIFO, and a symlink to a FIFO outside the queue. Both are
/// named like ids older than any real one, so a flush meets them first. Returns their names.
fn plant_fifos(host: &Host, new: &Path) -> Vec<String> {
    let (uid, gid) = nobody();
    fs::create_dir_all(new).expect("new/");
    let fifo = new.join("1.000000001.1");
    sh(&format!("mkfifo {}", fifo.display()));
    std::os::unix::fs::chown(&fifo, Some(uid), Some(gid)).expect("chown");
    let outside = host.dir.path().join("outside-fifo");
    sh(&format!("mkfifo {}", outside.display()));
    let link = new.join("2.000000002.2");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).expect("lchown");
    vec!["1.000000001.1".to_owned(), "2.000000002.2".to_owned()]
}

/// Each planted name is still there, as planted, and named on stderr exactly once.
fn planted_left_alone(new: &Path, names: &[String], stderr: &str) {
    use std::os::unix::fs::FileTypeExt;
    let kind = |name: &str| {
        fs::symlink_metadata(new.join(name))
            .expect("planted entry left in place")
            .file_type()
    };
    assert!(kind(&names[0]).is_fifo(), "{} is still a FIFO", names[0]);
    assert!(
        kind(&names[1]).is_symlink(),
        "{} is still a symlink",
        names[1]
    );
    for name in names {
        assert_eq!(
            stderr.matches(name.as_str()).count(),
            1,
            "one line about {name}: {stderr}"
        );
    }
}

/// A host with a fallback queue in which root's message waits (queued while every server
/// was down), and the queue's `new/`.
fn roots_message_waiting() -> (Host, PathBuf) {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let (code, err) = run_queue(&host, "qmail-qmqpc", MESSAGE, ENVELOPE, BOUND);
    assert_eq!(code, 0, "root's message kept: {err}");
    let new = host.home().join("fallback/new");
    (host, new)
}

#[test]
fn planted_fifo_in_new_does_not_hang_roots_flush() {
    require_root("planting as nobody and flushing as root");
    let (host, new) = roots_message_waiting();
    let names = plant_fifos(&host, &new);

    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let (code, err) = flush(&host);
    assert_eq!(code, 0, "finished, nothing of ours left waiting: {err}");
    let got = up.received();
    assert_eq!(got.len(), 1, "root's message sent once, nothing else");
    assert_eq!(got[0].message, MESSAGE);
    planted_left_alone(&new, &names, &err);

    // mailq opens each entry as well: it must not hang on them either.
    let out = run(host.cmd("mailq"), b"", BOUND);
    assert_eq!(out.status.code(), Some(0), "mailq finished");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no message waits");
}

#[test]
fn planted_fifo_in_new_does_not_hang_roots_sendmail() {
    require_root("planting as nobody and sending as root");
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let new = host.home().join("fallback/new");
    let names = plant_fifos(&host, &new);

    // As cron does: root's mail gets K, then the opportunistic flush meets the plants.
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-FCronDaemon", "-i", "-oem", "root"]);
    let out = run(cmd, b"Subject: cron\n\noutput\n", BOUND);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "sendmail finished: {err}");
    assert_eq!(up.received().len(), 1, "root's own message sent");
    planted_left_alone(&new, &names, &err);
}

#[test]
fn planted_why_symlink_does_not_let_roots_flush_overwrite_a_root_file() {
    require_root("a root-owned victim");
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let victim = host.dir.path().join("victim");
    fs::write(&victim, b"precious\n").expect("victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
    let queue = host.home().join("fallback");
    fs::create_dir_all(queue.join("new")).expect("new/");
    fs::create_dir_all(queue.join("failed")).expect("failed/");
    let (uid, gid) = nobody();
    let garbage = queue.join("new/7.000000007.7");
    fs::write(&garbage, b"not a fallback file\n").expect("garbage");
    std::os::unix::fs::chown(&garbage, Some(uid), Some(gid)).expect("chown");
    let why = queue.join("failed/7.000000007.7.why");
    std::os::unix::fs::symlink(&victim, &why).expect("symlink");
    std::os::unix::fs::lchown(&why, Some(uid), Some(gid)).expect("lchown");

    let (code, err) = flush(&host);
    assert_eq!(fs::read(&victim).expect("victim"), b"precious\n", "{err}");
    let meta = fs::metadata(&victim).expect("victim");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), 0);
    assert!(
        fs::symlink_metadata(&why)
            .expect("the planted link")
            .file_type()
            .is_symlink(),
        "the planted link is left as it was"
    );
    assert_eq!(code, 100, "the garbage counts as failed: {err}");
    assert!(
        fs::symlink_metadata(&garbage).is_err(),
        "the garbage does not stay in new/ forever: {err}"
    );
    assert!(queue.join("failed/7.000000007.7").is_file(), "{err}");
    assert!(up.received().is_empty(), "nothing was sent");
}

/// `nullq install` into a temporary root with the fallback queue; returns (root, home). The
/// root is traversable by `nobody`; control/fallbackqueue names the queue under that root.
/// The attack: a user creates the fallback layout before root's cron mail needs it (or where
/// users may create it) and owns it, so that it could delete what root queues there. Root's
/// sendmail with every server down must not say "kept" in a queue it does not trust: it exits
/// 111 (the mail is not lost: cron reports it) and stores nothing there.
#[test]
fn a_fallback_queue_owned_by_another_user_is_not_used_for_roots_mail() {
    require_root("a layout owned by nobody, mail sent as root");
    let (uid, gid) = nobody();
    let host = Host::new();
    let queue = host.home().join("fallback");
    for sub in ["", "tmp", "new", "failed"] {
        let dir = queue.join(sub);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).expect("chmod");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
    }
    host.control("fallbackqueue", &queue.display().to_string());
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-oi", "root"]);
    let out = run(cmd, b"Subject: cron\n\noutput\n", BOUND);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(111), "{err}");
    assert!(err.contains("another user controls"), "{err}");
    assert_eq!(
        fs::read_dir(queue.join("new")).expect("new/").count(),
        0,
        "nothing stored in the foreign queue"
    );
    assert_eq!(fs::read_dir(queue.join("tmp")).expect("tmp/").count(), 0);
}

fn installed(server: &RefusedPort) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("root");
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Command::new(nullq());
    cmd.arg("install")
        .arg("--root")
        .arg(root.path())
        .args(["--server", &server.addr.to_string()])
        .args(["--me", "host1.example.net"])
        .args(["--fallback", "/var/qmail/fallback"]);
    let (code, err) = run_code(cmd);
    assert_eq!(code, 0, "{err}");
    let home = root.path().join("var/qmail");
    fs::write(
        home.join("control/fallbackqueue"),
        format!("{}\n", home.join("fallback").display()),
    )
    .expect("fallbackqueue");
    (root, home)
}

#[test]
fn non_root_user_with_every_server_down_is_queued_once_and_delivered_once() {
    require_root("acting as nobody");
    let down = RefusedPort::new();
    let (_root, home) = installed(&down);
    let (uid, gid) = nobody();
    let mut cmd = Command::new(home.join("bin/sendmail"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NULLQ_HOME", &home)
        .env("USER", "nobody")
        .env("LOGNAME", "nobody")
        .env("HOME", "/")
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .arg("bob@example.net");
    let out = run(cmd, b"Subject: from nobody\n\nhello\n", BOUND);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stored, so success: {err}");
    assert!(err.contains("fallback queue"), "{err}");
    let waiting: Vec<_> = fs::read_dir(home.join("fallback/new"))
        .expect("new/")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(waiting.len(), 1, "stored exactly once");
    assert_eq!(
        fs::metadata(&waiting[0]).expect("file").uid(),
        uid,
        "owned by who queued it"
    );

    // Later, root's nullq-flush.timer runs with the servers back.
    let up = QmqpServer::start(Answer::Accept);
    fs::write(home.join("control/qmqpservers"), format!("{}\n", up.addr)).expect("servers");
    let flush_as_root = || {
        let mut cmd = Command::new(nullq());
        cmd.arg("flush").arg("-v").env("NULLQ_HOME", &home);
        run_code(cmd)
    };
    let (code, err) = flush_as_root();
    assert_eq!(code, 0, "{err}");
    let (code, err) = flush_as_root();
    assert_eq!(code, 0, "{err}");
    let got = up.received();
    assert_eq!(got.len(), 1, "delivered exactly once");
    assert!(
        String::from_utf8_lossy(&got[0].message).contains("Subject: from nobody"),
        "{:?}",
        got[0]
    );
    assert_eq!(got[0].recipients, vec![b"bob@example.net".to_vec()]);
}

#[test]
fn a_message_failing_temporarily_does_not_hold_back_the_others() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    for subject in ["stuck", "free"] {
        let message = format!("Subject: {subject}\n\nbody\n");
        let (code, err) = run_queue(&host, "qmail-qmqpc", message.as_bytes(), ENVELOPE, BOUND);
        assert_eq!(code, 0, "{err}");
    }
    // The older message ("stuck") is answered Z, every other K.
    let picky = QmqpServer::start(Answer::TempFailContaining("Subject: stuck"));
    host.servers(&[picky.addr]);
    let (code, err) = flush(&host);
    assert_eq!(code, 111, "one still waits: {err}");
    let got = picky.received();
    assert_eq!(got.len(), 1, "{err}");
    assert!(String::from_utf8_lossy(&got[0].message).starts_with("Subject: free"));
    let listing = String::from_utf8_lossy(&run(host.cmd("mailq"), b"", BOUND).stdout).into_owned();
    assert_eq!(listing.matches('#').count(), 1, "{listing}");
}

/// A TAB that folds a header is whitespace, not part of an address: `sendmail -t` with a
/// folded `To:` is taken (queued here, every server down) with clean recipients, not refused
/// for a control character.
#[test]
fn a_folded_to_header_gives_clean_recipients_and_is_taken() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let mut cmd = host.cmd("sendmail");
    cmd.arg("-t");
    let msg = b"To: bob@example.net,\n\tamy@example.net (Amy\n\t Smith)\nSubject: fold\n\nhi\n";
    let out = run(cmd, msg, BOUND);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let listing = String::from_utf8_lossy(&run(host.cmd("mailq"), b"", BOUND).stdout).into_owned();
    let mut rcpts: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("\tremote\t"))
        .collect();
    rcpts.sort_unstable();
    assert_eq!(rcpts, ["amy@example.net", "bob@example.net"], "{listing}");
}

/// `host` with a fallback queue and its only server down, one message (`ENVELOPE`) queued
/// there by qmail-qmqpc; the refused port (keep it while the test runs) and the queue's `new/`.
fn one_queued_with_servers_down(host: &Host) -> (RefusedPort, PathBuf) {
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let (code, err) = run_queue(host, "qmail-qmqpc", b"Subject: x\n\nx\n", ENVELOPE, BOUND);
    assert_eq!(code, 0, "{err}");
    (down, host.home().join("fallback/new"))
}

/// `mailq` shows a queued address's control characters as `?`: the queue's files are any local
/// user's to write (or an older client's), and an escape sequence in an address must not reach
/// root's terminal, nor a newline forge a line of the listing.
#[test]
fn mailq_shows_control_characters_in_queued_addresses_as_question_marks() {
    let host = Host::new();
    let (_down, new) = one_queued_with_servers_down(&host);
    let files = crate::support::files(&new);
    assert_eq!(files.len(), 1, "{files:?}");
    let path = new.join(&files[0]);
    let bytes = fs::read(&path).expect("read the queued file");
    let at = bytes
        .windows(15)
        .position(|w| w == b"bob@example.net")
        .expect("the recipient in the file");
    let mut planted = bytes.clone();
    planted[at..at + 15].copy_from_slice(b"b\x1b]0;\x07\n@ample.n");
    fs::write(&path, &planted).expect("plant the address");
    let out = run(host.cmd("mailq"), b"", BOUND);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{listing}");
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "{listing:?}"
    );
    assert!(listing.contains("\tremote\tb?]0;??@ample.n"), "{listing:?}");
    assert_eq!(listing.lines().count(), 2, "{listing:?}");
}

/// A planted file whose name is an id followed by an escape sequence: `mailq` lists it and
/// `nullq flush` moves it to `failed/`, both with the name's control characters as `?`.
#[test]
fn a_planted_name_with_an_escape_sequence_is_shown_with_question_marks() {
    let host = Host::new();
    // One real message first, so that the queue's directories exist as the client makes them.
    let (_down, new) = one_queued_with_servers_down(&host);
    fs::write(new.join("1000000000.1.1\x1b]0;OWNED\x07\x1b[2J"), b"junk").expect("plant");
    let listing = run(host.cmd("mailq"), b"", BOUND);
    let (_, flushed) = flush(&host);
    for (what, bytes) in [
        ("mailq", &listing.stdout[..]),
        ("nullq flush", flushed.as_bytes()),
    ] {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == 0x07),
            "{what}: {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            String::from_utf8_lossy(bytes).contains("1000000000.1.1?]0;OWNED??[2J"),
            "{what}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn flush_moves_a_message_over_databytes_to_failed_says_so_and_delivers_the_others() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let queue = host.home().join("fallback");
    // Queued while every server is down: a small one, one far over the size limit the server
    // will have (and over the largest request it reads in any case, about 1 MB), another small.
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let mut big = b"Subject: big\n\n".to_vec();
    big.resize(16 * 1024 * 1024, b'x');
    let messages: [&[u8]; 3] = [
        b"Subject: older\n\nbody\n",
        &big,
        b"Subject: newer\n\nbody\n",
    ];
    for message in messages {
        let (code, err) = run_queue(&host, "qmail-qmqpc", message, ENVELOPE, BOUND);
        assert_eq!(code, 0, "{err}");
    }
    let ids: Vec<String> = crate::support::files(&queue.join("new"))
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let server =
        crate::support::server::Server::start(&["--deliver", "none", "--databytes", "1000"]);
    host.servers(&[server.addr]);
    let (code, err) = flush(&host);
    assert_eq!(code, 100, "one was refused permanently: {err}");
    // Every message was tried; the refused one is reported with where it went.
    let big_id = ids
        .iter()
        .find(|id| {
            fs::metadata(queue.join("new").join(id)).is_err()
                && queue.join("failed").join(id).is_file()
        })
        .unwrap_or_else(|| panic!("the big one in failed/: {err}"));
    let line = err
        .lines()
        .find(|l| l.contains(big_id.as_str()))
        .unwrap_or_else(|| panic!("no line about {big_id}: {err}"));
    assert!(line.starts_with("nullq flush: "), "{line}");
    assert!(line.contains("over the size limit of 1000 bytes"), "{line}");
    assert!(
        line.contains(&format!("moved to failed/{big_id}")),
        "{line}"
    );
    let why_path = queue.join("failed").join(format!("{big_id}.why"));
    let why = fs::read_to_string(&why_path).expect("why");
    assert!(why.contains("over the size limit"), "{why}");
    // It quotes the refusal, which may name the recipients: for the flusher alone.
    let mode = fs::metadata(&why_path).expect("why").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert!(
        crate::support::files(&queue.join("new")).is_empty(),
        "{err}"
    );
    let spooled: Vec<String> = server
        .queued()
        .iter()
        .map(|p| String::from_utf8_lossy(&fs::read(p).expect("read")).into_owned())
        .collect();
    assert_eq!(spooled.len(), 2, "{err}");
    for subject in ["Subject: older", "Subject: newer"] {
        assert!(
            spooled.iter().any(|m| m.contains(subject)),
            "{subject}: {err}"
        );
    }
}

/// A quoted local part with a NUL in it (`"evil@evil.example\0Tbob"@example.net`, as
/// qmail-inject keeps it): with every server down it would have gone to the fallback queue,
/// whose envelope is in qmail-queue's NUL-separated format, and come back as two recipients,
/// one no header names. It is refused at injection (exit 100) whether or not a server answers,
/// as a server refuses it (`D`), and nothing is queued.
#[test]
fn a_nul_in_a_header_address_is_refused_and_never_queued() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let msg = b"To: \"evil@evil.example\0Tbob\"@example.net\nSubject: contact form\n\nhi\n";
    let mut cmd = host.cmd("sendmail");
    cmd.arg("-t");
    let out = run(cmd, msg, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(100), "{err}");
    assert!(err.contains("contains a control character"), "{err}");
    let new = host.home().join("fallback/new");
    assert!(
        !new.exists() || crate::support::files(&new).is_empty(),
        "{err}"
    );
}

/// A control character other than NUL (here ESC and DEL: nullq's QMQP server answers `D`), or
/// an address too long for qmail-queue, is refused the same way (recipients given as
/// arguments). With every server down the fallback queue must not keep such a message: a later
/// flush could only fail it, after exit 0 told the sender it was on its way.
#[test]
fn an_argument_address_no_server_takes_is_refused_and_never_queued() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let long = format!("{}@example.net", "a".repeat(1200));
    for (rcpt, why) in [
        ("bob\u{1b}[2J@example.net", "contains a control character"),
        ("bob@example.net\u{7f}", "contains a control character"),
        (long.as_str(), "bytes long"),
    ] {
        let mut cmd = host.cmd("sendmail");
        cmd.arg(rcpt);
        let out = run(cmd, b"Subject: hi\n\nhi\n", Duration::from_secs(120));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(100), "{rcpt:?}: {err}");
        assert!(err.contains(why), "{why}: {err}");
    }
    let new = host.home().join("fallback/new");
    assert!(!new.exists() || crate::support::files(&new).is_empty());
}

/// The host's TLS client certificate (a root-only key) serves root's mail only, from the
/// fallback queue too: root's `nullq flush` sends root's own waiting message with it, and
/// another user's without it, so a server that requires a client certificate does not take a
/// message whose sender the certificate never vouched for; it waits, as it did for the user.
#[test]
fn roots_flush_sends_another_users_message_without_the_client_certificate() {
    require_root("acting as nobody");
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = crate::support::certs::Certs::make(dir.path());
    let down = RefusedPort::new();
    let (_root, home) = installed(&down);
    let (uid, gid) = nobody();
    let queue_as = |who: Option<(u32, u32)>, subject: &str| {
        let mut cmd = Command::new(home.join("bin/sendmail"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NULLQ_HOME", &home)
            .env("HOME", "/")
            .current_dir("/")
            .arg("bob@example.net");
        if let Some((uid, gid)) = who {
            cmd.uid(uid).gid(gid);
        }
        let out = run(
            cmd,
            format!("Subject: {subject}\n\nhello\n").as_bytes(),
            BOUND,
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("fallback queue"), "{err}");
    };
    queue_as(Some((uid, gid)), "from nobody");
    queue_as(None, "from root");
    let server = crate::support::server::Server::start_tls(
        &certs,
        &[
            "--deliver",
            "none",
            "--tls-client-ca",
            &certs.ca.display().to_string(),
        ],
    );
    let tls = server.tls_addr().expect("tls listener");
    let control = home.join("control");
    fs::write(control.join("qmqpservers"), format!("qmqps://{tls}\n")).expect("servers");
    for (name, path) in [
        ("tlscafile", &certs.ca),
        ("tlsclientcert", &certs.client_cert),
        ("tlsclientkey", &certs.client_key),
    ] {
        fs::write(control.join(name), format!("{}\n", path.display())).expect("control");
    }
    let mut cmd = Command::new(nullq());
    cmd.arg("flush").arg("-v").env("NULLQ_HOME", &home);
    let (_code, err) = run_code(cmd);
    let taken = server.wait_log(Duration::from_secs(30), |l| l.contains("answer=K"));
    assert!(taken.is_some_and(|l| l.contains("tls=TLSv1.3/")), "{err}");
    assert_eq!(server.queued().len(), 1, "root's alone: {err}");
    let waiting: Vec<_> = fs::read_dir(home.join("fallback/new"))
        .expect("new/")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(waiting.len(), 1, "{err}");
    assert_eq!(fs::metadata(&waiting[0]).expect("entry").uid(), uid);
    assert!(err.contains("still waiting"), "{err}");
}

/// What `nobody` plants by the thousand: symlinks in `new/`, named like ids older than any
/// real one. Returns their names.
fn plant_links(new: &Path, count: usize) -> Vec<String> {
    let (uid, gid) = nobody();
    fs::create_dir_all(new).expect("new/");
    (1..=count)
        .map(|i| {
            let name = format!("1.{i:09}.{i}");
            let link = new.join(&name);
            std::os::unix::fs::symlink("/etc/passwd", &link).expect("symlink");
            std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).expect("lchown");
            name
        })
        .collect()
}

/// The lines of `stderr` that name one of `names`.
fn lines_naming(stderr: &str, names: &[String]) -> usize {
    stderr
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(&format!("{n}:"))))
        .count()
}

/// A local user fills `new/` with names (left alone from session 8: 100,000 symlinks cost
/// every injection 0.9 s and root's cron mail 100,000 lines of stderr). A flush names ten of
/// them and counts the rest in one line; the small flush after an injection looks at no more
/// than 100 entries; root's `nullq flush` still reaches and sends the real message behind them.
#[test]
fn names_planted_by_the_thousand_cost_a_flush_ten_lines() {
    require_root("planting as nobody and flushing as root");
    let (host, new) = roots_message_waiting();
    let names = plant_links(&new, 1000);

    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    // As cron does: root's mail gets K, then the small flush meets the plants first.
    let mut cmd = host.cmd("sendmail");
    cmd.args(["-FCronDaemon", "-i", "-oem", "root"]);
    let out = run(cmd, b"Subject: cron\n\noutput\n", BOUND);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "sendmail finished: {err}");
    assert_eq!(lines_naming(&err, &names), 10, "{err}");
    assert!(
        err.contains("and 90 more entries that are not messages, left in place (not listed)"),
        "100 looked at, 10 named: {err}"
    );
    assert_eq!(err.lines().count(), 11, "{err}");
    assert_eq!(up.received().len(), 1, "the cron mail only: the rest waits");

    let (code, err) = flush(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines_naming(&err, &names), 10, "{err}");
    assert!(
        err.contains("and 990 more entries that are not messages, left in place (not listed)"),
        "{err}"
    );
    let got = up.received();
    assert_eq!(got.len(), 2, "the waiting message sent behind the plants");
    assert_eq!(got[1].message, MESSAGE);
    assert!(names
        .iter()
        .all(|n| fs::symlink_metadata(new.join(n)).is_ok_and(|m| m.file_type().is_symlink())));
}
