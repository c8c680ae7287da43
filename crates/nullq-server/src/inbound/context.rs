//! What every session needs and nobody changes while it runs: the spool, the committer, the
//! limits and the server's name. Built once from the configuration and shared behind an `Arc`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nullq_config::server::ServerConfig;
use nullq_proto::qmqp::Limits;
use nullq_spool::{Committer, Spool, SpoolError, Step};
use tokio::sync::{Notify, Semaphore};

/// How many sessions may do blocking file work at once (of tokio's 512 blocking threads):
/// plenty to keep a disk busy with writes and fdatasyncs in parallel, and leaving the rest to
/// the delivery runner.
pub const DISK_SLOTS: usize = 64;

/// The most bytes of envelope (the sender and recipient addresses) beyond each session's own
/// 8 KiB that the open sessions may hold in memory at once. A session keeps its envelope until
/// its request ends, and one request may carry 1,000 addresses of 999 bytes: without a bound a
/// thousand sessions could hold a gigabyte. Ordinary envelopes, a few hundred bytes, are within
/// the session's own allowance and never refused for it.
pub const ENVELOPE_BYTES: usize = 32 * 1024 * 1024;

/// The shared, read-only state of all sessions.
#[derive(Debug)]
pub struct Context {
    /// Where messages go.
    pub spool: Spool,
    /// The group committer of `spool` (one directory fsync for all sessions waiting).
    pub committer: Committer,
    /// Limits applied while decoding a request.
    pub limits: Limits,
    /// Longest wait for the client's next bytes.
    pub read_timeout: Duration,
    /// Longest whole session.
    pub session_timeout: Duration,
    /// Longest wait for a new connection's first byte, and the start of the time
    /// `min_data_rate` allows (see [`crate::inbound::session::Progress`]).
    pub first_byte_timeout: Duration,
    /// The least average rate of a request, in bytes a second.
    pub min_data_rate: u64,
    /// The most bytes of a refused request read (and thrown away) before its `D` is answered:
    /// `limits.drain_bytes`, but never less than the largest request the limits allow.
    pub drain_limit: u64,
    /// Pause before a `D` answer (Postfix's qmqpd_error_delay).
    pub error_delay: Duration,
    /// The server's own name, in the Received lines.
    pub local_name: String,
    /// The site policy checked at the end of each request, before the commit.
    pub policy: std::sync::Arc<crate::inbound::policy::Policy>,
    /// Where a committed message's id is announced, so the delivery runner starts at once
    /// (`None` when no runner runs in this process, as under `nullq qmqpd`).
    pub committed: Option<tokio::sync::mpsc::UnboundedSender<nullq_spool::QueueId>>,
    /// Notified (once) when a directory fsync of the spool failed: the committer refuses every
    /// commit from then on, and `nullq serve` stops (see [`Context::commit_failed`]).
    pub poisoned: Arc<Notify>,
    /// The process's counters (served by `--metrics-listen`, else only kept).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Slots for the sessions' blocking file work (writing, finishing the file): at most
    /// [`DISK_SLOTS`] sessions at once hold a thread of tokio's blocking pool, so that a thousand
    /// sessions cannot take the whole pool and queue the delivery runner's file reads behind
    /// them.
    pub disk_slots: Arc<Semaphore>,
    /// Bytes of envelope the open sessions hold now (at most [`ENVELOPE_BYTES`]).
    pub envelope_bytes: AtomicUsize,
    /// Whether the failure has been logged.
    reported: AtomicBool,
}

impl Context {
    /// The context for `config`, receiving into `spool`.
    pub fn new(config: &ServerConfig, spool: Spool) -> Context {
        let limits = &config.limits;
        let decoding = Limits {
            max_message: limits.databytes,
            max_recipients: limits.max_recipients,
            max_address_len: limits.max_address_len,
        };
        Context {
            committer: spool.committer(),
            spool,
            drain_limit: limits.drain_bytes.max(decoding.max_request()),
            limits: decoding,
            read_timeout: Duration::from_secs(limits.read_timeout_secs),
            session_timeout: Duration::from_secs(limits.session_timeout_secs),
            first_byte_timeout: Duration::from_secs(
                limits
                    .first_byte_timeout_secs
                    .min(limits.session_timeout_secs),
            ),
            min_data_rate: limits.min_data_rate.max(1),
            error_delay: Duration::from_secs(limits.error_delay_secs),
            local_name: config.local_name(),
            policy: std::sync::Arc::new(crate::inbound::policy::Policy::permissive()),
            committed: None,
            poisoned: Arc::new(Notify::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            disk_slots: Arc::new(Semaphore::new(DISK_SLOTS)),
            envelope_bytes: AtomicUsize::new(0),
            reported: AtomicBool::new(false),
        }
    }

    /// A session's spool operation failed with `e`. If it is the directory fsync (this batch's,
    /// or an earlier one's: the committer is poisoned), log it at ERROR, once per process, and
    /// notify [`Context::poisoned`]. Other failures (a full disk, one file's fdatasync) concern
    /// one message and are in the session's own log line.
    pub fn commit_failed(&self, e: &SpoolError) {
        if e.step() != Step::DirFsync || self.reported.swap(true, Ordering::SeqCst) {
            return;
        }
        let errno = e
            .io_error()
            .and_then(std::io::Error::raw_os_error)
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let cause = e
            .io_error()
            .map_or_else(|| e.to_string(), std::io::Error::to_string);
        tracing::error!(
            target: "nullq::spool",
            step = %e.step(),
            path = %e.path().display(),
            errno = %errno,
            "spool commit failed: {} of {}: {cause}; every later commit is refused (answered Z, \
             nothing more is written to the queue) and the server stops: check the disk, then \
             restart (the restart re-checks the queue)",
            e.step(),
            e.path().display(),
        );
        self.poisoned.notify_one();
    }
}
