//! QMQP on the wire: one exchange with a server, decoding what a real client sent, running
//! Postfix's `qmqp-source`, and test peers that are not nullq: a recording proxy, a capturing
//! QMQP server that answers as told, and a black hole.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nullq_proto::qmqp::{encode_request, Event, Limits, RequestDecoder, Response, Status};
use nullq_spool::QueueId;

use super::run_bounded;

/// Send `request` on a new connection, then read until the server closes (bounded).
/// Returns what the server answered (empty if it closed without answering).
pub fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    match TcpStream::connect_timeout(&addr, limit) {
        Ok(stream) => exchange_on(stream, request, limit),
        Err(_) => Vec::new(),
    }
}

/// [`exchange`] from the local address `from` (another client, by address).
pub fn exchange_from(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Vec<u8> {
    match connect_from(from, addr) {
        Ok(stream) => exchange_on(stream, request, limit),
        Err(_) => Vec::new(),
    }
}

fn exchange_on(mut stream: TcpStream, request: &[u8], limit: Duration) -> Vec<u8> {
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// A connection to `to` from the local address `from` (any of 127.0.0.0/8 is this host's, so a
/// test can be several clients by address). Close-on-exec, as std's own sockets are.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddr::from((from, 0)))?;
    rustix::net::connect(&fd, &to)?;
    Ok(TcpStream::from(fd))
}

/// Send one QMQP request; returns the answer as text (`Kok ...`, `D...`, `Z...`, or empty).
pub fn send(addr: SocketAddr, sender: &str, rcpts: &[&str], message: &str) -> String {
    let rcpts: Vec<Vec<u8>> = rcpts.iter().map(|r| r.as_bytes().to_vec()).collect();
    let request = encode_request(message.as_bytes(), sender.as_bytes(), &rcpts);
    let answer = exchange(addr, &request, Duration::from_secs(60));
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether a QMQP answer is `K`.
pub fn is_k(answer: &str) -> bool {
    answer
        .split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with('K'))
}

/// A test message with a unique subject.
pub fn message(subject: &str) -> String {
    format!("From: jason@example.net\nTo: bob@example.net\nSubject: {subject}\n\nHello world.\n")
}

/// Decode a whole recorded request into (message, sender, recipients).
pub fn decode(request: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let mut d = RequestDecoder::new(Limits {
        max_message: 1 << 30,
        ..Limits::default()
    });
    let (mut message, mut sender, mut rcpts) = (Vec::new(), Vec::new(), Vec::new());
    let mut input = request;
    loop {
        let (used, event) = d.feed(input).expect("recorded request decodes");
        input = &input[used..];
        match event {
            Some(Event::Message(b)) => message.extend_from_slice(b),
            Some(Event::Sender(s)) => sender = s,
            Some(Event::Recipient(r)) => rcpts.push(r),
            Some(Event::End) => return (message, sender, rcpts),
            Some(Event::Rejected(e)) => panic!("rejected: {e}"),
            Some(Event::MessageStart { .. }) => {}
            None => panic!("recorded request is incomplete"),
        }
    }
}

/// The queue id in a `Kok <time> qp <id>` answer, if it is one.
pub fn queue_id(answer: &[u8]) -> Option<QueueId> {
    let text = String::from_utf8_lossy(answer);
    let (_, rest) = text.split_once(":K")?;
    rest.trim_end_matches(',').rsplit(' ').next()?.parse().ok()
}

/// Run Postfix's `qmqp-source` (bounded) with `args` against `addr`; returns (exit code,
/// stderr).
pub fn qmqp_source(addr: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    assert!(
        super::have("/usr/sbin/qmqp-source"),
        "qmqp-source (Debian package postfix) is not installed; scripts/test installs it"
    );
    let (status, _, err) = run_bounded(
        Command::new("/usr/sbin/qmqp-source")
            .args(args)
            .arg(addr.to_string()),
        Duration::from_secs(300),
    );
    (status, err)
}

/// One connection seen by a [`Recorder`]: what the client sent and what the server answered.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

/// A transparent TCP proxy in front of a server that records every exchange, so a test can
/// compare what a real client (qmqp-source) sent with what the server stored.
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Relayed>,
}

/// Connections accepted, and the exchanges of those that have finished.
#[derive(Default)]
struct Relayed {
    state: Mutex<(usize, Vec<Exchange>)>,
    finished: Condvar,
}

impl Recorder {
    pub fn start(upstream: SocketAddr) -> Recorder {
        Recorder::on(
            TcpListener::bind("127.0.0.1:0").expect("bind recorder"),
            upstream,
        )
    }

    /// Relay every connection accepted on `listener` to `upstream`, both ways as the bytes
    /// come (so it serves interactive protocols such as SMTP too), recording each exchange.
    pub fn on(listener: TcpListener, upstream: SocketAddr) -> Recorder {
        let addr = listener.local_addr().expect("recorder addr");
        let log: Arc<Relayed> = Arc::default();
        let relayed = Arc::clone(&log);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                // Counted before anything is relayed: a client cannot have its answer (and
                // exit) before its connection is known here.
                relayed.state.lock().expect("lock").0 += 1;
                let relayed = Arc::clone(&relayed);
                thread::spawn(move || {
                    let exchange = relay(client, upstream);
                    relayed.state.lock().expect("lock").1.push(exchange);
                    relayed.finished.notify_all();
                });
            }
        });
        Recorder { addr, log }
    }

    /// Every exchange, once every accepted connection has finished (bounded by `limit`: a
    /// connection still open then is left out, and the test's count shows it).
    pub fn take(&self, limit: Duration) -> Vec<Exchange> {
        let deadline = Instant::now() + limit;
        let mut state = self.log.state.lock().expect("lock");
        while state.1.len() < state.0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .log
                .finished
                .wait_timeout(state, deadline - now)
                .expect("lock")
                .0;
        }
        std::mem::take(&mut state.1)
    }
}

/// Relay one connection: each direction in its own thread, until both ends have closed.
fn relay(client: TcpStream, upstream: SocketAddr) -> Exchange {
    let Ok(server) = TcpStream::connect(upstream) else {
        return Exchange::default();
    };
    let limit = Some(Duration::from_secs(60));
    for s in [&client, &server] {
        let _ = s.set_read_timeout(limit);
    }
    let (Ok(client_r), Ok(server_w)) = (client.try_clone(), server.try_clone()) else {
        return Exchange::default();
    };
    let up = thread::spawn(move || pump(client_r, server_w));
    let response = pump(server, client);
    let request = up.join().unwrap_or_default();
    Exchange { request, response }
}

/// Copy `from` to `to` until EOF (or an error), then close `to` for writing; returns the bytes.
fn pump(mut from: TcpStream, mut to: TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    seen
}

/// One request a [`QmqpServer`] received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The message, up to its first MiB.
    pub message: Vec<u8>,
    /// The message's length in bytes.
    pub bytes: u64,
    pub sender: Vec<u8>,
    pub recipients: Vec<Vec<u8>>,
}

/// What a [`QmqpServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    TempFail,
    PermFail,
    /// Read the request, answer nothing, keep the connection open.
    Silence,
    /// `Z` for a message containing these bytes, `K` (recorded) for any other.
    TempFailContaining(&'static str),
    /// Read the request, record it, write these bytes as they are (not made a netstring:
    /// garbage, a cut answer, or nothing), and close.
    Raw(&'static [u8]),
}

/// A QMQP server on 127.0.0.1 that decodes each request with nullq-proto, records it, and
/// answers as told. Message bytes are counted, and kept only up to their first MiB.
pub struct QmqpServer {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
}

impl QmqpServer {
    pub fn start(answer: Answer) -> QmqpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(Mutex::new(answer));
        let (g, c, s, a) = (
            got.clone(),
            connections.clone(),
            stop.clone(),
            answer.clone(),
        );
        thread::spawn(move || {
            let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            for stream in listener.incoming() {
                // Drop wakes this accept with a connection of its own.
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                *c.lock().expect("lock") += 1;
                let answer = *a.lock().expect("lock");
                let (g, held) = (g.clone(), held.clone());
                thread::spawn(move || {
                    if let Some(open) = serve(stream, answer, g) {
                        held.lock().expect("lock").push(open);
                    }
                });
            }
        });
        QmqpServer {
            addr,
            got,
            connections,
            answer,
            stop,
        }
    }

    /// Answer connections accepted from now on as `answer` (a server that recovers, or fails).
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Connections accepted so far (counted before any byte is read).
    pub fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }
}

impl Drop for QmqpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
    }
}

/// Serve one connection; returns the stream when it must be held open (silence).
fn serve(
    mut stream: TcpStream,
    answer: Answer,
    got: Arc<Mutex<Vec<Received>>>,
) -> Option<TcpStream> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut decoder = RequestDecoder::new(Limits {
        max_message: 200 * 1024 * 1024,
        ..Limits::default()
    });
    let mut rec = Received::default();
    let mut buf = vec![0u8; 65536];
    let mut done = false;
    while !done {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        while !input.is_empty() || !done {
            let Ok((used, event)) = decoder.feed(input) else {
                return None;
            };
            input = &input[used..];
            match event {
                Some(Event::Message(bytes)) => {
                    rec.bytes += bytes.len() as u64;
                    if rec.message.len() < 1024 * 1024 {
                        rec.message.extend_from_slice(bytes)
                    }
                }
                Some(Event::Sender(s)) => rec.sender = s,
                Some(Event::Recipient(r)) => rec.recipients.push(r),
                Some(Event::End) | Some(Event::Rejected(_)) => {
                    done = true;
                    break;
                }
                Some(Event::MessageStart { .. }) => {}
                None => break,
            }
        }
    }
    let response = match answer {
        Answer::Raw(bytes) => {
            got.lock().expect("lock").push(rec);
            let _ = stream.write_all(bytes);
            return None;
        }
        Answer::Accept => Response::new(Status::Ok, "ok test"),
        Answer::TempFail => Response::new(Status::TempFail, "try later"),
        Answer::PermFail => Response::new(Status::PermFail, "go away"),
        Answer::Silence => {
            got.lock().expect("lock").push(rec);
            return Some(stream);
        }
        Answer::TempFailContaining(bytes) => {
            if rec
                .message
                .windows(bytes.len())
                .any(|w| w == bytes.as_bytes())
            {
                Response::new(Status::TempFail, "not this one, not now")
            } else {
                Response::new(Status::Ok, "ok test")
            }
        }
    };
    // Recorded before the answer goes out: a client that has its K finds its message here.
    if response.status == Status::Ok {
        got.lock().expect("lock").push(rec);
    }
    let _ = stream.write_all(&response.encode());
    None
}

/// A listener that accepts connections (the kernel does, from its backlog) and never reads or
/// answers: the client's read timeout is what ends the conversation.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: TcpListener,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        BlackHole {
            addr: l.local_addr().expect("addr"),
            _listener: l,
        }
    }
}
