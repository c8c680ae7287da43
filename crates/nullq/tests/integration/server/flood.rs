//! Floods: silent and trickling connections, every slot taken by slow clients, and a burst of
//! connections from one address. Each must end in an answer (`K` or `Z`), never in a
//! connection reset or a slot held for the session's hour.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use nullq_proto::qmqp::encode_request;

use crate::support::qmqp::{connect_from, exchange};
use crate::support::server::{Server, LOG_LEVEL};
use crate::support::{nullq, wait_for};

const T: Duration = Duration::from_secs(60);

fn request(subject: &str) -> Vec<u8> {
    encode_request(
        format!("Subject: {subject}\n\nbody\n").as_bytes(),
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    )
}

/// Read until the server closes; the answer, or the error that ended the read.
fn answer(stream: &mut TcpStream) -> Result<String, std::io::Error> {
    stream.set_read_timeout(Some(T))?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got)?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn a_silent_connection_gets_z_at_the_first_byte_timeout() {
    let server = Server::start(&["--deliver", "none", "--first-byte-timeout", "1"]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    let text = answer(&mut silent).expect("an answer, not a reset");
    assert!(
        text.contains(":Zsorry, no request within the first-byte timeout of 1s (#4.4.2)"),
        "{text}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn a_request_arriving_below_the_minimum_rate_gets_z() {
    // 40 bytes at once, then nothing: 1 s of grace plus 40 bytes at 100 bytes a second is all
    // it gets (the read timeout, 300 s, never comes into it).
    let server = Server::start(&[
        "--deliver",
        "none",
        "--first-byte-timeout",
        "1",
        "--min-data-rate",
        "100",
    ]);
    let request = request("slow");
    let mut slow = TcpStream::connect(server.addr).expect("connect");
    slow.write_all(&request[..40]).expect("write");
    let text = answer(&mut slow).expect("an answer, not a reset");
    assert!(
        text.contains(":Zsorry, the request is arriving too slowly (40 bytes in "),
        "{text}"
    );
    assert!(
        text.contains("under 100 bytes a second after the first 1s) (#4.4.2)"),
        "{text}"
    );
    assert!(server.queued().is_empty());
}

#[test]
fn when_every_slot_is_taken_the_slowest_session_gives_way_to_a_new_client() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--max-sessions",
        "3",
        "--max-sessions-per-ip",
        "3",
        "--first-byte-timeout",
        "120",
    ]);
    let request = request("fair");
    // Three slow sessions from 127.0.0.2 hold every slot, two bytes sent each.
    let mut slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 2), server.addr).expect("connect");
            (&s).write_all(&request[..2]).expect("write");
            server.admitted(s.local_addr().expect("addr"));
            s
        })
        .collect();
    // A session is asked to give way only once it is a second old (EVICTABLE_AFTER): it has
    // had the time to send. The clock is what is waited for here.
    std::thread::sleep(Duration::from_millis(1100));
    // A client from another address sends at a normal pace and gets its K.
    let mut fast = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).expect("connect");
    fast.write_all(&request).expect("write");
    let text = answer(&mut fast).expect("answer");
    assert!(text.contains(":Kok"), "{text}\n{}", server.log_text());
    // Exactly one slow session was answered Z to make room; the other two finish with K.
    let mut answers = Vec::new();
    for s in &mut slow {
        let _ = s.write_all(&request[2..]);
        answers.push(answer(s).expect("an answer, not a reset"));
    }
    let evicted = answers
        .iter()
        .filter(|a| {
            a.contains(":Zsorry, every session is taken and this one is the slowest, try again later (#4.3.2)")
        })
        .count();
    let ok = answers.iter().filter(|a| a.contains(":Kok")).count();
    assert_eq!((evicted, ok), (1, 2), "{answers:?}");
    assert_eq!(server.queued().len(), 3);
}

#[test]
fn two_thousand_connections_from_one_address_each_get_k_or_z_and_none_a_reset() {
    // The test holds 2,000 sockets and the server 2,000 more: raise this process's soft limit
    // (the server, its child, inherits it and raises its own to the hard limit anyway).
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
    assert!(
        limit.maximum.is_none_or(|n| n >= 4200),
        "needs 4,200 open files, hard limit {:?}",
        limit.maximum
    );
    // A refused connection is read for the first-byte timeout (and more as bytes come): the
    // test writes to its 2,000 connections one after another, which on a loaded machine may
    // take longer than the default 10 s for the last of them.
    let server = Server::start(&["--deliver", "none", "--first-byte-timeout", "120"]);
    // Written in 16 pieces, so that a reset after the first fails a later write.
    let body = "x".repeat(1000) + "\n";
    let message = format!("Subject: burst\n\n{}", body.repeat(64));
    let request = encode_request(
        message.as_bytes(),
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    // All 2,000 connected before one sends; all sent before one answer is read. So most
    // requests arrive after their connection was refused (a Z written): a server that closes
    // without reading them makes the kernel answer them with a reset, and the client's write
    // fails before it could read the Z.
    let mut streams: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    let mut failed_writes = Vec::new();
    for s in &mut streams {
        // In pieces, as qmail-qmqpc and qmqp-source write through their buffers: a reset
        // fails the next write.
        if let Err(e) = request
            .chunks(4096)
            .try_for_each(|piece| s.write_all(piece))
        {
            failed_writes.push(e.to_string());
        }
    }
    assert!(
        failed_writes.is_empty(),
        "{} writes failed, e.g. {:?}",
        failed_writes.len(),
        failed_writes.first()
    );
    let (mut k, mut z, mut other) = (0, 0, Vec::new());
    for s in &mut streams {
        match answer(s) {
            Ok(a) if a.contains(":Kok") => k += 1,
            Ok(a) if a.contains(":Zsorry, too many sessions") => z += 1,
            Ok(a) => other.push(a),
            Err(e) => other.push(format!("{:?}: {e}", e.kind())),
        }
    }
    assert!(
        other.is_empty(),
        "{} not K or Z, e.g. {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(k + z, 2000);
    assert!(
        k >= 100,
        "the per-address limit (100) admits at least 100: {k} K, {z} Z"
    );
    assert!(z > 0, "2,000 at once must go over the per-address limit");
    // Every K is a queued message (no Z one is).
    assert!(wait_for(T, || server.queued().len() >= k));
    assert_eq!(server.queued().len(), k);
}

#[test]
fn a_low_open_file_limit_is_raised_to_the_hard_limit_and_caps_the_sessions() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=200:1024")
        .arg("--")
        .arg(nullq())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args(["--deliver", "none", "--log-level", LOG_LEVEL]);
    let server = Server::launch(cmd, &data, &dir.path().join("log"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["1024", "1024"], "{open_files}");
    // Deliveries get at most a quarter of what is left beside the fixed 64:
    // (1024 - 64) / 4 / 4 descriptors a delivery = 60 of the 400 by default.
    let line = server
        .wait_log(T, |l| l.contains("delivery.concurrency lowered"))
        .expect("a warning");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("lowered from 400 to 60"), "{line}");
    // (1024 - 64 - 4 x 60 for the deliveries) / 4 descriptors a session = 180.
    let line = server
        .wait_log(T, |l| l.contains("limits.max_sessions lowered"))
        .expect("a warning");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("lowered from 1000 to 180"), "{line}");
    assert!(line.contains("(RLIMIT_NOFILE) is 1024"), "{line}");
    let answer = exchange(server.addr, &request("capped"), T);
    assert!(String::from_utf8_lossy(&answer).contains(":Kok"));
}

/// A client from another address, sending at a normal pace, tried until it gets its `K` (at
/// most every 200 ms, within `limit`): the slots it needs are freed by the server's clock, which
/// is what is waited for. The last answer.
fn normal_client_until_k(server: &Server, limit: Duration) -> String {
    let request = request("normal");
    let mut last = String::new();
    wait_for(limit, || {
        let mut fast = match connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                return false;
            }
        };
        last = match fast.write_all(&request).and_then(|()| answer(&mut fast)) {
            Ok(text) => text,
            Err(e) => e.to_string(),
        };
        if last.contains(":Kok") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    last
}

/// Sessions that sent 20 KB at once and then stall (under the read timeout) hold every slot.
/// On the average rate they would be "ahead" for 40 s (20 KB at 500 bytes a second); the
/// credit a session can bank is capped at 3 s of the rate, so they are behind, and give way to
/// a new client, a few seconds after their burst.
#[test]
fn sessions_that_sent_fast_and_then_stalled_give_way_to_a_new_client() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--max-sessions",
        "3",
        "--max-sessions-per-ip",
        "3",
        "--first-byte-timeout",
        "120",
        "--read-timeout",
        "120",
    ]);
    // A message of 100,000 bytes, of which 20,000 are sent.
    let mut burst = b"100100:100000:".to_vec();
    burst.extend(std::iter::repeat_n(b'm', 20_000));
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 2), server.addr).expect("connect");
            (&s).write_all(&burst).expect("write");
            server.admitted(s.local_addr().expect("addr"));
            s
        })
        .collect();
    // Well under the 40 s the average would allow.
    let text = normal_client_until_k(&server, Duration::from_secs(20));
    assert!(text.contains(":Kok"), "{text}\n{}", server.log_text());
    assert!(server
        .log_text()
        .contains("every session is taken and this one is the slowest"));
}

/// TLS connections that began a handshake and stall hold every slot: they are in the table of
/// sessions that may be asked to give way from their first moment, so a plain client gets its
/// `K` a second later (not at their first-byte timeout, 120 s here), and the stalled one is
/// closed with one log line.
#[test]
fn stalled_tls_handshakes_give_way_to_a_new_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = crate::support::certs::Certs::make(dir.path());
    let server = Server::start_tls(
        &certs,
        &[
            "--deliver",
            "none",
            "--max-sessions",
            "3",
            "--max-sessions-per-ip",
            "3",
            "--first-byte-timeout",
            "120",
        ],
    );
    let tls = server.tls_addr().expect("tls listener");
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 2), tls).expect("connect");
            // The first bytes of a ClientHello record.
            (&s).write_all(&[0x16, 0x03, 0x01]).expect("write");
            server.admitted(s.local_addr().expect("addr"));
            s
        })
        .collect();
    let text = normal_client_until_k(&server, Duration::from_secs(20));
    assert!(text.contains(":Kok"), "{text}\n{}", server.log_text());
    let closed = server.wait_log(T, |l| {
        l.contains("TLS handshake failed: every session is taken and this handshake is the slowest")
    });
    assert!(closed.is_some(), "{}", server.log_text());
}

/// Reads from `stream` until it holds one whole netstring (an answer), or the limit: the answer.
fn one_answer(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(T)).expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        let whole = text
            .split_once(':')
            .is_some_and(|(len, rest)| len.parse::<usize>().is_ok_and(|n| rest.len() > n));
        if whole {
            return text;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return text,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Forty sessions each send an envelope of 1,000 recipients of 999 bytes (a megabyte the
/// session keeps until its request ends) and hold on before the request's last byte: the open
/// sessions may hold 32 MiB of envelopes in all, so the ones past it are answered `Z` at once
/// instead of the server's memory growing by a megabyte a session; the others finish with `K`.
/// (How many are refused depends on how many were halfway when the budget ran out: all of
/// those are.) Meanwhile an ordinary client still gets its `K`: the first 8 KiB of every
/// session's envelope are its own.
#[test]
fn the_envelopes_that_open_sessions_hold_are_bounded() {
    let server = Server::start(&[
        "--deliver",
        "none",
        "--first-byte-timeout",
        "120",
        "--read-timeout",
        "120",
        "--max-sessions-per-ip",
        "100",
    ]);
    let rcpt = format!("{}@example.net", "r".repeat(999 - "@example.net".len()));
    let rcpts: Vec<Vec<u8>> = (0..1000).map(|_| rcpt.clone().into_bytes()).collect();
    let big = encode_request(b"Subject: big envelope\n\nbody\n", b"a@example.net", &rcpts);
    let (most, last) = big.split_at(big.len() - 1);
    let mut held: Vec<TcpStream> = (0..40)
        .map(|_| {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 2), server.addr).expect("connect");
            (&s).write_all(most).expect("write");
            s
        })
        .collect();
    // No request can end before its last byte is sent, so no budget is given back until then:
    // at least 8 of the 40 (32 MiB hold 32 such envelopes) are answered at once. Wait for that.
    let answered = |s: &TcpStream| {
        let mut b = [0u8; 1];
        s.set_nonblocking(true).expect("nonblocking");
        let has = s.peek(&mut b).is_ok_and(|n| n > 0);
        s.set_nonblocking(false).expect("blocking");
        has
    };
    assert!(
        wait_for(T, || held.iter().filter(|s| answered(s)).count() >= 8),
        "{}",
        server.log_text()
    );
    let refused_early = held.iter().filter(|s| answered(s)).count();
    // The budget is spent, but an ordinary envelope is within a session's own 8 KiB.
    let normal = exchange(server.addr, &request("ordinary"), T);
    let normal = String::from_utf8_lossy(&normal).into_owned();
    assert!(normal.contains(":Kok"), "{normal}");
    let answers: Vec<String> = held
        .iter_mut()
        .map(|s| {
            // A refused session may have closed already: its answer is read all the same.
            let _ = s.write_all(last);
            one_answer(s)
        })
        .collect();
    let ok = answers.iter().filter(|a| a.contains(":Kok")).count();
    let refused = answers
        .iter()
        .filter(|a| a.contains(":Zsorry, the open sessions hold 32 MiB of envelopes already"))
        .count();
    assert_eq!(ok + refused, 40, "{answers:?}");
    // Refused only while the envelopes were held: none of the rest, once they could end.
    assert_eq!(refused, refused_early, "{ok} K, {refused} Z");
    assert_eq!(server.queued().len(), ok + 1);
}
