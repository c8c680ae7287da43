//! Delivery streams: `nullq serve` with its default Maildir target receives one 100 MB message
//! and delivers it while its peak resident memory (VmHWM) grows by less than 32 MB. The message
//! is streamed from this test too (1 MiB at a time, with `request_frame` around it), and checked
//! in the Maildir by size and a checksum computed while reading. A memory bound, not a timing
//! assertion: the waits are only there so a broken server fails instead of hanging.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use nullq_proto::qmqp::request_frame;

use crate::support::qmqp::is_k;
use crate::support::server::Server;
use crate::support::{files, wait_for};

const SIZE: u64 = 100_000_000;
const PIECE: usize = 1 << 20;
const GROWTH_LIMIT_KB: u64 = 32 * 1024;

/// FNV-1a over a byte stream (the same for any split into pieces).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The test message, produced piece by piece: a header, then numbered lines (some starting
/// with a dot) up to exactly `SIZE` bytes.
struct Source {
    produced: u64,
    line: u64,
    pending: Vec<u8>,
}

impl Source {
    fn new() -> Source {
        Source {
            produced: 0,
            line: 0,
            pending: b"From: big@example.net\nTo: bob@example.net\nSubject: 100 MB\n\n".to_vec(),
        }
    }

    /// The next piece (at most `PIECE` bytes), empty at the end.
    fn next_piece(&mut self) -> Vec<u8> {
        let want = usize::try_from((SIZE - self.produced).min(PIECE as u64)).unwrap_or(PIECE);
        while self.pending.len() < want {
            self.line += 1;
            let dot = if self.line % 97 == 0 { "." } else { "" };
            let text = format!(
                "{dot}line {:010} of the big message, streamed in pieces\n",
                self.line
            );
            self.pending.extend_from_slice(text.as_bytes());
        }
        let rest = self.pending.split_off(want);
        let piece = std::mem::replace(&mut self.pending, rest);
        self.produced += piece.len() as u64;
        piece
    }
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Size and checksum of the last `n` bytes of `path`, read in pieces.
fn tail_checksum(path: &Path, n: u64) -> (u64, u64) {
    let mut file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    assert!(
        len >= n,
        "{} holds {len} bytes, fewer than the {n} sent",
        path.display()
    );
    std::io::copy(&mut (&mut file).take(len - n), &mut std::io::sink()).unwrap();
    let mut sum = Fnv::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        let got = file.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        sum.update(&buf[..got]);
    }
    (len, sum.0)
}

#[test]
fn a_100_mb_message_is_delivered_without_holding_it_in_memory() {
    let server = Server::start(&["--databytes", "200000000"]);
    let pid = server.child.id();
    let before = vm_hwm_kb(pid);

    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (prefix, suffix) = request_frame(SIZE, b"big@example.net", &[b"bob@example.net".to_vec()]);
    stream.write_all(&prefix).unwrap();
    let mut source = Source::new();
    let mut sent = Fnv::new();
    loop {
        let piece = source.next_piece();
        if piece.is_empty() {
            break;
        }
        sent.update(&piece);
        stream.write_all(&piece).unwrap();
    }
    assert_eq!(source.produced, SIZE);
    stream.write_all(&suffix).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        is_k(&answer),
        "answer {answer:?}; log:\n{}",
        server.log_text()
    );

    let new = server.data.join("delivered").join("new");
    let delivered = wait_for(Duration::from_secs(60), || {
        files(&new).len() == 1 && server.queued().is_empty()
    });
    assert!(
        delivered,
        "not delivered in 60 s; log:\n{}",
        server.log_text()
    );
    let after = vm_hwm_kb(pid);

    // The Maildir file is the envelope head and our Received line, then the message as sent.
    let (len, sum) = tail_checksum(&files(&new)[0], SIZE);
    assert!(
        len > SIZE && len < SIZE + 4096,
        "delivered file of {len} bytes"
    );
    assert_eq!(
        sum, sent.0,
        "the delivered message differs from the one sent"
    );

    let growth = after.saturating_sub(before);
    assert!(
        growth < GROWTH_LIMIT_KB,
        "VmHWM grew by {growth} kB ({before} -> {after} kB) to receive and deliver {SIZE} bytes"
    );
    eprintln!("VmHWM {before} kB -> {after} kB (+{growth} kB)");
}
