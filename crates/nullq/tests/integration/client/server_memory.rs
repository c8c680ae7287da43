//! The memory of failed servers (nullq_client::server_memory), through the real binary: a dead
//! server costs one message its timeout, is tried again after its backoff, never stops a
//! message that the plain order would deliver, and nothing planted in its directory is
//! followed, read as a FIFO, or written through.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nullq_client::server_memory::{spread_start, unix_now, VERSION_LINE};

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::{require_root, sh, wait_for, RefusedPort};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"From: jason@example.net\nTo: bob@example.net\nSubject: hi\n\nbody\n";
const ENVELOPE: &[u8] = b"Fjason@example.net\0Tbob@example.net\0\0";

/// `nobody`'s uid and gid: the other local user whose files are planted.
fn nobody() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        sh(&format!("id {flag} nobody"))
            .trim()
            .parse()
            .expect("a number")
    };
    (id("-u"), id("-g"))
}

/// Write `text` as the file `name` in the memory directory, owned by `uid`:`gid`.
fn plant(host: &Host, name: &str, text: &str, (uid, gid): (u32, u32)) {
    let path = host.memory_dir().join(name);
    std::fs::write(&path, text).expect("plant");
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
}

fn queue(host: &Host) -> (i32, String) {
    run_queue(host, "qmail-qmqpc", MESSAGE, ENVELOPE, LIMIT)
}

/// This user's memory file, as text (empty when there is none).
fn memory(host: &Host) -> String {
    std::fs::read_to_string(host.memory_file()).unwrap_or_default()
}

/// The record of `server` in the memory file: (failures, until), if there is one.
fn record(host: &Host, server: std::net::SocketAddr) -> Option<(u32, u64)> {
    let text = memory(host);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{server} ")))?;
    let f: Vec<&str> = line.split(' ').collect();
    Some((f[1].parse().ok()?, f[2].parse().ok()?))
}

/// A memory file in which each of `servers` failed `failures` times and is tried last for
/// another 500 s.
fn remembered(servers: &[std::net::SocketAddr], failures: u32) -> String {
    let now = unix_now();
    let mut text = format!("{VERSION_LINE}\n");
    for s in servers {
        text.push_str(&format!("{s} {failures} {} {now}\n", now + 500));
    }
    text
}

#[test]
fn a_black_hole_costs_one_timeout_then_ten_messages_skip_past_it() {
    let host = Host::new();
    let hole = QmqpServer::start(Answer::Silence);
    let up = QmqpServer::start(Answer::Accept);
    host.control("timeoutremote", "3");
    host.control("qmqpbackoff", "600 600");
    host.servers(&[hole.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hole.connections(), 1);
    assert_eq!(
        record(&host, hole.addr).map(|r| r.0),
        Some(1),
        "{}",
        memory(&host)
    );
    for i in 0..10 {
        let started = Instant::now();
        let (code, err) = queue(&host);
        assert_eq!(code, 0, "message {i}: {err}");
        // A correctness bound, not a speed one: a message that waited for the black hole
        // would have taken at least timeoutremote.
        assert!(started.elapsed() < Duration::from_secs(3), "message {i}");
    }
    assert_eq!(
        hole.connections(),
        1,
        "no message tried the black hole again"
    );
    assert_eq!(up.received().len(), 11);
}

#[test]
fn a_server_that_recovers_is_used_again_after_its_backoff() {
    let host = Host::new();
    let hole = QmqpServer::start(Answer::Silence);
    let up = QmqpServer::start(Answer::Accept);
    host.control("timeoutremote", "2");
    host.control("qmqpbackoff", "1 1");
    host.servers(&[hole.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(record(&host, hole.addr).map(|r| r.0), Some(1));
    // The black hole keeps what it read and never answered.
    let silent = hole.received().len();
    hole.set_answer(Answer::Accept);
    // Mail keeps flowing through the good server until the backoff (a second) is over; the
    // event waited for is the recovered server's first message.
    let mut sent = 0;
    let back = wait_for(LIMIT, || {
        let (code, err) = queue(&host);
        assert_eq!(code, 0, "{err}");
        sent += 1;
        hole.received().len() > silent
    });
    assert!(back, "the recovered server got nothing in {sent} messages");
    assert_eq!(
        up.received().len() + hole.received().len() - silent,
        sent + 1
    );
    assert_eq!(
        record(&host, hole.addr).map(|r| r.0),
        Some(0),
        "its K ended it"
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hole.received().len(), silent + 2, "first in the list again");
}

#[test]
fn with_every_server_remembered_each_is_still_tried_in_order() {
    let host = Host::new();
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[down.addr, up.addr]);
    std::fs::write(host.memory_file(), remembered(&[down.addr, up.addr], 3)).expect("write");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(up.received().len(), 1);
    assert_eq!(record(&host, down.addr).map(|r| r.0), Some(4));
    assert_eq!(record(&host, up.addr).map(|r| r.0), Some(0));

    // Two good servers, both remembered: the first in the file takes it.
    let (a, b) = (
        QmqpServer::start(Answer::Accept),
        QmqpServer::start(Answer::Accept),
    );
    host.servers(&[a.addr, b.addr]);
    std::fs::write(host.memory_file(), remembered(&[a.addr, b.addr], 1)).expect("write");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!((a.received().len(), b.connections()), (1, 0));
}

#[test]
fn a_d_is_not_a_failure_of_the_server() {
    let host = Host::new();
    let refusing = QmqpServer::start(Answer::PermFail);
    host.servers(&[refusing.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 31, "{err}");
    assert_eq!(memory(&host), "", "nothing recorded");
    let z = QmqpServer::start(Answer::TempFail);
    host.servers(&[z.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 71, "{err}");
    assert_eq!(record(&host, z.addr).map(|r| r.0), Some(1), "a Z is");
}

#[test]
fn garbage_in_the_file_is_ignored_and_replaced() {
    let host = Host::new();
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[down.addr, up.addr]);
    let mut garbage = format!("{VERSION_LINE}\n{} x y z\n", up.addr).into_bytes();
    garbage.extend((0..20_000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(host.memory_file(), &garbage).expect("write");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(up.received().len(), 1);
    let text = memory(&host);
    assert_eq!(
        text,
        format!(
            "{VERSION_LINE}\n{} 1 {} {}\n",
            down.addr,
            record(&host, down.addr).map_or(0, |r| r.1),
            record(&host, down.addr).map_or(0, |r| r.1) - 30
        )
    );
}

#[test]
fn a_symlink_planted_as_the_file_is_replaced_and_its_target_untouched() {
    let host = Host::new();
    let victim = host.dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&victim, host.memory_file()).expect("symlink");
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[down.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    let mode = std::fs::metadata(&victim)
        .expect("victim")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    let now = std::fs::symlink_metadata(host.memory_file()).expect("memory file");
    assert!(
        now.file_type().is_file(),
        "the name, not the target, was replaced"
    );
    assert_eq!(record(&host, down.addr).map(|r| r.0), Some(1));
}

#[test]
fn a_fifo_planted_as_the_file_blocks_nothing() {
    let host = Host::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        host.memory_file(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .expect("mkfifo");
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    // Nothing to record: the FIFO is only looked at, and a reader opening it would wait here
    // for a writer until the limit (exit -2).
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let kind = std::fs::symlink_metadata(host.memory_file()).expect("fifo");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind.file_type()));
    // A failure to record: the FIFO's name is replaced, never opened for writing.
    let down = RefusedPort::new();
    host.servers(&[down.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(record(&host, down.addr).map(|r| r.0), Some(1));
    assert_eq!(up.received().len(), 2);
}

#[test]
fn a_directory_others_could_rig_is_not_used() {
    let host = Host::new();
    let (a, b) = (
        QmqpServer::start(Answer::Accept),
        QmqpServer::start(Answer::Accept),
    );
    host.servers(&[a.addr, b.addr]);
    std::fs::write(host.memory_file(), remembered(&[a.addr], 1)).expect("write");
    // World-writable without the sticky bit: anyone could replace anyone's file.
    std::fs::set_permissions(host.memory_dir(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!((a.received().len(), b.connections()), (1, 0), "plain order");
    // With the sticky bit, the same file counts.
    std::fs::set_permissions(host.memory_dir(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.received().len(), 1, "a tried last");
}

#[test]
fn spreading_starts_each_host_at_its_own_server() {
    let host = Host::new();
    let servers: Vec<QmqpServer> = (0..3).map(|_| QmqpServer::start(Answer::Accept)).collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    host.servers(&addrs);
    host.control("qmqpspread", "1");
    // Two names that start at different servers.
    let names = [
        "host1.example.net",
        "host2.example.net",
        "host3.example.net",
    ];
    for me in names {
        host.control("me", me);
        let want = spread_start(me.as_bytes(), 3);
        let before: Vec<usize> = servers.iter().map(|s| s.received().len()).collect();
        let (code, err) = queue(&host);
        assert_eq!(code, 0, "{err}");
        let after: Vec<usize> = servers.iter().map(|s| s.received().len()).collect();
        let took: Vec<usize> = (0..3).filter(|&i| after[i] > before[i]).collect();
        assert_eq!(took, [want], "me={me}");
    }
    let starts: std::collections::BTreeSet<usize> = names
        .iter()
        .map(|n| spread_start(n.as_bytes(), 3))
        .collect();
    assert!(starts.len() > 1, "the names chosen spread: {starts:?}");
    // Off (the default): the first server, whatever `me` is.
    host.control("qmqpspread", "0");
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        servers[0].received().len(),
        names
            .iter()
            .filter(|n| spread_start(n.as_bytes(), 3) == 0)
            .count()
            + 1
    );
}

#[test]
fn qmail_showctl_shows_what_is_remembered() {
    let host = Host::new();
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[down.addr, up.addr]);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    let out = host.cmd("qmail-showctl").output().expect("qmail-showctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "  {}: 1 failure in a row, tried last until ",
            down.addr
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "qmqpbackoff: (Default.) A failed server is tried last for 30 s, doubling to 600 s"
        ),
        "{text}"
    );
    assert!(
        !text.contains("I have no idea what this file does"),
        "{text}"
    );
    // An untrustworthy directory is a warning, and says why.
    std::fs::set_permissions(host.memory_dir(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let out = host.cmd("qmail-showctl").output().expect("qmail-showctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("writable by others without the sticky bit"),
        "{text}"
    );
}

/// Red-team finding 1: another user's records, however many and however "new", reorder root's
/// servers but never get into root's file.
#[test]
fn another_user_s_records_order_the_servers_but_never_enter_root_s_file() {
    require_root("files planted as nobody");
    let host = Host::new();
    let a = QmqpServer::start(Answer::Accept);
    let down = RefusedPort::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[a.addr, down.addr, up.addr]);
    let now = unix_now();
    // nobody's file: `a` failed, and 1000 more servers, all "seen" 500 s from now.
    let mut theirs = format!("{VERSION_LINE}\n{} 5 {} {}\n", a.addr, now + 500, now + 500);
    for i in 0..1000u32 {
        theirs.push_str(&format!(
            "10.{}.{}.1:628 5 {} {}\n",
            i / 256,
            i % 256,
            now + 500,
            now + 500
        ));
    }
    let who = nobody();
    plant(&host, &who.0.to_string(), &theirs, who);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    // What nobody remembers orders root's servers: `a` last, `down` first and failing.
    assert_eq!((a.connections(), up.received().len()), (0, 1));
    // Root's file holds root's observation only.
    let text = memory(&host);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], VERSION_LINE);
    assert!(lines[1].starts_with(&format!("{} 1 ", down.addr)), "{text}");
    // nobody's file is left as it was.
    let planted = host.memory_dir().join(who.0.to_string());
    assert_eq!(std::fs::read_to_string(planted).expect("theirs"), theirs);
}

/// Red-team finding 2: digit-named plants (files named 50000.. owned by the planter) do not use
/// up the budget of files read, so a real user's file among them still counts.
#[test]
fn digit_named_plants_do_not_hide_a_real_user_s_file() {
    require_root("files planted as nobody");
    let host = Host::new();
    let (a, b) = (
        QmqpServer::start(Answer::Accept),
        QmqpServer::start(Answer::Accept),
    );
    host.servers(&[a.addr, b.addr]);
    let who = nobody();
    let text = remembered(&[a.addr], 1);
    // Before the fix 63 names were taken before the owner check, in directory order: with
    // 3000 plants a real file among them was read by chance only (about 2 % of runs).
    for i in 50_000..53_000u32 {
        plant(&host, &i.to_string(), &text, who);
    }
    plant(&host, &who.0.to_string(), &text, who);
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (a.connections(), b.received().len()),
        (0, 1),
        "nobody's record of `a` counted"
    );
}

/// Red-team finding 2: the scan of the directory is bounded, and qmail-showctl says when the
/// bound was reached.
#[test]
fn qmail_showctl_says_when_the_scan_bound_was_reached() {
    let host = Host::new();
    let up = QmqpServer::start(Answer::Accept);
    host.servers(&[up.addr]);
    let show = || {
        let out = host.cmd("qmail-showctl").output().expect("qmail-showctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let warning = "entries: only the first 4096 were looked at";
    assert!(!show().contains(warning));
    for i in 0..4100 {
        std::fs::write(host.memory_dir().join(format!("x{i}")), "").expect("plant");
    }
    let text = show();
    assert!(
        text.contains(&format!(
            "WARNING: {} has more than 4096 {warning}, so some users' files may not count",
            host.memory_dir().display()
        )),
        "{text}"
    );
}

/// Red-team finding 3: a user who marks every QMQP server dead does not make the `smtp://`
/// line (the last resort) everyone's first choice: it stays in its place in the list.
#[test]
fn marking_every_qmqp_server_dead_does_not_move_the_smtp_line_first() {
    require_root("files planted as nobody");
    let host = Host::new();
    let (a, b) = (
        QmqpServer::start(Answer::Accept),
        QmqpServer::start(Answer::Accept),
    );
    // Stands in for the SMTP relay: any connection to it is counted.
    let relay = QmqpServer::start(Answer::Accept);
    host.control("timeoutremote", "2");
    host.control(
        "qmqpservers",
        &format!("{}\n{}\nsmtp://{}", a.addr, b.addr, relay.addr),
    );
    let who = nobody();
    plant(
        &host,
        &who.0.to_string(),
        &remembered(&[a.addr, b.addr], 3),
        who,
    );
    let (code, err) = queue(&host);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        relay.connections(),
        0,
        "the smtp:// line was not tried first"
    );
    assert_eq!(
        (a.received().len(), b.connections()),
        (1, 0),
        "every QMQP line remembered: file order"
    );
}
