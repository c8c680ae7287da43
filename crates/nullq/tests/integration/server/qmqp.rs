//! `nullq serve` (receiving only: `--deliver none`, so the spool can be inspected) against
//! real clients and raw bytes: Postfix's qmqp-source under load, a table of malformed
//! requests, access rules, limits, timeouts and shutdown. Each test starts its own server on a
//! loopback port with its own spool.

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use nullq_proto::qmqp::encode_request;
use nullq_spool::Spool;

use crate::support::qmqp::{decode, exchange, exchange_from, qmqp_source, queue_id, Recorder};
use crate::support::server::{tmp_files, Server};

const T: Duration = Duration::from_secs(60);

#[test]
fn qmqp_source_load_is_spooled_byte_for_byte() {
    let server = Server::start(&["--deliver", "none"]);
    let recorder = Recorder::start(server.addr);
    let messages = 2000;
    let (status, err) = qmqp_source(
        recorder.addr,
        &[
            "-s",
            "20",
            "-m",
            &messages.to_string(),
            "-l",
            "1024",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
        ],
    );
    assert_eq!(status, Some(0), "qmqp-source failed: {err}");
    let exchanges = recorder.take(T);
    assert_eq!(exchanges.len(), messages, "sessions seen by the recorder");
    assert_eq!(server.queued().len(), messages, "messages in queue/");

    let spool = Spool::attach(&server.data).expect("attach spool");
    for ex in &exchanges {
        assert!(
            ex.response.windows(4).any(|w| w == b":Kok"),
            "answer {:?}",
            String::from_utf8_lossy(&ex.response)
        );
        let id = queue_id(&ex.response).expect("a queue id in the K answer");
        let (message, sender, rcpts) = decode(&ex.request);
        let queued = spool.load(&id).expect("load");
        assert_eq!(queued.envelope.sender, sender);
        assert_eq!(queued.envelope.recipients, rcpts);
        assert_eq!(queued.envelope.client_addr, "127.0.0.1");
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut spool.message(&id).expect("message"), &mut stored)
            .expect("read message");
        let text = String::from_utf8_lossy(&stored);
        assert!(text.starts_with("Received: (nullq "), "{text}");
        assert!(
            text.contains(" (127.0.0.1)\n  by mx.test with QMQP; "),
            "{text}"
        );
        assert!(
            stored.ends_with(&message),
            "message bytes differ after the Received lines"
        );
        let header_len = stored.len() - message.len();
        assert_eq!(
            text[..header_len].matches('\n').count(),
            3,
            "exactly our Received lines precede the message"
        );
    }
    assert_eq!(tmp_files(&server.data), 0);
}

/// The table of malformed requests: (what, bytes sent, expected answer prefix or "" for none).
#[test]
fn malformed_requests_get_their_answer_and_store_nothing() {
    let server = Server::start(&["--deliver", "none"]);
    let good = |m: &[u8], s: &[u8], r: &[u8]| encode_request(m, s, &[r.to_vec()]);
    let mut nul = good(b"hi\n", b"a@example.net", b"bob@example.net");
    let at = nul.len() - 8;
    nul[at] = 0; // a NUL inside the recipient
    let half = good(
        b"Subject: half\n\nbody\n",
        b"a@example.net",
        b"b@example.net",
    );
    let table: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "leading zero",
            b"045:0:,17:jason@example.net,17:jason@example.net,,".to_vec(),
            "D",
        ),
        (
            "missing comma",
            b"45:0:,17:jason@example.net;17:jason@example.net,,".to_vec(),
            "D",
        ),
        ("length 10^12, then EOF", b"1000000000000:".to_vec(), "D"),
        ("length 10^18", b"1000000000000000000:".to_vec(), "D"),
        (
            "no recipient",
            b"24:0:,17:jason@example.net,,".to_vec(),
            "D",
        ),
        ("NUL in an address", nul, "D"),
        ("not local@domain", good(b"", b"a@example.net", b"bob"), "D"),
        (
            "CR in sender",
            good(b"", b"a\r@example.net", b"b@example.net"),
            "D",
        ),
        (
            "ESC in a recipient",
            good(b"", b"a@example.net", b"b\x1b[2J@example.net"),
            "D",
        ),
        (
            "TAB in sender",
            good(b"", b"a\tb@example.net", b"b@example.net"),
            "D",
        ),
        (
            "DEL in a recipient",
            good(b"", b"a@example.net", b"b@example.net\x7f"),
            "D",
        ),
        ("stops halfway", half[..half.len() / 2].to_vec(), ""),
    ];
    let mut failures = Vec::new();
    for (what, bytes, expected) in &table {
        let answer = if *what == "stops halfway" || what.ends_with("then EOF") {
            // Send half, then close our side: the server must drop it and answer nothing useful.
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(bytes).expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut a = Vec::new();
            let _ = s.set_read_timeout(Some(T));
            let _ = std::io::Read::read_to_end(&mut s, &mut a);
            a
        } else {
            exchange(server.addr, bytes, T)
        };
        let text = String::from_utf8_lossy(&answer).into_owned();
        let ok = if expected.is_empty() {
            answer.is_empty()
        } else {
            text.split_once(':')
                .is_some_and(|(_, t)| t.starts_with(expected))
        };
        if !ok {
            failures.push(format!("{what}: expected {expected:?}, got {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(server.queued().is_empty(), "nothing may be queued");
    assert_eq!(tmp_files(&server.data), 0, "no tmp leftovers");
    // The reasons are for a person: check two of them.
    let a = exchange(server.addr, &table[4].1, T);
    assert!(
        String::from_utf8_lossy(&a).contains("no recipient"),
        "{a:?}"
    );
    let a = exchange(server.addr, &table[3].1, T);
    assert!(
        String::from_utf8_lossy(&a).contains("over the limit"),
        "{a:?}"
    );
}

/// The control-byte check leaves the addresses a mail system may really send: UTF-8, a quoted
/// local part with a space. They are taken and stored as they came.
#[test]
fn eight_bit_and_quoted_addresses_are_taken_as_they_came() {
    let server = Server::start(&["--deliver", "none"]);
    let sender = "j\u{f6}rg@b\u{fc}cher.example".as_bytes();
    let rcpt = b"\"jo smith\"@example.net";
    let request = encode_request(b"Subject: 8bit\n\nhi\n", sender, &[rcpt.to_vec()]);
    let answer = String::from_utf8_lossy(&exchange(server.addr, &request, T)).into_owned();
    assert!(answer.contains(":K"), "{answer:?}");
    let queued = server.queued();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let stored = std::fs::read(&queued[0]).expect("read the queued message");
    for address in [sender, &rcpt[..]] {
        assert!(
            stored.windows(address.len()).any(|w| w == address),
            "{address:?} not stored as it came"
        );
    }
}

#[test]
fn oversize_and_too_many_recipients_are_refused_after_the_whole_request() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--databytes",
        "1000",
        "--max-recipients",
        "2",
    ]);
    let big = encode_request(
        &[b'x'; 2000],
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let a = String::from_utf8_lossy(&exchange(server.addr, &big, T)).into_owned();
    assert!(
        a.contains(":Dsorry, message is 2000 bytes, over the size limit of 1000 bytes"),
        "{a}"
    );
    let rcpts: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("r{i}@example.net").into_bytes())
        .collect();
    let many = encode_request(b"hi\n", b"a@example.net", &rcpts);
    let a = String::from_utf8_lossy(&exchange(server.addr, &many, T)).into_owned();
    assert!(a.contains(":Dsorry, too many recipients"), "{a}");
    let fits = encode_request(&[b'x'; 1000], b"a@example.net", &rcpts[..2]);
    let a = String::from_utf8_lossy(&exchange(server.addr, &fits, T)).into_owned();
    assert!(a.contains(":Kok"), "{a}");
    assert_eq!(server.queued().len(), 1);
}

/// Far over `databytes` and over the largest request the limits allow (databytes plus the
/// largest envelope, about 1 MB here), and more than the socket buffers hold: a server that
/// answers at the length prefix and closes leaves this client a reset, not its `D`.
const FAR_OVER: usize = 16 * 1024 * 1024;

#[test]
fn a_client_sending_a_request_far_over_databytes_reads_its_d_not_a_reset() {
    let server = Server::start(&["--deliver", "none", "--databytes", "1000"]);
    let big = encode_request(
        &vec![b'x'; FAR_OVER],
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_write_timeout(Some(T)).expect("timeout");
    s.set_read_timeout(Some(T)).expect("timeout");
    // The whole request goes through: the server reads what it was sent before answering.
    s.write_all(&big)
        .expect("the server reads the whole request, so writing it does not fail");
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut answer).expect("the answer, then EOF (no reset)");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains(&format!(
            ":Dsorry, message is {FAR_OVER} bytes, over the size limit of 1000 bytes"
        )),
        "{text}"
    );
    assert!(server.queued().is_empty());
    assert_eq!(tmp_files(&server.data), 0);
}

#[test]
fn a_client_announcing_a_terabyte_then_closing_gets_d_at_once_and_the_server_goes_on() {
    // The read timeout is the default 300 s: an answer within T can only come from the EOF.
    let server = Server::start(&["--deliver", "none", "--databytes", "1000"]);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"1000000000000:999999999000:").expect("write");
    s.write_all(&[b'x'; 64 * 1024]).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    s.set_read_timeout(Some(T)).expect("timeout");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(started.elapsed() < T, "no answer before the bound");
    assert!(
        text.contains(":Dsorry, message is 999999999000 bytes, over the size limit of 1000 bytes"),
        "{text}"
    );
    // Closing before the message's own length gives the request's size as the reason.
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"1000000000000:99").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains(":Dsorry, request is 1000000000000 bytes, over the size limit of"),
        "{text}"
    );
    // Not stuck: the next client is served.
    let ok = encode_request(
        b"Subject: hi\n\nhi\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let a = String::from_utf8_lossy(&exchange(server.addr, &ok, T)).into_owned();
    assert!(a.contains(":Kok"), "{a}");
    assert_eq!(server.queued().len(), 1);
    assert_eq!(tmp_files(&server.data), 0);
}

#[test]
fn a_refused_request_whose_client_goes_quiet_gets_d_at_the_read_timeout() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--databytes",
        "1000",
        "--read-timeout",
        "1",
    ]);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"1000000000000:999999999000:xxxx")
        .expect("write");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    // A D, not the Z of a slow client: the request was refused whatever comes next.
    assert!(
        text.contains(":Dsorry, message is 999999999000 bytes, over the size limit of 1000 bytes"),
        "{text}"
    );
}

#[test]
fn a_client_that_keeps_sending_a_refused_request_is_cut_off_at_the_drain_budget() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--databytes",
        "1000",
        "--drain-bytes",
        "4000000",
    ]);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_write_timeout(Some(T)).expect("timeout");
    s.write_all(b"1000000000000:999999999000:").expect("write");
    // Keep sending: the server stops reading after its budget, answers and closes, and the
    // writes fail (reset or broken pipe) instead of going on for a terabyte.
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent: u64 = 0;
    let failed = loop {
        match s.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) => break e,
        }
        assert!(
            sent < 1 << 30,
            "the server read a gigabyte of a refused request"
        );
    };
    assert!(
        !matches!(
            failed.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the server neither read on nor closed: {failed}"
    );
    let lines = server.wait_log_count(T, 1, |l| {
        l.contains("nullq::session") && l.contains("answer=D ") && l.contains("over the size limit")
    });
    assert_eq!(lines.len(), 1, "{}", server.log_text());
}

/// Send the first `n` bytes of `request`, then nothing more, and read what the server says.
fn answer_to_a_partial_request(server: &Server, request: &[u8], n: usize) -> String {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(&request[..n]).expect("write");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_slow_client_hits_the_read_timeout() {
    let server = Server::start(&["--deliver", "none", "--read-timeout", "1"]);
    let request = encode_request(
        b"Subject: slow\n\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let text = answer_to_a_partial_request(&server, &request, 10);
    assert!(
        text.contains(":Zsorry, read timeout of 1s exceeded"),
        "{text}"
    );
    assert!(server.queued().is_empty());
    assert_eq!(tmp_files(&server.data), 0);
}

/// The answer names the configured session limit, not what was left of it when the last read
/// began (that said "1s" for a 2 s limit, and "0s" for a client that had trickled most of it).
#[test]
fn a_slow_client_hits_the_session_time_limit() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--session-timeout",
        "2",
        "--read-timeout",
        "2",
    ]);
    let request = encode_request(
        b"Subject: slow\n\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let text = answer_to_a_partial_request(&server, &request, 10);
    assert!(
        text.contains(":Zsorry, session time limit of 2s exceeded (#4.4.2)"),
        "{text}"
    );
    assert!(server.queued().is_empty());
}

/// Connect and send the first `n` bytes of `request`; returns once the server has admitted
/// the session (so it holds a slot).
fn hold(server: &Server, request: &[u8], n: usize) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(&request[..n]).expect("write");
    server.admitted(s.local_addr().expect("local addr"));
    s
}

/// Send the rest of `request` on a held session and read the answer.
fn finish(mut s: TcpStream, request: &[u8], n: usize) -> String {
    s.write_all(&request[n..]).expect("write rest");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut a = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut a);
    String::from_utf8_lossy(&a).into_owned()
}

/// A session's log line: once it is written, the session's slot is free again.
fn session_lines(server: &Server, answer: &str, n: usize) -> usize {
    let field = format!("answer={answer} ");
    server
        .wait_log_count(T, n, |l| l.contains("nullq::session") && l.contains(&field))
        .len()
}

#[test]
fn sessions_over_the_limit_get_z_and_the_limit_frees_up() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--max-sessions",
        "2",
        "--max-sessions-per-ip",
        "2",
        "--read-timeout",
        "30",
        "--first-byte-timeout",
        "30",
        // Both holders stay above a byte a second for 50 s: neither is evicted.
        "--min-data-rate",
        "1",
    ]);
    let request = encode_request(
        b"Subject: x\n\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    // Held back: the last byte, so each holder has sent 50 bytes or more.
    assert!(request.len() > 50, "{}", request.len());
    let held = request.len() - 1;
    // Two sessions that have started but not finished hold both slots.
    let holders: Vec<TcpStream> = (0..2).map(|_| hold(&server, &request, held)).collect();
    // From another address: the same one would be over its own limit (2) first.
    let third = exchange_from(Ipv4Addr::new(127, 0, 0, 2), server.addr, &request, T);
    let third = String::from_utf8_lossy(&third).into_owned();
    assert!(
        third.contains(":Zsorry, too many sessions (2 at once)"),
        "{third}"
    );
    // Finish the two held sessions: both get K, and a new session is admitted again.
    for s in holders {
        let a = finish(s, &request, held);
        assert!(a.contains(":Kok"), "{a}");
    }
    assert_eq!(session_lines(&server, "K", 2), 2, "{}", server.log_text());
    let again = String::from_utf8_lossy(&exchange(server.addr, &request, T)).into_owned();
    assert!(again.contains(":Kok"), "{again}");
    assert_eq!(server.queued().len(), 3);
}

#[test]
fn per_address_limit() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--max-sessions-per-ip",
        "1",
        "--read-timeout",
        "30",
        "--first-byte-timeout",
        "30",
    ]);
    let request = encode_request(b"x\n", b"a@example.net", &[b"b@example.net".to_vec()]);
    let holder = hold(&server, &request, 3);
    let second = String::from_utf8_lossy(&exchange(server.addr, &request, T)).into_owned();
    assert!(
        second.contains("too many sessions from your address"),
        "{second}"
    );
    let a = finish(holder, &request, 3);
    assert!(a.contains(":Kok"), "the held session still gets its K: {a}");
}

#[test]
fn denied_clients_are_closed_before_reading_and_sighup_reloads() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("qmqp.tcp");
    std::fs::write(&rules, "128.164.26.3:allow\n:deny\n").expect("rules");
    let server = Server::start(&[
        "--deliver",
        "none",
        "--rules",
        rules.to_str().expect("utf8"),
        // A session is held open across a reload below.
        "--first-byte-timeout",
        "60",
    ]);
    let request = encode_request(b"x\n", b"a@example.net", &[b"b@example.net".to_vec()]);
    let answer = exchange(server.addr, &request, T);
    assert!(
        answer.is_empty(),
        "a denied client gets no answer: {answer:?}"
    );
    assert!(server.queued().is_empty());
    assert!(
        server
            .wait_log(T, |l| l.contains("denied by access rules"))
            .is_some(),
        "{}",
        server.log_text()
    );

    // Allow loopback and reload: the next client gets in, without restarting the server.
    let reloaded = |n: usize| {
        server
            .wait_log_count(T, n, |l| l.contains("SIGHUP: access rules reloaded"))
            .len()
    };
    std::fs::write(&rules, "127.0.0.1:allow\n:deny\n").expect("rules");
    server.signal(libc::SIGHUP);
    assert_eq!(reloaded(1), 1, "{}", server.log_text());
    let answer = exchange(server.addr, &request, T);
    assert!(
        String::from_utf8_lossy(&answer).contains(":Kok"),
        "{answer:?}"
    );
    assert_eq!(server.queued().len(), 1);

    // A session admitted under the old rules survives a reload that would deny it now.
    let open = hold(&server, &request, 4);
    std::fs::write(&rules, "128.164.26.3:allow\n:deny\n").expect("rules");
    server.signal(libc::SIGHUP);
    assert_eq!(reloaded(2), 2, "{}", server.log_text());
    let denied = exchange(server.addr, &request, T);
    assert!(denied.is_empty(), "denied after the reload: {denied:?}");
    let a = finish(open, &request, 4);
    assert!(a.contains(":Kok"), "{a:?}");
    assert_eq!(server.queued().len(), 2);
}

#[test]
fn sigterm_finishes_open_sessions_and_exits_zero() {
    let mut server = Server::start(&[
        "--deliver",
        "none",
        "--read-timeout",
        "30",
        "--first-byte-timeout",
        "60",
    ]);
    let request = encode_request(
        b"Subject: late\n\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    let open = hold(&server, &request, 8);
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait_log(T, |l| l.contains("stopped accepting"))
            .is_some(),
        "{}",
        server.log_text()
    );
    // New connections are no longer accepted...
    assert!(exchange(server.addr, &request, T).is_empty());
    // ...but the open session finishes and gets its K.
    let a = finish(open, &request, 8);
    assert!(a.contains(":Kok"), "{a:?}");
    let status = server.terminate(T).expect("server exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(server.queued().len(), 1);
}
