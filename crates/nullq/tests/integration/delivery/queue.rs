//! `nullq queue list|show|retry|delete|stats` on the spool of a running server, text and
//! `--json`; and queue lifetime expiry with a simulated clock (a delay warning first, then the
//! RFC 3464 bounce with status 4.4.7).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, message, send};
use crate::support::server::Server;
use crate::support::{maildir_messages, require_root, run_bounded, wait_for};
use crate::support::{nullq, write_file, RefusedPort};

const T: Duration = Duration::from_secs(30);

fn queue(data: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    run_bounded(
        Command::new(nullq())
            .arg("queue")
            .args(args)
            .arg("--data")
            .arg(data),
        T,
    )
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = queue(data, &all);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn queue_tools_on_a_running_server() {
    let refused = RefusedPort::new();
    let dead = refused.port();
    // Retries an hour apart: every second attempt below is the one `retry` asks for.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(
        dir.path(),
        "nullq.toml",
        "[delivery]\nretry_min_secs = 3600\n",
    );
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{dead}"),
    ]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["a@example.net", "b@example.net"],
        &message("first")
    )));
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["c@example.net"],
        &message("second")
    )));
    // A result is logged, then recorded: wait until the queue shows all three recorded.
    let recorded = |list: &serde_json::Value| {
        list.as_array().is_some_and(|msgs| {
            msgs.len() == 2
                && msgs.iter().all(|m| {
                    m["recipients"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().all(|r| r["attempts"].as_u64() >= Some(1)))
                })
        })
    };
    let mut list = json(&server.data, &["list"]);
    let settled = wait_for(T, || {
        list = json(&server.data, &["list"]);
        recorded(&list)
    });
    assert!(settled, "{list}\n{}", server.log_text());
    let msgs = list.as_array().expect("array");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["sender"], "jason@example.net");
    assert_eq!(msgs[0]["recipients"][1]["address"], "b@example.net");
    assert_eq!(msgs[0]["recipients"][1]["status"], "pending");
    assert!(msgs[0]["recipients"][1]["last_result"]
        .as_str()
        .unwrap_or("")
        .contains("Connection refused"));
    let (first, second) = (
        msgs[0]["id"].as_str().unwrap_or("").to_owned(),
        msgs[1]["id"].as_str().unwrap_or("").to_owned(),
    );

    let (code, text, _) = queue(&server.data, &["list"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains(&first)
            && text.contains("<jason@example.net>")
            && text.contains("pending")
            && text.contains("2 messages"),
        "{text}"
    );

    let (code, text, _) = queue(&server.data, &["show", &first]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("Subject: first") && text.contains("<b@example.net>"),
        "{text}"
    );
    assert_eq!(
        json(&server.data, &["show", &second])["header"]
            .as_str()
            .map(|h| h.contains("Subject: second")),
        Some(true)
    );

    let stats = json(&server.data, &["stats"]);
    assert_eq!(stats["messages"], 2);
    assert_eq!(stats["recipients"]["pending"], 3);
    assert_eq!(stats["oldest"]["id"], first.as_str());
    assert!(wait_for(T, || json(&server.data, &["stats"])["runner"]
        ["backends"][format!("smtp://127.0.0.1:{dead}")]["deferred"]
        .as_u64()
        .unwrap_or(0)
        >= 3));

    // delete: gone, no bounce queued.
    let (code, text, _) = queue(&server.data, &["delete", &second]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        json(&server.data, &["list"]).as_array().map(Vec::len),
        Some(1)
    );
    let (code, _, _) = queue(&server.data, &["show", &second]);
    assert_eq!(code, Some(1));

    // retry: the runner is woken and tries at once (the backoff said a minute or more).
    let before = server.log_text().matches("attempt=2").count();
    let r = json(&server.data, &["retry", "--all"]);
    assert_eq!(r["runner_woken"], true, "{r}");
    assert!(
        wait_for(T, || server.log_text().matches("attempt=2").count()
            >= before + 2),
        "{}",
        server.log_text()
    );
    assert!(server.log_text().contains("trigger: queue rescanned"));
    assert_eq!(
        json(&server.data, &["list"]).as_array().map(Vec::len),
        Some(1)
    );
    // An operator's old habit, SIGUSR1, still asks for a rescan and does not kill the server.
    server.signal(libc::SIGUSR1);
    assert!(
        server
            .wait_log(T, |l| l.contains("SIGUSR1: queue rescanned"))
            .is_some(),
        "{}",
        server.log_text()
    );
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["d@example.net"],
        &message("after usr1")
    )));

    // A runner killed with -9 leaves its socket, and nobody reads it: no runner is woken (no
    // stale pid is signalled either: there is none).
    let mut server = server;
    server.kill();
    assert!(server.data.join("trigger").exists());
    let r = json(&server.data, &["retry", "--all"]);
    assert_eq!(r["runner_woken"], false, "{r}");
    assert!(!server.data.join("deliver.pid").exists());
}

/// `nullq serve` as nobody on `data`, delivering to a dead smarthost (mail stays queued).
fn server_as_nobody(data: &Path, dead: &RefusedPort) -> Server {
    let target = format!("smtp://127.0.0.1:{}", dead.port());
    Server::start_in(
        data,
        &[
            "--user",
            "nobody",
            "--group",
            "nogroup",
            "--deliver",
            &target,
        ],
    )
}

/// A directory in which nobody may create the spool (mode 1777, as /tmp).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

const NOBODY: u32 = 65534;

/// Every file and directory under `dir` whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed meanwhile
        };
        if meta.uid() != uid {
            out.push(format!("{} (uid {})", path.display(), meta.uid()));
        }
        if meta.is_dir() {
            out.extend(not_owned_by(&path, uid));
        }
    }
    out
}

/// Wait until every recipient of the `n` queued messages has had an attempt recorded; returns
/// the list.
fn settled(server: &Server, n: usize) -> serde_json::Value {
    let mut list = json(&server.data, &["list"]);
    let ok = wait_for(T, || {
        list = json(&server.data, &["list"]);
        list.as_array().is_some_and(|msgs| {
            msgs.len() == n
                && msgs.iter().all(|m| {
                    m["recipients"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().all(|r| r["attempts"].as_u64() >= Some(1)))
                })
        })
    });
    assert!(ok, "{list}\n{}", server.log_text());
    list
}

/// `nullq queue retry` and `delete` run as root on the spool of a server that runs as nobody:
/// they become the spool's owner first, so the state file they write is nobody's, the server
/// reads it (and tries at once), and a restart finds nothing it cannot read.
#[test]
fn queue_retry_and_delete_as_root_leave_the_server_delivering_and_restartable() {
    require_root("queue tools as root on a spool of nobody's");
    let dir = open_dir();
    let data = dir.path().join("data");
    let dead = RefusedPort::new();
    let mut server = server_as_nobody(&data, &dead);
    for subject in ["first", "second"] {
        assert!(is_k(&send(
            server.addr,
            "jason@example.net",
            &["a@example.net"],
            &message(subject)
        )));
    }
    let list = settled(&server, 2);
    let id = |i: usize| list[i]["id"].as_str().unwrap_or("").to_owned();
    let (first, second) = (id(0), id(1));

    let before = server.log_text().matches("attempt=2").count();
    let r = json(&data, &["retry", &first]);
    assert_eq!(r["retried"][0], first.as_str(), "{r}");
    assert_eq!(r["runner_woken"], true, "{r}");
    let (code, out, err) = queue(&data, &["delete", &second]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The server read the state the tool wrote, and tried again.
    assert!(
        wait_for(T, || server.log_text().matches("attempt=2").count()
            > before),
        "{}",
        server.log_text()
    );
    use std::os::unix::fs::MetadataExt;
    let state = std::fs::metadata(data.join("state").join(&first)).expect("state file");
    assert_eq!(
        state.uid(),
        NOBODY,
        "state/{first} belongs to the spool's owner"
    );
    assert_eq!(not_owned_by(&data, NOBODY), Vec::<String>::new());
    let log = server.log_text();
    assert!(
        !log.contains("Permission denied") && !log.contains("ERROR"),
        "{log}"
    );

    // A restart on the same spool starts, serves, and still has the retried message.
    assert_eq!(server.terminate(T).and_then(|s| s.code()), Some(0));
    let server = server_as_nobody(&data, &dead);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["a@example.net"],
        &message("third")
    )));
    let ids: Vec<String> = settled(&server, 2)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.first(), Some(&first), "{ids:?}");
    assert!(!ids.contains(&second), "{ids:?}");
    assert!(
        !server.log_text().contains("Permission denied"),
        "{}",
        server.log_text()
    );
}

/// A state file the server may not read (root's, mode 0600, in the spool of a server that runs
/// as nobody) does not stop it from starting: it says which file, in an ERROR line, leaves the
/// file and its message alone, and serves.
#[test]
fn a_state_file_the_server_cannot_read_does_not_stop_it_starting() {
    require_root("planting a root-owned state file");
    let dir = open_dir();
    let data = dir.path().join("data");
    let dead = RefusedPort::new();
    let mut server = server_as_nobody(&data, &dead);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["a@example.net"],
        &message("planted")
    )));
    let list = settled(&server, 1);
    let id = list[0]["id"].as_str().unwrap_or("").to_owned();
    assert_eq!(server.terminate(T).and_then(|s| s.code()), Some(0));

    // What `nullq queue retry` as root used to leave: root:root, 0600.
    let planted = data.join("state").join(&id);
    std::fs::write(&planted, "nullq-state 1\npending 1 - -\nend 1\n").expect("plant");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).expect("chown");

    let server = server_as_nobody(&data, &dead);
    let name = planted.display().to_string();
    let line = server.wait_log(T, |l| l.contains("ERROR") && l.contains(&name));
    assert!(line.is_some(), "{}", server.log_text());
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["b@example.net"],
        &message("after")
    )));
    // Left in place, the message too (nothing delivered, nothing set aside).
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&planted).map(|m| m.uid()).ok(), Some(0));
    assert!(data.join("queue").join(&id).exists());
}

#[test]
fn queue_lifetime_expiry_with_a_simulated_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = RefusedPort::new();
    let dead = refused.port();
    let senders = dir.path().join("senders");
    // One real second is six queue hours: the 7-day lifetime ends after about 28 s, the 4-hour
    // warning after less than a second; retries every 1 min .. 1 h of queue time. (The queue
    // clock starts with the runner, so a slow start must stay well inside the lifetime.)
    let cfg = dir.path().join("nullq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[delivery]\ntime_scale = 21600\ndelay_warning_secs = 14400\n[delivery.routes]\n\"sender.example\" = \"maildir:{}\"\n",
            senders.display()
        ),
    )
    .expect("config");
    let server = Server::start(&[
        "--config",
        cfg.to_str().expect("utf8"),
        "--deliver",
        &format!("smtp://127.0.0.1:{dead}"),
    ]);
    assert!(is_k(&send(
        server.addr,
        "jason@sender.example",
        &["nobody@example.net"],
        &message("expires")
    )));
    assert!(
        wait_for(Duration::from_secs(180), || maildir_messages(&senders)
            .len()
            == 2),
        "{}",
        server.log_text()
    );
    let all = maildir_messages(&senders);
    let warning = all
        .iter()
        .find(|m| m.contains("Subject: delivery delayed"))
        .expect("a delay warning");
    assert!(
        warning.contains("Action: delayed")
            && warning.contains("Final-Recipient: rfc822; nobody@example.net"),
        "{warning}"
    );
    let bounce = all
        .iter()
        .find(|m| m.contains("Subject: failure notice"))
        .expect("a bounce");
    for want in [
        "Return-Path: <>",
        "Delivered-To: jason@sender.example",
        "Action: failed",
        "Status: 4.4.7",
        "gave up: in the queue longer than 7.0 days",
        "Connection refused",
        "Subject: expires",
    ] {
        assert!(bounce.contains(want), "{want} missing from:\n{bounce}");
    }
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
}

/// Red-team (abcdbce): a small message is born in `queue/`, marked as being written (mode
/// 1600) from its `O_EXCL` create until its `fchmod` to 0600; the committer then syncs it and
/// answers `K`. Every reader takes such a file as not there (`show`, `list`, `retry` say so),
/// but `nullq queue delete` takes the message's lock and unlinks it all the same: the
/// committer, which holds its own descriptor, then clears the mark on the unlinked inode,
/// flushes and sends `K` for a message no longer anywhere. The file here is in exactly the
/// state the committer leaves it in between its `writev` and its `fchmod`.
#[test]
fn queue_delete_leaves_a_message_still_being_written_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (spool, _) = nullq_spool::Spool::open(&data).expect("open");
    let id = spool
        .store(
            b"Subject: born\n\nstill being written\n".to_vec(),
            nullq_spool::Envelope {
                arrival: std::time::SystemTime::now(),
                client_addr: "192.0.2.7:4711".into(),
                client_host: String::new(),
                sender: b"a@example.net".to_vec(),
                recipients: vec![b"b@example.net".to_vec()],
            },
        )
        .wait()
        .expect("store");
    drop(spool);
    let path = data.join("queue").join(id.to_string());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1600)).expect("mark");
    let id = id.to_string();

    // The readers agree it is not in the queue yet.
    let (code, _, err) = queue(&data, &["show", &id]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no such message"), "{err}");

    let (code, out, err) = queue(&data, &["delete", &id]);
    assert!(
        path.exists(),
        "`nullq queue delete` unlinked a file still being written (exit {code:?}: {out}{err}): \
         its committer answers K for it next"
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no such message"), "{err}");
}

/// What `nullq queue list` and `show` print of a delivery's result, the message's header and
/// the client's host is not the operator's: a pipe that defers with the message's Subject in
/// its error output (an escape sequence in it) must not put that sequence on root's terminal.
#[test]
fn queue_list_and_show_print_what_a_sender_wrote_with_question_marks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = write_file(
        dir.path(),
        "defer.sh",
        "#!/bin/sh\necho \"deferring $(grep -m1 '^Subject:')\" >&2\nexit 75\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let server = Server::start(&["--deliver", &format!("pipe:{}", script.display())]);
    let subject = "hi\u{1b}]0;OWNED\u{7}\u{1b}[2J";
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        &format!("Subject: {subject}\nX-Evil: \u{1b}[31m\n\nbody\n")
    )));
    let list = settled(&server, 1);
    let id = list[0]["id"].as_str().expect("an id").to_owned();
    for args in [vec!["list"], vec!["show", id.as_str()]] {
        let (code, out, err) = queue(&server.data, &args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            !out.bytes().any(|b| b == 0x1b || b == 0x07),
            "{args:?}: {out:?}"
        );
    }
    let (_, shown, _) = queue(&server.data, &["show", &id]);
    assert!(shown.contains("Subject: hi?]0;OWNED??[2J"), "{shown:?}");
    let (_, listed, _) = queue(&server.data, &["list"]);
    assert!(
        listed.contains("deferring Subject: hi?]0;OWNED??[2J"),
        "{listed:?}"
    );
}
