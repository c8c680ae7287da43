//! Helpers shared by the integration tests.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use nullq_spool::{Envelope, QueueId, Spool};
use tempfile::TempDir;

/// A fresh spool in a temporary directory (on the same disk as `target/`, so fsync is real).
pub fn spool() -> (TempDir, Spool) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (spool, report) = Spool::open(dir.path().join("spool")).expect("open");
    assert_eq!(report.queued, 0);
    (dir, spool)
}

/// An envelope with `n` recipients, including awkward bytes.
pub fn envelope(n: usize) -> Envelope {
    Envelope {
        arrival: UNIX_EPOCH + Duration::new(1_700_000_123, 456_789_012),
        client_addr: "[2001:db8::7]:4711".into(),
        client_host: "client.example.org".into(),
        sender: b"sender@example.org".to_vec(),
        recipients: (0..n)
            .map(|i| {
                let mut r = format!("rcpt{i}@example.org,:\0\n").into_bytes();
                r.push(0xff);
                r
            })
            .collect(),
    }
}

/// Receives, finishes and commits `message` in one write.
pub fn queue(spool: &Spool, message: &[u8], env: &Envelope) -> QueueId {
    let mut incoming = spool.receive().expect("receive");
    incoming.write(message).expect("write");
    let renamed = incoming.finish(env).expect("finish");
    renamed.commit().expect("commit")
}

/// The message bytes of a queued message.
pub fn message(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let mut out = Vec::new();
    spool
        .message(id)
        .expect("message")
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// File names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A plausible `Received` line and message, `len` bytes, with every byte value.
pub fn sample_message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Waits until `cond` holds, looking every 10 ms, for at most `limit`; whether it did.
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
