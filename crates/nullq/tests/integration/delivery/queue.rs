//! `nullq queue list|show|retry|delete|stats` on the spool of a running server, text and
//! `--json`; and queue lifetime expiry with a simulated clock (a delay warning first, then the
//! RFC 3464 bounce with status 4.4.7).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, message, send};
use crate::support::server::Server;
use crate::support::{maildir_messages, run_bounded, wait_for};
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
    assert!(server.log_text().contains("SIGUSR1: queue rescanned"));
    assert_eq!(
        json(&server.data, &["list"]).as_array().map(Vec::len),
        Some(1)
    );
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
