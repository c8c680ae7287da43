//! `nullq serve --metrics-listen`: `GET /metrics` read with the real `curl`, after counted
//! events have shown themselves in the log (a session's line is written after its count), so
//! every number read is exact.

use std::process::Command;
use std::time::Duration;

use crate::support::qmqp::{is_k, qmqp_source, send};
use crate::support::server::Server;
use crate::support::{have, run_bounded, wait_for};

const T: Duration = Duration::from_secs(60);

/// `curl` of `/metrics` on `server`: (HTTP status, body).
fn scrape_path(server: &Server, path: &str) -> (String, String) {
    assert!(have("/usr/bin/curl"), "curl is not installed");
    let addr = server
        .metrics_addr()
        .expect("the ready line names the metrics address");
    let (status, out, err) = run_bounded(
        Command::new("/usr/bin/curl").args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ]),
        T,
    );
    assert_eq!(status, Some(0), "curl failed: {err}");
    let (body, code) = out.rsplit_once('\n').expect("curl printed the status code");
    (code.to_owned(), body.to_owned())
}

fn scrape(server: &Server) -> String {
    let (code, body) = scrape_path(server, "/metrics");
    assert_eq!(code, "200", "{body}");
    body
}

/// The value of the sample line `name` (labels included, as printed).
fn sample(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

/// Wait until `n` session lines with answer `answer` are logged (each was counted before).
fn wait_sessions(server: &Server, n: usize, answer: &str) {
    let word = format!("answer={answer}");
    let found = server.wait_log_count(T, n, |l| {
        l.contains("nullq::session") && l.split_whitespace().any(|w| w == word)
    });
    assert_eq!(found.len(), n, "session lines; log:\n{}", server.log_text());
}

#[test]
fn a_hundred_messages_show_as_a_hundred_k_sessions() {
    let server = Server::start(&["--deliver", "none", "--metrics-listen", "127.0.0.1:0"]);
    let before = scrape(&server);
    assert_eq!(
        sample(&before, "nullq_qmqp_sessions_total{answer=\"K\"}").as_deref(),
        Some("0"),
        "{before}"
    );
    assert_eq!(
        sample(&before, "nullq_queue_messages").as_deref(),
        Some("0")
    );

    let (status, err) = qmqp_source(
        server.addr,
        &[
            "-s",
            "10",
            "-m",
            "100",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
        ],
    );
    assert_eq!(status, Some(0), "qmqp-source failed: {err}");
    wait_sessions(&server, 100, "K");

    let text = scrape(&server);
    assert!(
        text.lines()
            .any(|l| l == "nullq_qmqp_sessions_total{answer=\"K\"} 100"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nullq_qmqp_sessions_total{answer=\"D\"}").as_deref(),
        Some("0")
    );
    // Held (target none), so all 100 are still queued at the scrape.
    assert_eq!(
        sample(&text, "nullq_queue_messages").as_deref(),
        Some("100")
    );
    let age: f64 = sample(&text, "nullq_queue_oldest_message_age_seconds")
        .and_then(|v| v.parse().ok())
        .expect("an age");
    assert!((0.0..600.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, "nullq_commit_duration_seconds_count").as_deref(),
        Some("100"),
        "{text}"
    );
    assert!(text.contains("# TYPE nullq_commit_duration_seconds histogram"));
    assert!(text.contains("# TYPE nullq_cgp_bad_files_total counter"));
}

#[test]
fn a_refused_message_is_counted_under_d_and_a_delivery_by_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let maildir = dir.path().join("Maildir");
    let target = format!("maildir:{}", maildir.display());
    let server = Server::start(&[
        "--deliver",
        &target,
        "--databytes",
        "100",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let big = format!("Subject: big\n\n{}\n", "x".repeat(200));
    let answer = send(server.addr, "a@example.net", &["b@example.net"], &big);
    assert!(answer.contains(":D"), "{answer}");
    wait_sessions(&server, 1, "D");
    let answer = send(
        server.addr,
        "a@example.net",
        &["b@example.net"],
        "Subject: small\n\nhi\n",
    );
    assert!(is_k(&answer), "{answer}");
    wait_sessions(&server, 1, "K");
    // Delivered and removed from the queue: its result was counted before.
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "still queued; log:\n{}",
        server.log_text()
    );

    let text = scrape(&server);
    for (name, want) in [
        ("nullq_qmqp_sessions_total{answer=\"D\"}", "1"),
        ("nullq_qmqp_sessions_total{answer=\"K\"}", "1"),
        ("nullq_qmqp_sessions_total{answer=\"Z\"}", "0"),
        (
            "nullq_deliveries_total{backend=\"maildir\",result=\"delivered\"}",
            "1",
        ),
        ("nullq_queue_messages", "0"),
        ("nullq_queue_oldest_message_age_seconds", "0.0"),
    ] {
        assert_eq!(
            sample(&text, name).as_deref(),
            Some(want),
            "{name}:\n{text}"
        );
    }
    assert_eq!(scrape_path(&server, "/").0, "404");
}

#[test]
fn without_the_flag_there_is_no_endpoint() {
    let server = Server::start(&["--deliver", "none"]);
    assert!(server.metrics_addr().is_none());
    let ready = server
        .wait_log(T, |l| l.contains("nullq serve ready"))
        .expect("ready line");
    assert!(ready.contains(" metrics=- "), "{ready}");
}

#[test]
fn a_connection_closed_without_an_answer_is_counted_as_none() {
    let server = Server::start(&["--deliver", "none", "--metrics-listen", "127.0.0.1:0"]);
    drop(std::net::TcpStream::connect(server.addr).expect("connect"));
    wait_sessions(&server, 1, "-");
    let text = scrape(&server);
    assert_eq!(
        sample(&text, "nullq_qmqp_sessions_total{answer=\"none\"}").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nullq_qmqp_sessions_total{answer=\"K\"}").as_deref(),
        Some("0")
    );
}

#[test]
fn a_bad_file_in_the_submitted_folder_is_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let config = dir.path().join("nullq.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\ntarget = \"cgp:{}\"\n[delivery.cgp]\non_bad = \"keep\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            submitted.display()
        ),
    )
    .expect("config");
    // The key in the file, not the flag, turns the endpoint on here.
    let server = Server::start(&["--config", config.to_str().expect("utf-8")]);
    std::fs::write(
        submitted.join("00061a8f3c2b7d10.00003039.00000007.bad"),
        "Return-Path: <a@example.net>\nEnvelope-To: b@example.net\n\nhello\n",
    )
    .expect("bad file");
    // The runner looks every 10 s; the count comes before the line.
    assert!(
        server
            .wait_log(T, |l| l.contains("CommuniGate Pro could not process"))
            .is_some(),
        "{}",
        server.log_text()
    );
    let text = scrape(&server);
    assert_eq!(
        sample(&text, "nullq_cgp_bad_files_total").as_deref(),
        Some("1"),
        "{text}"
    );
}
