//! The delivery runner: takes committed messages out of the spool and hands each recipient to
//! its backend, records every result durably, bounces what failed for good, and removes a
//! message when no recipient is pending.
//!
//! ```text
//! session ─commit─▶ spool ─(id on a channel, or found by a scan)─▶ runner ─▶ backend ─▶ target
//! ```
//! - [`Runner`] (this file): the schedule (which message is due when), bounded concurrency, the
//!   start-up scan, and one [`attempt`] per due message;
//! - one file per backend, each an `async fn deliver(&Job) -> Vec<Answer>` with one answer per
//!   recipient: [`maildir`], [`cgp`], [`smtp`], [`pipe`], [`qmail_queue`];
//! - [`retry`] (backoff), [`bounce`] (RFC 3464 reports), [`clock`] (queue time, scalable for
//!   tests), [`lock`] (one writer per message, shared with `nullq queue`), [`stats`].
//!
//! The order of an attempt is what makes a crash repeat work rather than skip it:
//! 1. lock `queue/ID`, check the whole file (its checksum), load envelope, state and the
//!    message's header (the body is streamed from the queue file by each backend: see
//!    [`Message`]); a file found corrupt goes to `corrupt/` with its state (one ERROR line) and
//!    is not tried again, an I/O error is tried again later;
//! 2. deliver every due recipient (a crash here: delivered again after restart);
//! 3. queue the bounce for those that failed for good (a new spool message, committed);
//! 4. only then write the new state (`save_state`: delivered / failed / next attempt);
//! 5. remove the message once no recipient is pending (if none is left after the first
//!    attempt the state write is skipped: removal says it all).

pub mod bounce;
pub mod cgp;
pub mod clock;
pub mod lock;
pub mod maildir;
pub mod pipe;
pub mod qmail_queue;
pub mod retry;
pub mod smtp;
pub mod stats;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nullq_config::server::{ServerConfig, Target};
use nullq_spool::{DeliveryState, MessageReader, QueueId, QueuedMessage, Spool, Status};
use tokio::sync::mpsc;

use crate::policy::Policy;
use crate::session::escape;
use crate::shutdown::Shutdown;
use clock::Clock;
use lock::{LockError, MessageLock};
use stats::Stats;

use crate::metrics::{DeliveryResult, Metrics};

/// The sender of a double bounce sent to the postmaster (qmail's `#@[]`): a message with this
/// sender that fails is dropped, never bounced again. Backends that speak SMTP send it as `<>`.
pub const DOUBLE_BOUNCE_SENDER: &[u8] = b"#@[]";

/// The pid file earlier versions kept in the spool root (and signalled); removed at start.
const OLD_PID_FILE: &str = "deliver.pid";

/// What a backend is asked to deliver: one message to some of its recipients.
#[derive(Debug, Clone)]
pub struct Job {
    /// The message's queue id (for file names and logs).
    pub id: QueueId,
    /// The envelope sender after rewriting (empty: the null sender).
    pub sender: Vec<u8>,
    /// The recipients for this backend, after rewriting.
    pub recipients: Vec<Vec<u8>>,
    /// The message, header rewritten (LF line ends, as received): read it with
    /// [`Message::open`] or [`Message::chunks`].
    pub message: Message,
}

/// Most of a message's header kept in memory for rewriting. A header that does not end within
/// this many bytes is delivered as received (not rewritten), streamed with the body.
pub const HEAD_MAX: usize = 1 << 20;

/// The size of the buffers a message is streamed through (and of each chunk).
pub const CHUNK: usize = 64 * 1024;

/// A message to deliver: its header (rewritten) in memory, its body read from the spool file
/// each time it is sent. Why: a 100 MB message must not cost 100 MB per delivery; the file is
/// immutable once committed and the runner holds the message's lock while backends read it.
#[derive(Debug, Clone)]
pub struct Message {
    head: Arc<Vec<u8>>,
    /// `head[..n]` is the message's whole header (up to and with the empty line that ends
    /// it, if any); `None` when the header did not end within [`HEAD_MAX`] bytes, so part of
    /// it is in the body.
    header_len: Option<usize>,
    body: Body,
}

/// Where the bytes after [`Message`]'s head come from.
#[derive(Debug, Clone)]
enum Body {
    /// The queue file of `id`, from byte `offset` of the message to its end (`len` bytes).
    Spool {
        spool: Spool,
        id: QueueId,
        offset: u64,
        len: u64,
    },
    /// Nothing: the head is the whole message (also for messages built in memory).
    Empty,
}

impl Message {
    /// A message held in memory whole (tests, and callers that built it themselves).
    pub fn from_bytes(bytes: Vec<u8>) -> Message {
        let header_len = header_end(&bytes, &mut 0, true);
        Message {
            head: Arc::new(bytes),
            header_len,
            body: Body::Empty,
        }
    }

    /// `head` followed by the message `id`'s bytes from `offset` on, read from `spool`.
    /// `complete`: `head` is the whole header.
    fn spooled(
        head: Vec<u8>,
        complete: bool,
        spool: Spool,
        id: QueueId,
        offset: u64,
        message_len: u64,
    ) -> Self {
        Message {
            header_len: complete.then_some(head.len()),
            head: Arc::new(head),
            body: Body::Spool {
                spool,
                id,
                offset,
                len: message_len.saturating_sub(offset),
            },
        }
    }

    /// A message whose header is not known to be whole (as one longer than [`HEAD_MAX`]).
    #[cfg(test)]
    pub(crate) fn unchecked_for_test(bytes: Vec<u8>) -> Message {
        Message {
            head: Arc::new(bytes),
            header_len: None,
            body: Body::Empty,
        }
    }

    /// The message's whole header (with the empty line that ends it, if there is one), or
    /// `None` when it was longer than [`HEAD_MAX`] and is only partly in memory.
    pub fn header(&self) -> Option<&[u8]> {
        self.head.get(..self.header_len?)
    }

    /// The same message with `header` in place of its header (`None` when the header is not
    /// wholly in memory: see [`Message::header`]). The body is still read from the spool.
    pub fn with_header(&self, header: Vec<u8>) -> Option<Message> {
        let old = self.header_len?;
        let mut head = header;
        let new_len = head.len();
        head.extend_from_slice(self.head.get(old..)?);
        Some(Message {
            head: Arc::new(head),
            header_len: Some(new_len),
            body: self.body.clone(),
        })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        let body = match &self.body {
            Body::Spool { len, .. } => *len,
            Body::Empty => 0,
        };
        self.head.len() as u64 + body
    }

    /// True for a message of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new reader of the whole message (blocking file reads: call it off the async threads).
    /// Each delivery, and each retry of one, opens its own, so they never share a position.
    pub fn open(&self) -> std::io::Result<MessageStream> {
        let body = match &self.body {
            Body::Empty => None,
            Body::Spool {
                spool,
                id,
                offset,
                len,
            } => {
                let mut r = spool.message(id).map_err(std::io::Error::other)?;
                if r.skip(*offset) != *offset || r.len().checked_sub(*offset) != Some(*len) {
                    // The queue file is immutable after commit: a change means someone else
                    // wrote it, and sending it now would send something else.
                    return Err(std::io::Error::other(format!(
                        "queue file of {id} changed size while being delivered"
                    )));
                }
                Some(r)
            }
        };
        Ok(MessageStream {
            head: Arc::clone(&self.head),
            pos: 0,
            body,
        })
    }

    /// The message in chunks of at most [`CHUNK`] bytes, read by a blocking thread at most two
    /// chunks ahead of the consumer (so memory stays bounded whatever the message's size). A
    /// read error is the last item; a consumer that stops early just drops the receiver.
    pub fn chunks(&self) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel(2);
        let message = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = match message.open() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut reader, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Whether any byte has the high bit set (a blocking pass over the file, no allocation
    /// beyond one [`CHUNK`]).
    pub fn has_8bit(&self) -> std::io::Result<bool> {
        let mut reader = self.open()?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            if buf[..n].iter().any(|&b| b >= 0x80) {
                return Ok(true);
            }
        }
    }

    /// Copy the whole message to `out` through one [`CHUNK`] buffer (blocking). Returns the
    /// number of bytes copied.
    pub fn copy_to(&self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        let mut reader = self.open()?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
    }
}

/// Fill `buf` as far as the reader goes (fewer bytes only at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader of one [`Message`]: its head from memory, then its body from the queue file.
#[derive(Debug)]
pub struct MessageStream {
    head: Arc<Vec<u8>>,
    pos: usize,
    body: Option<MessageReader>,
}

impl Read for MessageStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(rest) = self.head.get(self.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            return Ok(n);
        }
        match &mut self.body {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered: done.
    Delivered,
    /// Not now: try again later (until the queue lifetime ends).
    Retry,
    /// Never: bounce.
    Bounce,
}

impl Verdict {
    /// The word in log lines.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "deferred",
            Verdict::Bounce => "failed",
        }
    }
}

/// A backend's answer for one recipient: the verdict and the remote answer or exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What to do with the recipient.
    pub verdict: Verdict,
    /// The remote answer (`250 2.0.0 Ok`), exit status and stderr, or our own reason.
    pub text: String,
}

impl Answer {
    /// Delivered, with this text.
    pub fn delivered(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Delivered,
            text: text.into(),
        }
    }
    /// Try again later, because of this.
    pub fn retry(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Retry,
            text: text.into(),
        }
    }
    /// Failed for good, because of this.
    pub fn bounce(text: impl Into<String>) -> Answer {
        Answer {
            verdict: Verdict::Bounce,
            text: text.into(),
        }
    }
}

/// One configured target, ready to deliver.
#[derive(Debug)]
pub enum Backend {
    /// `maildir:DIR`.
    Maildir(maildir::Maildir),
    /// `cgp:DIR`.
    Cgp(cgp::Cgp),
    /// `smtp://` and `smtps://`.
    Smtp(smtp::Smtp),
    /// `pipe:COMMAND`.
    Pipe(pipe::Pipe),
    /// `qmail-queue:PATH`.
    QmailQueue(qmail_queue::QmailQueue),
    /// `none`: recipients stay queued.
    Hold,
}

impl Backend {
    /// The backend for `target`, with the settings of `config`.
    pub fn new(target: &Target, config: &ServerConfig) -> Result<Backend, String> {
        let d = &config.delivery;
        Ok(match target {
            Target::Maildir(dir) => Backend::Maildir(maildir::Maildir::new(dir.clone())),
            Target::Cgp(dir) => Backend::Cgp(cgp::Cgp::new(dir.clone(), &d.cgp)?),
            Target::Smtp {
                implicit_tls,
                host,
                port,
            } => Backend::Smtp(smtp::Smtp::new(
                host.clone(),
                *port,
                *implicit_tls,
                &d.smtp,
                config.local_name(),
            )?),
            Target::Pipe(argv) => Backend::Pipe(pipe::Pipe::new(
                argv.clone(),
                Duration::from_secs(d.program.timeout_secs),
            )),
            Target::QmailQueue(path) => Backend::QmailQueue(qmail_queue::QmailQueue::new(
                path.clone(),
                Duration::from_secs(d.program.timeout_secs),
            )),
            Target::Hold => Backend::Hold,
        })
    }

    /// Deliver `job`; exactly one answer per recipient, in order.
    pub async fn deliver(&self, job: &Job) -> Vec<Answer> {
        let answers = match self {
            Backend::Maildir(b) => b.deliver(job).await,
            Backend::Cgp(b) => b.deliver(job).await,
            Backend::Smtp(b) => b.deliver(job).await,
            Backend::Pipe(b) => b.deliver(job).await,
            Backend::QmailQueue(b) => b.deliver(job).await,
            Backend::Hold => {
                vec![Answer::retry("held: delivery target is none"); job.recipients.len()]
            }
        };
        if answers.len() == job.recipients.len() {
            answers
        } else {
            // A backend bug must not lose a recipient: retry them all.
            let text = format!(
                "internal error: {} answers for {} recipients",
                answers.len(),
                job.recipients.len()
            );
            vec![Answer::retry(text); job.recipients.len()]
        }
    }
}

/// Which backend each recipient domain goes to.
#[derive(Debug)]
pub struct Routes {
    /// Every distinct target once: its text (for logs and statistics) and backend.
    backends: Vec<(String, Arc<Backend>)>,
    default: usize,
    exact: HashMap<String, usize>,
    /// `.example.net` keys, without the dot.
    below: HashMap<String, usize>,
}

impl Routes {
    /// The routes of `config` (default target, then `[delivery.routes]`).
    pub fn new(config: &ServerConfig) -> Result<Routes, String> {
        let d = &config.delivery;
        let mut routes = Routes {
            backends: Vec::new(),
            default: 0,
            exact: HashMap::new(),
            below: HashMap::new(),
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |t: &Target, routes: &mut Routes| -> Result<usize, String> {
            let label = t.to_string();
            if let Some(&i) = index.get(&label) {
                return Ok(i);
            }
            let backend = Backend::new(t, config).map_err(|e| format!("{label}: {e}"))?;
            routes.backends.push((label.clone(), Arc::new(backend)));
            index.insert(label, routes.backends.len() - 1);
            Ok(routes.backends.len() - 1)
        };
        routes.default = add(&d.effective_target(&config.data_dir), &mut routes)?;
        for (domain, target) in &d.routes {
            let i = add(target, &mut routes)?;
            match domain.strip_prefix('.') {
                Some(below) => routes.below.insert(below.to_ascii_lowercase(), i),
                None => routes.exact.insert(domain.to_ascii_lowercase(), i),
            };
        }
        Ok(routes)
    }

    /// The backend index for `recipient` (by the domain after its last `@`).
    pub fn route(&self, recipient: &[u8]) -> usize {
        let domain = match recipient.iter().rposition(|&b| b == b'@') {
            Some(at) => String::from_utf8_lossy(&recipient[at + 1..]).to_ascii_lowercase(),
            None => return self.default,
        };
        if let Some(&i) = self.exact.get(&domain) {
            return i;
        }
        // The longest `.parent` key that the domain is below.
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&i) = self.below.get(parent) {
                return i;
            }
            rest = parent;
        }
        self.default
    }

    /// True when nothing would ever be delivered (every target is `none`).
    pub fn all_hold(&self) -> bool {
        self.backends
            .iter()
            .all(|(_, b)| matches!(**b, Backend::Hold))
    }

    /// The Maildirs among the targets (for the start-up clean of `tmp/`).
    pub fn maildir_dirs(&self) -> Vec<PathBuf> {
        self.backends
            .iter()
            .filter_map(|(_, b)| match &**b {
                Backend::Maildir(m) => Some(m.dir().to_path_buf()),
                _ => None,
            })
            .collect()
    }

    /// The CommuniGate Pro folders among the targets and what becomes of their `.bad` files
    /// (for the start-up clean of stale `.tmp` files and the `.bad` file scan).
    pub fn cgp_dirs(&self) -> Vec<(PathBuf, nullq_config::server::OnBad)> {
        self.backends
            .iter()
            .filter_map(|(_, b)| match &**b {
                Backend::Cgp(c) => Some((c.dir().to_path_buf(), c.on_bad())),
                _ => None,
            })
            .collect()
    }
}

/// What the runner shares with its attempts.
struct Shared {
    spool: Spool,
    routes: Routes,
    policy: Arc<Policy>,
    clock: Clock,
    lifetime: Duration,
    retry_min: Duration,
    retry_max: Duration,
    warn_after: Option<Duration>,
    postmaster: Option<Vec<u8>>,
    local_name: String,
    stats: Stats,
    /// Where new messages (our bounces) are announced: the runner's own inbox.
    notify: mpsc::UnboundedSender<QueueId>,
}

/// The delivery runner of one spool. Build it with [`Runner::new`], hand
/// [`Runner::notifier`] to the sessions, then [`Runner::run`] it.
pub struct Runner {
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedReceiver<QueueId>,
    concurrency: usize,
    poll: Option<Duration>,
    /// How often the whole queue is rescanned (real time, whatever the clock's scale), so that
    /// a wake-up through `DATA/trigger` that was lost only delays: `delivery.rescan_secs`.
    rescan: Duration,
    /// SIGUSR1, registered when the runner is made (before the server says it is ready), so
    /// that the signal never finds the default action (death).
    usr1: Option<tokio::signal::unix::Signal>,
    /// systemd's watchdog (`WatchdogSec=`), kept alive from the runner's loop: if the loop
    /// stalls (a hung disk, a deadlock), the keep-alives stop and systemd restarts the service.
    watchdog: crate::systemd::Watchdog,
}

/// What an attempt leaves for the schedule.
#[derive(Debug)]
enum Next {
    /// The message is gone (delivered, failed and bounced, deleted).
    Done,
    /// Try again at this queue time.
    At(SystemTime),
    /// Someone else holds the message (a `nullq queue` tool): try again shortly.
    Busy,
}

impl Runner {
    /// A runner for `spool` as `config` says, counting in `metrics`. `poll`: look for new messages in the queue
    /// directory every `delivery.poll_interval_ms` (for `nullq deliver`, whose messages come
    /// from other processes); `nullq serve` is told of each commit instead.
    pub fn new(
        config: &ServerConfig,
        spool: Spool,
        policy: Arc<Policy>,
        metrics: Arc<Metrics>,
        poll: bool,
    ) -> Result<Runner, String> {
        let d = &config.delivery;
        let routes = Routes::new(config)?;
        let (notify, inbox) = mpsc::unbounded_channel();
        let stats = Stats::new(spool.root(), metrics);
        Ok(Runner {
            shared: Arc::new(Shared {
                spool,
                routes,
                policy,
                clock: Clock::new(d.time_scale),
                lifetime: Duration::from_secs(d.queue_lifetime_secs),
                retry_min: Duration::from_secs(d.retry_min_secs),
                retry_max: Duration::from_secs(d.retry_max_secs),
                warn_after: (d.delay_warning_secs > 0)
                    .then(|| Duration::from_secs(d.delay_warning_secs)),
                postmaster: d.postmaster.as_ref().map(|p| p.as_bytes().to_vec()),
                local_name: config.local_name(),
                stats,
                notify,
            }),
            inbox,
            concurrency: d.concurrency.max(1),
            poll: poll.then(|| Duration::from_millis(d.poll_interval_ms)),
            // A day at most: the interval is added to an Instant, which must not overflow.
            rescan: Duration::from_secs(d.rescan_secs.clamp(1, 86_400)),
            // SIGUSR1 meant "rescan" before the trigger socket existed: an operator's habit
            // (or an old `nullq queue`) must not kill the server, so it still asks for one.
            usr1: tokio::runtime::Handle::try_current().ok().and_then(|_| {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                    .map_err(|e| tracing::warn!(target: "nullq::delivery", "SIGUSR1: {e}"))
                    .ok()
            }),
            watchdog: crate::systemd::Watchdog::from_env(),
        })
    }

    /// Where to announce a committed message so that it is delivered at once.
    pub fn notifier(&self) -> mpsc::UnboundedSender<QueueId> {
        self.shared.notify.clone()
    }

    /// True when every target is `none` (the runner would never deliver anything).
    pub fn holds_everything(&self) -> bool {
        self.shared.routes.all_hold()
    }

    /// Deliver until `stop`; then wait up to `grace` for attempts in progress (an attempt cut
    /// short is repeated after the restart).
    pub async fn run(mut self, mut stop: Shutdown, grace: Duration) {
        let shared = Arc::clone(&self.shared);
        let root = shared.spool.root().to_path_buf();
        // A pid file of an earlier version would only mislead: nothing signals a pid any more.
        let _ = std::fs::remove_file(root.join(OLD_PID_FILE));
        // Bound before the start-up scan: a wake-up sent during it waits in the socket.
        let mut trigger = match shared.spool.bind_trigger() {
            Ok(s) => match tokio::net::UnixDatagram::from_std(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(target: "nullq::delivery", "trigger: {e} (nullq queue retry cannot wake the runner; it rescans every {}s)", self.rescan.as_secs());
                    None
                }
            },
            Err(e) => {
                tracing::warn!(target: "nullq::delivery", "trigger: {e} (nullq queue retry cannot wake the runner; it rescans every {}s)", self.rescan.as_secs());
                None
            }
        };
        let mut usr1 = self.usr1.take();
        let mut schedule = Schedule::default();
        let mut in_flight: HashSet<QueueId> = HashSet::new();
        // Announced while being delivered: look again as soon as the attempt ends.
        let mut again: HashSet<QueueId> = HashSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(QueueId, Next)>();
        // Before the first delivery: files a killed earlier process left in a Maildir's tmp/
        // and in a CommuniGate Pro folder.
        let maildirs = shared.routes.maildir_dirs();
        let cgp_dirs = shared.routes.cgp_dirs();
        if !maildirs.is_empty() || !cgp_dirs.is_empty() {
            let spool_root = root.clone();
            let cleaned = tokio::task::spawn_blocking(move || {
                for dir in &maildirs {
                    maildir::clean_tmp(dir);
                }
                for (dir, _) in &cgp_dirs {
                    cgp::clean_stale_tmp(dir, &spool_root);
                }
            })
            .await;
            if let Err(e) = cleaned {
                tracing::warn!(target: "nullq::delivery", "cleaning leftovers failed: {e}");
            }
        }
        let found = scan(&shared, &mut schedule, &in_flight).await;
        tracing::info!(
            target: "nullq::delivery",
            queued = found,
            concurrency = self.concurrency,
            targets = %shared.routes.backends.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(","),
            "delivery runner started"
        );
        let every = self.rescan;
        let mut rescan = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.poll.unwrap_or(Duration::from_secs(3600)));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut watchdog = tokio::time::interval(
            self.watchdog
                .interval()
                .unwrap_or(Duration::from_secs(3600)),
        );
        let mut ticks: u64 = 0;
        let mut seen_bad: HashSet<PathBuf> = HashSet::new();
        loop {
            let now = shared.clock.now();
            while in_flight.len() < self.concurrency {
                let Some(id) = schedule.pop_due(now) else {
                    break;
                };
                in_flight.insert(id);
                let shared = Arc::clone(&shared);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let next = attempt(&shared, id).await;
                    let _ = done.send((id, next));
                });
            }
            let wait = (in_flight.len() < self.concurrency)
                .then(|| schedule.first())
                .flatten()
                .map(|t| shared.clock.until(t));
            tokio::select! {
                _ = stop.recv() => break,
                Some((id, next)) = done_rx.recv() => {
                    in_flight.remove(&id);
                    match next {
                        Next::Done => {}
                        Next::At(t) => schedule.put(id, t),
                        Next::Busy => schedule.put(id, shared.clock.now() + shared.clock.from_real(Duration::from_secs(1))),
                    }
                    if again.remove(&id) {
                        schedule.put(id, shared.clock.now());
                    }
                }
                Some(id) = self.inbox.recv() => {
                    if in_flight.contains(&id) {
                        again.insert(id);
                    } else {
                        schedule.put(id, shared.clock.now());
                    }
                }
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
                _ = poll.tick(), if self.poll.is_some() => {
                    let spool = shared.spool.clone();
                    if let Ok(Ok(ids)) = tokio::task::spawn_blocking(move || spool.list()).await {
                        let now = shared.clock.now();
                        for id in ids {
                            if !in_flight.contains(&id) && !schedule.contains(&id) {
                                schedule.put(id, now);
                            }
                        }
                    }
                }
                Some(()) = async { match trigger.as_mut() { Some(t) => woken(t).await, None => std::future::pending().await } } => {
                    let n = scan(&shared, &mut schedule, &in_flight).await;
                    tracing::info!(target: "nullq::delivery", queued = n, "trigger: queue rescanned");
                }
                Some(()) = async { match usr1.as_mut() { Some(u) => u.recv().await, None => std::future::pending().await } } => {
                    let n = scan(&shared, &mut schedule, &in_flight).await;
                    tracing::info!(target: "nullq::delivery", queued = n, "SIGUSR1: queue rescanned");
                }
                _ = rescan.tick() => {
                    let n = scan(&shared, &mut schedule, &in_flight).await;
                    tracing::debug!(target: "nullq::delivery", queued = n, "queue rescanned (every {}s)", every.as_secs());
                }
                _ = watchdog.tick() => self.watchdog.pet(),
                _ = housekeeping.tick() => {
                    ticks += 1;
                    let shared2 = Arc::clone(&shared);
                    let check_bad = ticks % 10 == 1;
                    let seen = std::mem::take(&mut seen_bad);
                    if let Ok((seen, bounces)) = tokio::task::spawn_blocking(move || {
                        let shared = shared2;
                        let mut seen = seen;
                        let mut bounces = Vec::new();
                        if check_bad {
                            let bouncer = cgp::Bouncer {
                                spool: &shared.spool,
                                local_name: &shared.local_name,
                                postmaster: shared.postmaster.as_deref(),
                            };
                            bounces = cgp::handle_bad_files(&shared.routes.cgp_dirs(), &mut seen, &shared.stats, &bouncer);
                            shared.stats.update(|s| s.bounces_queued += bounces.len() as u64);
                        }
                        shared.stats.flush();
                        (seen, bounces)
                    }).await {
                        seen_bad = seen;
                        for id in bounces {
                            schedule.put(id, shared.clock.now());
                        }
                    }
                }
            }
        }
        tracing::info!(target: "nullq::delivery", in_flight = in_flight.len(), "delivery runner stopping");
        let deadline = tokio::time::Instant::now() + grace;
        while !in_flight.is_empty() {
            tokio::select! {
                Some((id, _)) = done_rx.recv() => { in_flight.remove(&id); }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(target: "nullq::delivery", "{} deliveries still running after {}s; they are repeated after the restart", in_flight.len(), grace.as_secs());
                    break;
                }
            }
        }
        let stats = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || stats.stats.flush()).await;
        // Still holding the spool's lock: the socket is ours to remove.
        if trigger.take().is_some() {
            let _ = std::fs::remove_file(root.join(nullq_spool::TRIGGER));
        }
    }
}

/// Wait for a wake-up on the trigger socket, then take every one already waiting (a burst of
/// `nullq queue retry` runs costs one rescan). `None` only if the socket fails.
async fn woken(trigger: &tokio::net::UnixDatagram) -> Option<()> {
    let mut buf = [0u8; 16];
    loop {
        match trigger.recv(&mut buf).await {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(target: "nullq::delivery", "trigger: {e}");
                return None;
            }
        }
    }
    while trigger.try_recv(&mut buf).is_ok() {}
    Some(())
}

/// Due times of the messages not being delivered right now.
#[derive(Debug, Default)]
struct Schedule {
    by_time: BTreeSet<(SystemTime, QueueId)>,
    by_id: HashMap<QueueId, SystemTime>,
}

impl Schedule {
    /// (Re)schedule `id` at `t` (the earlier of `t` and any time it already had).
    fn put(&mut self, id: QueueId, t: SystemTime) {
        if let Some(old) = self.by_id.get(&id).copied() {
            if old <= t {
                return;
            }
            self.by_time.remove(&(old, id));
        }
        self.by_id.insert(id, t);
        self.by_time.insert((t, id));
    }

    /// Replace the time of `id` (a rescan knows better than what was scheduled).
    fn set(&mut self, id: QueueId, t: SystemTime) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_time.remove(&(old, id));
        }
        self.put(id, t);
    }

    fn contains(&self, id: &QueueId) -> bool {
        self.by_id.contains_key(id)
    }

    fn first(&self) -> Option<SystemTime> {
        self.by_time.first().map(|(t, _)| *t)
    }

    fn pop_due(&mut self, now: SystemTime) -> Option<QueueId> {
        let &(t, id) = self.by_time.first()?;
        if t > now {
            return None;
        }
        self.by_time.remove(&(t, id));
        self.by_id.remove(&id);
        Some(id)
    }
}

/// Load every queued message's state and schedule it by its next attempt. Returns how many
/// messages are queued.
async fn scan(
    shared: &Arc<Shared>,
    schedule: &mut Schedule,
    in_flight: &HashSet<QueueId>,
) -> usize {
    let spool = shared.spool.clone();
    let committer = spool.committer();
    let skip: HashSet<QueueId> = in_flight.clone();
    let found = tokio::task::spawn_blocking(move || {
        let ids = match spool.list() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(target: "nullq::delivery", "cannot list the queue: {e}");
                return Vec::new();
            }
        };
        let mut due = Vec::with_capacity(ids.len());
        for id in ids {
            // In flight here, or renamed by a session of this process whose commit has not
            // returned: it may yet be refused (answered Z and unlinked); if committed, the
            // session announces it.
            if skip.contains(&id) || committer.is_uncommitted(&id) {
                continue;
            }
            match spool.load(&id) {
                Ok(q) => due.push((id, next_due(&q.state))),
                // Gone meanwhile, or unreadable: the attempt will say which.
                Err(_) => due.push((id, None)),
            }
        }
        due
    })
    .await
    .unwrap_or_default();
    let now = shared.clock.now();
    let n = found.len();
    for (id, t) in found {
        schedule.set(id, t.unwrap_or(now));
    }
    n
}

/// The earliest next attempt of a pending recipient (`None`: due now).
fn next_due(state: &DeliveryState) -> Option<SystemTime> {
    let mut earliest: Option<SystemTime> = None;
    for r in state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Pending)
    {
        match r.next_attempt {
            None => return None,
            Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
        }
    }
    earliest
}

/// A message ready for an attempt: its lock, envelope, state, and the start of its bytes.
struct Loaded {
    lock: MessageLock,
    queued: QueuedMessage,
    head: Head,
}

/// What is read of a message before delivering it (the body stays in the file).
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// The header as received, up to and with the empty line that ends it; empty when the
    /// header is longer than [`HEAD_MAX`] (then it is not rewritten).
    header: Vec<u8>,
    /// Where the rest of the message starts (the length of `header`).
    body_at: u64,
    /// The header did not end within [`HEAD_MAX`] bytes.
    too_long: bool,
    /// The first [`bounce::ORIGINAL_HEADER_MAX`] bytes of the message, from which a bounce
    /// takes the original's header.
    start: Vec<u8>,
}

enum LoadResult {
    Ready(Box<Loaded>),
    Gone,
    Busy,
    /// An I/O error (EIO, EMFILE, EACCES...): the message is tried again later.
    Failed(String),
    /// The file's content was wrong: moved to `corrupt/` (the ERROR line, whether the message
    /// is still queued).
    SetAside(String, bool),
}

/// Where the header in `buf` ends, by the rule of `policy::split_header` (which the rewriting
/// applies, so rewriting the header alone changes the same fields as rewriting the whole
/// message): after the first empty line, or before the first line that is neither a field nor a
/// continuation (a header that ended without an empty line). `None`: not known yet, read more.
/// `from` keeps the scan's position between calls, so each byte is looked at once.
fn header_end(buf: &[u8], from: &mut usize, eof: bool) -> Option<usize> {
    loop {
        let pos = *from;
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            // A last line without a newline is in the header whatever it is: the rewriting
            // copies what follows the fields unchanged either way.
            return eof.then_some(buf.len());
        };
        let line = &buf[pos..=pos + nl];
        if line == b"\n" || line == b"\r\n" {
            return Some(pos + nl + 1);
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) && !line.contains(&b':') {
            return Some(pos);
        }
        *from = pos + nl + 1;
    }
}

/// Read the header of a message (and at least the start a bounce needs), in [`CHUNK`]s, at
/// most [`HEAD_MAX`] plus one chunk.
fn read_head(reader: &mut impl Read) -> std::io::Result<Head> {
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut end = None;
    let mut eof = false;
    loop {
        if end.is_none() {
            end = header_end(&buf, &mut scanned, eof);
        }
        let enough = match end {
            Some(_) => buf.len() >= bounce::ORIGINAL_HEADER_MAX,
            None => buf.len() > HEAD_MAX,
        };
        if eof || enough {
            break;
        }
        let old = buf.len();
        buf.resize(old + CHUNK, 0);
        let n = read_full(reader, &mut buf[old..])?;
        buf.truncate(old + n);
        eof = n < CHUNK;
    }
    let start = buf[..buf.len().min(bounce::ORIGINAL_HEADER_MAX)].to_vec();
    let too_long = end.is_none();
    let end = end.unwrap_or(0);
    buf.truncate(end);
    buf.shrink_to_fit();
    Ok(Head {
        header: buf,
        body_at: end as u64,
        too_long,
        start,
    })
}

fn load(spool: &Spool, id: &QueueId) -> LoadResult {
    let lock = match MessageLock::try_lock(spool.root(), id) {
        Ok(l) => l,
        Err(LockError::Gone) => return LoadResult::Gone,
        Err(LockError::Busy) => return LoadResult::Busy,
        Err(e) => return LoadResult::Failed(e.to_string()),
    };
    // The whole file is checked (its checksum, as at start-up) before anything of it is
    // delivered: a file that turned bad since its commit goes to corrupt/, not to recipients.
    // One more read of a file that is usually in the page cache.
    let queued = match spool.verify(id).and_then(|()| spool.load(id)) {
        Ok(q) => q,
        Err(e) if e.is_not_found() => return LoadResult::Gone,
        Err(e) if e.is_corrupt() => return set_aside(spool, id, &e),
        Err(e) => return LoadResult::Failed(e.to_string()),
    };
    // Only the header is read here; backends read the body from the file as they send it.
    let read = match spool.message(id) {
        Ok(mut r) => read_head(&mut r).map_err(|e| e.to_string()),
        Err(e) if e.is_not_found() => return LoadResult::Gone,
        Err(e) => Err(e.to_string()),
    };
    match read {
        Ok(head) => LoadResult::Ready(Box::new(Loaded { lock, queued, head })),
        Err(e) => LoadResult::Failed(e),
    }
}

/// Move what `err` found corrupt to `corrupt/` (the spool's one move, as at start-up), under
/// the message's lock; the line to log says what moved where and why.
fn set_aside(spool: &Spool, id: &QueueId, err: &nullq_spool::SpoolError) -> LoadResult {
    let moved = match spool.set_aside(id, err) {
        Ok(moved) => moved,
        Err(e) => {
            return LoadResult::Failed(format!("{err}; and moving it to corrupt/ failed: {e}"))
        }
    };
    let queue_file = spool.root().join("queue").join(id.to_string());
    let still_queued = !moved.iter().any(|m| m.from == queue_file);
    let mut line = String::new();
    for (i, m) in moved.iter().enumerate() {
        if i == 0 {
            line = format!(
                "found corrupt: moved {} to {}: {}",
                m.from.display(),
                m.to.display(),
                m.reason
            );
        } else {
            line.push_str(&format!(
                "; moved {} to {} with it",
                m.from.display(),
                m.to.display()
            ));
        }
    }
    line.push_str(if still_queued {
        "; the message stays queued, every recipient pending again"
    } else {
        "; not delivered, not retried"
    });
    LoadResult::SetAside(line, still_queued)
}

/// One attempt at one message: deliver its due recipients, bounce what failed, save the state.
async fn attempt(shared: &Arc<Shared>, id: QueueId) -> Next {
    let spool = shared.spool.clone();
    let loaded = match tokio::task::spawn_blocking(move || load(&spool, &id)).await {
        Ok(LoadResult::Ready(l)) => l,
        Ok(LoadResult::Gone) => return Next::Done,
        Ok(LoadResult::Busy) => return Next::Busy,
        Ok(LoadResult::Failed(e)) => {
            tracing::error!(target: "nullq::delivery", id = %id, "cannot read the message (will try again): {e}");
            return Next::At(shared.clock.now() + shared.retry_min);
        }
        Ok(LoadResult::SetAside(line, still_queued)) => {
            tracing::error!(target: "nullq::delivery", id = %id, "{line}");
            return if still_queued {
                Next::At(shared.clock.now())
            } else {
                Next::Done
            };
        }
        Err(e) => {
            tracing::error!(target: "nullq::delivery", id = %id, "internal error: {e}");
            return Next::At(shared.clock.now() + shared.retry_min);
        }
    };
    let Loaded { lock, queued, head } = *loaded;
    let Head {
        header,
        body_at,
        too_long,
        start,
    } = head;
    let now = shared.clock.now();
    let mut state = queued.state.clone();
    let env = &queued.envelope;
    let age = now.duration_since(env.arrival).unwrap_or(Duration::ZERO);
    let due: Vec<usize> = state
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Pending && r.next_attempt.is_none_or(|t| t <= now))
        .map(|(i, _)| i)
        .collect();

    let mut failures: Vec<bounce::Failure> = Vec::new();
    if !due.is_empty() {
        let sender = if env.sender.is_empty() || env.sender == DOUBLE_BOUNCE_SENDER {
            env.sender.clone()
        } else {
            shared.policy.rewrite_address(&env.sender)
        };
        if too_long && shared.policy.rewrites() {
            tracing::warn!(target: "nullq::delivery", id = %id, "header longer than {HEAD_MAX} bytes: delivered as received, its addresses not rewritten");
        }
        let header = shared.policy.rewrite_header(&header).unwrap_or(header);
        let message = Message::spooled(
            header,
            !too_long,
            shared.spool.clone(),
            id,
            body_at,
            queued.message_len,
        );
        // Group the due recipients by backend, keeping envelope order inside each group.
        let mut groups: Vec<(usize, Vec<usize>, Vec<Vec<u8>>)> = Vec::new();
        for &i in &due {
            let rcpt = shared.policy.rewrite_address(&env.recipients[i]);
            let b = shared.routes.route(&rcpt);
            match groups.iter_mut().find(|g| g.0 == b) {
                Some(g) => {
                    g.1.push(i);
                    g.2.push(rcpt);
                }
                None => groups.push((b, vec![i], vec![rcpt])),
            }
        }
        for (b, indexes, recipients) in groups {
            let (label, backend) = &shared.routes.backends[b];
            if matches!(**backend, Backend::Hold) {
                for &i in &indexes {
                    state.recipients[i].next_attempt = Some(now + shared.retry_max);
                }
                continue;
            }
            let job = Job {
                id,
                sender: sender.clone(),
                recipients,
                message: message.clone(),
            };
            let answers = backend.deliver(&job).await;
            for ((&i, rcpt), answer) in indexes.iter().zip(&job.recipients).zip(answers) {
                let r = &mut state.recipients[i];
                r.attempts = r.attempts.saturating_add(1);
                // Keep the mark of a delay warning already sent (see bounce::WARNED).
                r.last_result = if r.last_result.starts_with(bounce::WARNED) {
                    format!("{}{}", bounce::WARNED, answer.text)
                } else {
                    answer.text.clone()
                };
                tracing::info!(
                    target: "nullq::delivery",
                    id = %id,
                    rcpt = %escape(rcpt),
                    backend = %label,
                    result = answer.verdict.word(),
                    attempt = r.attempts,
                    delay = age.as_secs(),
                    "{}",
                    answer.text
                );
                match answer.verdict {
                    Verdict::Delivered => {
                        r.status = Status::Delivered;
                        r.next_attempt = None;
                        shared.stats.count(label, DeliveryResult::Delivered);
                    }
                    Verdict::Retry if age < shared.lifetime => {
                        r.next_attempt = Some(
                            now + retry::backoff(r.attempts, shared.retry_min, shared.retry_max),
                        );
                        shared.stats.count(label, DeliveryResult::Deferred);
                    }
                    Verdict::Retry => {
                        let days = shared.lifetime.as_secs_f64() / 86400.0;
                        failures.push(bounce::Failure {
                            index: i,
                            recipient: env.recipients[i].clone(),
                            text: format!(
                                "{} (gave up: in the queue longer than {days:.1} days)",
                                answer.text
                            ),
                            expired: true,
                        });
                        shared.stats.count(label, DeliveryResult::Failed);
                    }
                    Verdict::Bounce => {
                        failures.push(bounce::Failure {
                            index: i,
                            recipient: env.recipients[i].clone(),
                            text: answer.text,
                            expired: false,
                        });
                        shared.stats.count(label, DeliveryResult::Failed);
                    }
                }
            }
        }
    }

    // Delay warning: once, at the first attempt after the warning time, for what is still
    // pending (marked in the state by the recipient's result text, see bounce::WARNED).
    let mut warning = Vec::new();
    if let Some(after) = shared.warn_after {
        if age >= after && !env.sender.is_empty() && env.sender != DOUBLE_BOUNCE_SENDER {
            for (i, r) in state.recipients.iter().enumerate() {
                if r.status == Status::Pending
                    && !failures.iter().any(|f| f.index == i)
                    && !r.last_result.starts_with(bounce::WARNED)
                {
                    warning.push(i);
                }
            }
        }
    }

    let shared2 = Arc::clone(shared);
    let queued2 = queued.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let shared = shared2;
        let queued = queued2;
        let mut state = state;
        let now = shared.clock.now();
        let mut new_ids = Vec::new();
        if !failures.is_empty() {
            match bounce::queue_bounce(
                &shared.spool,
                &shared.local_name,
                &queued,
                &start,
                &failures,
                shared.postmaster.as_deref(),
                now,
            ) {
                Ok(outcome) => {
                    match &outcome {
                        bounce::Queued::Bounce(id) => {
                            shared.stats.update(|s| s.bounces_queued += 1);
                            new_ids.push(*id);
                        }
                        bounce::Queued::DoubleBounce(id) => {
                            shared.stats.update(|s| s.double_bounces += 1);
                            new_ids.push(*id);
                        }
                        bounce::Queued::Dropped => shared.stats.update(|s| s.double_bounces += 1),
                    }
                    tracing::info!(target: "nullq::delivery", id = %queued.id, failed = failures.len(), "{outcome}");
                    for f in &failures {
                        let r = &mut state.recipients[f.index];
                        r.status = Status::Failed;
                        r.next_attempt = None;
                        r.last_result.clone_from(&f.text);
                    }
                }
                Err(e) => {
                    // Not marked failed: they stay pending and fail again at the next attempt.
                    tracing::error!(target: "nullq::delivery", id = %queued.id, "cannot queue the bounce, will try again: {e}");
                    for f in &failures {
                        state.recipients[f.index].next_attempt = Some(now + shared.retry_min);
                    }
                }
            }
        }
        if !warning.is_empty() {
            match bounce::queue_warning(&shared.spool, &shared.local_name, &queued, &start, &state, &warning, now) {
                Ok(id) => {
                    shared.stats.update(|s| s.warnings_queued += 1);
                    new_ids.push(id);
                    for &i in &warning {
                        let r = &mut state.recipients[i];
                        r.last_result = format!("{}{}", bounce::WARNED, r.last_result);
                    }
                }
                Err(e) => tracing::error!(target: "nullq::delivery", id = %queued.id, "cannot queue the delay warning: {e}"),
            }
        }
        let result = if state.any_pending() {
            if state == queued.state {
                Ok(())
            } else {
                shared.spool.save_state(&queued.id, &state)
            }
        } else {
            // Nothing pending: removal alone records that (a crash before it repeats work).
            shared.spool.remove(&queued.id)
        };
        drop(lock);
        (result, state, new_ids)
    })
    .await;
    let (result, state, new_ids) = match outcome {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(target: "nullq::delivery", id = %id, "internal error: {e}");
            return Next::At(shared.clock.now() + shared.retry_min);
        }
    };
    for new in new_ids {
        let _ = shared.notify.send(new);
    }
    if let Err(e) = result {
        tracing::error!(target: "nullq::delivery", id = %id, "cannot record the results (the attempt will be repeated): {e}");
        return Next::At(shared.clock.now() + shared.retry_min);
    }
    if !state.any_pending() {
        return Next::Done;
    }
    Next::At(next_due(&state).unwrap_or_else(|| shared.clock.now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(message: &[u8]) -> Head {
        read_head(&mut &message[..]).unwrap()
    }

    #[test]
    fn the_header_ends_where_the_rewriting_says() {
        // After the empty line (LF or CRLF).
        let h = head_of(b"A: b\n c\nD: e\n\nbody\n\nmore\n");
        assert_eq!(h.header, b"A: b\n c\nD: e\n\n");
        assert_eq!(h.body_at, 14);
        let h = head_of(b"A: b\r\n\r\nbody");
        assert_eq!(h.header, b"A: b\r\n\r\n");
        // Before a line that is no field: the header ended without an empty line.
        let h = head_of(b"A: b\nnot a field\n\nX: y\n");
        assert_eq!(h.header, b"A: b\n");
        let h = head_of(b"no header at all\n");
        assert!(h.header.is_empty() && !h.too_long);
        // No end: the whole message is header.
        let h = head_of(b"A: b\n c");
        assert_eq!(h.header, b"A: b\n c");
        assert_eq!(head_of(b"").header, b"");
        // The bounce gets the message's start, past the header.
        assert_eq!(head_of(b"A: b\n\nbody").start, b"A: b\n\nbody");
    }

    #[test]
    fn a_header_over_the_limit_is_not_kept() {
        let mut message = b"X: ".to_vec();
        while message.len() <= HEAD_MAX + 3 * CHUNK {
            message.extend_from_slice(b"aaaaaaaaaaaaaaa\n ");
        }
        message.extend_from_slice(b"\n\nbody\n");
        let h = head_of(&message);
        assert!(h.header.is_empty() && h.too_long);
        assert_eq!(h.body_at, 0);
        assert_eq!(h.start, &message[..bounce::ORIGINAL_HEADER_MAX]);
    }

    #[test]
    fn a_message_reads_back_as_head_then_body() {
        let m = Message::from_bytes(b"A: b\n\nbody\n".to_vec());
        assert_eq!(m.len(), 11);
        let mut got = Vec::new();
        m.open().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"A: b\n\nbody\n");
        let mut copied = Vec::new();
        assert_eq!(m.copy_to(&mut copied).unwrap(), 11);
        assert_eq!(copied, got);
        assert!(!m.has_8bit().unwrap());
        assert!(Message::from_bytes(b"\xe9".to_vec()).has_8bit().unwrap());
    }

    #[test]
    fn the_header_of_a_message_can_be_replaced_and_the_body_kept() {
        let m = Message::from_bytes(b"A: b\n c\nD: e\n\nbody\n".to_vec());
        assert_eq!(m.header(), Some(&b"A: b\n c\nD: e\n\n"[..]));
        let n = m.with_header(b"X: y\n\n".to_vec()).unwrap();
        assert_eq!(n.header(), Some(&b"X: y\n\n"[..]));
        let mut got = Vec::new();
        n.copy_to(&mut got).unwrap();
        assert_eq!(got, b"X: y\n\nbody\n");
        let long = Message {
            head: Arc::new(Vec::new()),
            header_len: None,
            body: Body::Empty,
        };
        assert!(long.header().is_none() && long.with_header(Vec::new()).is_none());
    }
}
