//! `nullq health`: the Nagios-style check, on spools made to order. An old message is one
//! committed through the spool's own API with an arrival time in the past: the age `health`
//! reads is the envelope's arrival (stored, checksummed, in the queue file), not a file time
//! that a copy or a backup restore would change, so the test makes exactly what a message
//! that has waited looks like.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use nullq_spool::{Envelope, QueueId, Spool};
use serde_json::Value;

use crate::support::{nullq, require_root, run_bounded, sh};

const T: Duration = Duration::from_secs(60);

/// A fresh spool in a temporary directory.
fn spool() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    Spool::open(&data).expect("create the spool");
    (dir, data)
}

/// Commit one message that arrived `age` ago.
fn queue_message(data: &Path, age: Duration) -> QueueId {
    let spool = Spool::attach(data).expect("attach");
    let mut incoming = spool.receive().expect("receive");
    incoming
        .write(b"Subject: waiting\n\nhello\n")
        .expect("write");
    let envelope = Envelope {
        arrival: SystemTime::now() - age,
        client_addr: "127.0.0.1".into(),
        client_host: String::new(),
        sender: b"a@example.net".to_vec(),
        recipients: vec![b"b@example.net".to_vec()],
    };
    let renamed = incoming.finish(&envelope).expect("finish");
    renamed.commit().expect("commit")
}

/// `nullq health ARGS`: (exit code, stdout).
fn health(args: &[&str]) -> (Option<i32>, String) {
    let (status, out, err) = run_bounded(Command::new(nullq()).arg("health").args(args), T);
    assert!(err.is_empty() || status == Some(3), "stderr: {err}");
    (status, out)
}

fn health_on(data: &Path, args: &[&str]) -> (Option<i32>, String) {
    let data = data.to_str().expect("utf-8 path");
    let mut all = vec!["--data", data];
    all.extend_from_slice(args);
    health(&all)
}

#[test]
fn an_empty_queue_is_ok() {
    let (_dir, data) = spool();
    let (code, out) = health_on(&data, &["--crit-age", "60"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("NULLQ OK - 0 messages queued | messages=0;1000;10000;0 age=0s;"),
        "{out}"
    );
}

#[test]
fn a_message_older_than_crit_age_is_critical_and_older_than_warn_age_a_warning() {
    let (_dir, data) = spool();
    let id = queue_message(&data, Duration::from_secs(120));
    let (code, out) = health_on(&data, &["--crit-age", "60", "--warn-age", "30"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.starts_with("NULLQ CRITICAL - oldest message waited 12"),
        "{out}"
    );
    assert!(out.contains("(critical over 60s)"), "{out}");
    assert!(out.contains("| messages=1;1000;10000;0 age=12"), "{out}");

    let (code, out) = health_on(&data, &["--warn-age", "60", "--crit-age", "3600"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("NULLQ WARNING - "), "{out}");
    // The defaults (an hour, a day) let two minutes pass.
    let (code, out) = health_on(&data, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("NULLQ OK - 1 messages queued, oldest 2m"),
        "{out}"
    );

    let (code, out) = health_on(&data, &["--crit-age", "60", "--json"]);
    assert_eq!(code, Some(2), "{out}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["status"], "CRITICAL");
    assert_eq!(v["code"], 2);
    assert_eq!(v["messages"], 1);
    assert_eq!(v["oldest_id"], id.to_string());
    let age = v["oldest_age_secs"].as_u64().expect("an age");
    assert!((120..600).contains(&age), "{age}");
    assert_eq!(v["writable"], true);
    assert_eq!(v["thresholds"]["crit_age"], 60);
}

#[test]
fn depth_over_the_thresholds_warns_then_is_critical() {
    let (_dir, data) = spool();
    for _ in 0..3 {
        queue_message(&data, Duration::ZERO);
    }
    let (code, out) = health_on(&data, &["--warn-depth", "3"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = health_on(&data, &["--warn-depth", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("NULLQ WARNING - 3 messages queued (warning over 2); 3 messages queued"),
        "{out}"
    );
    let (code, out) = health_on(&data, &["--warn-depth", "1", "--crit-depth", "2"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("| messages=3;1;2;0 "), "{out}");
}

#[test]
fn a_bad_file_in_the_submitted_folder_is_a_warning() {
    let (dir, data) = spool();
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let config = dir.path().join("nullq.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[delivery]\ntarget = \"cgp:{}\"\n",
            data.display(),
            submitted.display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let (code, out) = health(&["--config", config]);
    assert_eq!(code, Some(0), "{out}");

    let id = queue_message(&data, Duration::ZERO);
    let bad = submitted.join(format!("{id}.bad"));
    std::fs::write(&bad, "Return-Path: <a@example.net>\n\nhello\n").expect("bad file");
    // A file already handled (bounced) is not a problem any more.
    std::fs::write(submitted.join(format!("{id}.bad.done")), "x").expect("done file");
    let (code, out) = health(&["--config", config]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!(
            "NULLQ WARNING - 1 CommuniGate Pro .bad files: {}",
            bad.display()
        )),
        "{out}"
    );
    assert!(out.contains(" bad_files=1;;;0"), "{out}");
    let (_, out) = health(&["--config", config, "--json"]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["bad_files"][0], bad.display().to_string());
}

#[test]
fn a_spool_its_owner_cannot_write_is_critical() {
    require_root("health checks as the spool's owner, who must not be root");
    let (dir, data) = spool();
    let d = data.display();
    // The temporary directory is root's (0700): nobody must be able to reach the spool in it.
    sh(&format!(
        "chmod 0755 '{}' && chown -R nobody '{d}' && chmod 0500 '{d}/tmp'",
        dir.path().display()
    ));
    let (code, out) = health_on(&data, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.starts_with(&format!("NULLQ CRITICAL - spool not writable: {d}/tmp: ")),
        "{out}"
    );
    let (_, out) = health_on(&data, &["--json"]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["writable"], false);
    sh(&format!("chmod 0700 '{d}/tmp'"));
    let (code, out) = health_on(&data, &[]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn no_spool_or_bad_flags_are_unknown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nothing-here");
    let (code, out) = health_on(&missing, &[]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.starts_with("NULLQ UNKNOWN - cannot read the spool in "),
        "{out}"
    );
    let (code, out) = health_on(&missing, &["--json"]);
    assert_eq!(code, Some(3), "{out}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["status"], "UNKNOWN");

    let (_dir, data) = spool();
    let (code, out) = health_on(&data, &["--warn-age", "100", "--crit-age", "10"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("--warn-age 100 is more than --crit-age 10"),
        "{out}"
    );
    let (code, _) = health(&["--warn-age", "soon"]);
    assert_eq!(code, Some(3));
}

#[test]
fn help_documents_the_thresholds_and_exit_codes() {
    let (code, out) = health(&["--help"]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "--warn-age <SECS>",
        "--crit-age <SECS>",
        "--warn-depth <N>",
        "--crit-depth <N>",
        "--json",
        "--data <DIR>",
        "--config <FILE>",
        "[default: 3600, or --crit-age if that is less]",
        "[default: 86400]",
        "Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}
