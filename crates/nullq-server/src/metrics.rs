//! `nullq serve --metrics-listen ADDR`: counters kept as the server works, and `GET /metrics`
//! answering them in the Prometheus text format (version 0.0.4, encoded by prometheus-client).
//!
//! - `nullq_qmqp_sessions_total{answer="K|Z|D|none"}`: every connection, by what it was
//!   answered (`none`: closed without an answer: access denied, client gone, timeout);
//! - `nullq_queue_messages`, `nullq_queue_oldest_message_age_seconds`: the queue as scanned at
//!   each scrape ([`crate::admin::queue_scan::QueueSummary`], the scan `nullq queue stats` and
//!   `nullq health` use), so they are never a count taken while files move;
//! - `nullq_deliveries_total{backend,result}`: each recipient's attempt, by backend kind and
//!   `delivered`, `deferred` or `failed`;
//! - `nullq_cgp_bad_files_total`: `.bad` files CommuniGate Pro left for our messages;
//! - `nullq_commit_duration_seconds`: a histogram of the spool's group commit as a session
//!   waits for it (timed at the call, so the spool crate knows nothing of metrics).
//!
//! The endpoint is hyper's HTTP/1 server on the server's runtime. It has no access rules of its
//! own (it is meant for a loopback or management address), so each connection is bounded in
//! time and few are served at once.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nullq_proto::qmqp::Status;
use nullq_spool::Spool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::queue_scan::QueueSummary;
use crate::process::shutdown::Shutdown;

/// The registry could not be written in the text format (a formatting error).
#[derive(Debug)]
pub struct EncodeError(pub std::fmt::Error);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "encoding the metrics: {}", self.0)
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Why a scrape has no metrics to show (the 500 answer's text and the ERROR line).
#[derive(Debug)]
enum ScrapeError {
    /// The blocking scan task panicked or was cancelled.
    Task(tokio::task::JoinError),
    /// The queue could not be listed.
    Scan(nullq_spool::SpoolError),
    /// The text could not be written.
    Encode(EncodeError),
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Task(e) => e.fmt(f),
            ScrapeError::Scan(e) => e.fmt(f),
            ScrapeError::Encode(e) => e.fmt(f),
        }
    }
}

/// Scrapes served at once; more wait for a turn (Prometheus sends one at a time).
const CONNECTIONS: usize = 8;
/// How long one connection may last, keep-alive included: a client that holds one open gets
/// nothing more than this.
const CONNECTION_TIME: Duration = Duration::from_secs(30);

/// `nullq_qmqp_sessions_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabel {
    answer: &'static str,
}

/// `nullq_deliveries_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    backend: String,
    result: &'static str,
}

/// What a delivery attempt came to, for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Delivered.
    Delivered,
    /// Try again later.
    Deferred,
    /// Failed for good (bounced).
    Failed,
}

impl DeliveryResult {
    fn word(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Deferred => "deferred",
            DeliveryResult::Failed => "failed",
        }
    }
}

/// The process's metrics, shared by the sessions, the runner and the endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Family<AnswerLabel, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    cgp_bad_files: Counter,
    commit_duration: Histogram,
    queue_messages: Gauge,
    queue_oldest_age: Gauge<f64, AtomicU64>,
    /// One queue scan at a time: a scraper that gives up (a timeout shorter than the scan)
    /// leaves its scan running on the blocking pool, and scans piling up would compete with
    /// the sessions' commits for the disk and the pool.
    scanning: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let sessions = Family::<AnswerLabel, Counter>::default();
        // Each answer shows from the start, at 0, so a rate over it needs no "absent" case.
        for answer in ["K", "Z", "D", "none"] {
            drop(sessions.get_or_create(&AnswerLabel { answer }));
        }
        registry.register(
            "nullq_qmqp_sessions",
            "QMQP connections by their answer (none: closed without one)",
            sessions.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "nullq_queue_messages",
            "Messages in the queue, counted at this scrape",
            queue_messages.clone(),
        );
        let queue_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "nullq_queue_oldest_message_age",
            "How long the oldest queued message has waited (0: empty queue), at this scrape",
            Unit::Seconds,
            queue_oldest_age.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "nullq_deliveries",
            "Delivery attempts, one per recipient, by backend and result",
            deliveries.clone(),
        );
        let cgp_bad_files = Counter::default();
        registry.register(
            "nullq_cgp_bad_files",
            "CommuniGate Pro .bad files found for our submissions",
            cgp_bad_files.clone(),
        );
        // 0.5 ms to about 4 s: a group commit is one fdatasync and one directory fsync.
        let commit_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "nullq_commit_duration",
            "Time a session waited for its message to be committed (the group fsync)",
            Unit::Seconds,
            commit_duration.clone(),
        );
        Metrics {
            registry,
            sessions,
            deliveries,
            cgp_bad_files,
            commit_duration,
            queue_messages,
            queue_oldest_age,
            scanning: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Count a connection answered `answer` (`None`: closed without an answer).
    pub fn session(&self, answer: Option<Status>) {
        let answer = match answer {
            Some(Status::Ok) => "K",
            Some(Status::TempFail) => "Z",
            Some(Status::PermFail) => "D",
            None => "none",
        };
        self.sessions.get_or_create(&AnswerLabel { answer }).inc();
    }

    /// Count one recipient's attempt through `backend` (its kind: `smtp`, `cgp`, ...).
    pub fn delivery(&self, backend: &str, result: DeliveryResult) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                backend: backend.to_owned(),
                result: result.word(),
            })
            .inc();
    }

    /// Count a `.bad` file found.
    pub fn cgp_bad_file(&self) {
        self.cgp_bad_files.inc();
    }

    /// Record how long a commit took.
    pub fn commit_took(&self, d: Duration) {
        self.commit_duration.observe(d.as_secs_f64());
    }

    /// Everything in the Prometheus text format, the queue gauges set from `queue` first.
    pub fn encode(&self, queue: &QueueSummary, now: SystemTime) -> Result<String, EncodeError> {
        self.queue_messages
            .set(i64::try_from(queue.messages).unwrap_or(i64::MAX));
        self.queue_oldest_age
            .set(queue.oldest_age(now).as_secs_f64());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .map_err(EncodeError)?;
        Ok(text)
    }
}

/// Serve `GET /metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, spool: Spool, mut stop: Shutdown) {
    let turns = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        // A turn first, then a connection: while every turn is taken, new connections wait in
        // the backlog; either wait ends at shutdown.
        let turn = tokio::select! {
            turn = Arc::clone(&turns).acquire_owned() => match turn {
                Ok(t) => t,
                Err(_) => return,
            },
            () = stop.recv() => return,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait a moment rather than spin.
                    tracing::warn!(target: "nullq::metrics", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.recv() => return,
        };
        let metrics = Arc::clone(&metrics);
        let spool = spool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                answer(req, Arc::clone(&metrics), spool.clone())
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIME, connection).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::debug!(target: "nullq::metrics", client = %client, "{e}");
                }
            }
            drop(turn);
        });
    }
}

impl Metrics {
    /// Wait for the right to scan the queue (one scan at a time).
    async fn scanning_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.scanning).lock_owned().await
    }
}

/// The answer to one request: the metrics for `GET /metrics`, 404 or 405 otherwise, 500 when
/// the queue cannot be scanned (so the scrape fails visibly rather than showing stale gauges).
async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    spool: Spool,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let plain = |status: StatusCode, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "try /metrics\n".into()));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics\n".into(),
        ));
    }
    // Held until the scan ends, even if this request is dropped meanwhile (the guard moves
    // into the blocking task).
    let turn = metrics.scanning_turn().await;
    let scanned = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        // At debug: every scrape would repeat it; `nullq health` reports unreadable messages.
        QueueSummary::scan(&spool, |id, e| {
            tracing::debug!(target: "nullq::metrics", id = %id, "not counted: {e}");
        })
        .map(|q| (q, SystemTime::now()))
    })
    .await
    .map_err(ScrapeError::Task)
    .and_then(|r| r.map_err(ScrapeError::Scan))
    .and_then(|(queue, now)| metrics.encode(&queue, now).map_err(ScrapeError::Encode));
    Ok(match scanned {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        Err(e) => {
            tracing::error!(target: "nullq::metrics", "cannot scan the queue for /metrics: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot scan the queue: {e}\n"),
            )
        }
    })
}

/// Where the endpoint listens, for the ready line (`-`: no endpoint).
pub fn describe(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.session(Some(Status::Ok));
        }
        m.session(Some(Status::PermFail));
        m.delivery("smtp", DeliveryResult::Deferred);
        m.cgp_bad_file();
        m.commit_took(Duration::from_millis(3));
        let now = SystemTime::now();
        let queue = QueueSummary {
            messages: 2,
            oldest: Some((
                "00061a8f3c2b7d10.00003039.00000007".parse().unwrap(),
                now - Duration::from_secs(90),
            )),
        };
        let text = m.encode(&queue, now).unwrap();
        for line in [
            "nullq_qmqp_sessions_total{answer=\"K\"} 3",
            "nullq_qmqp_sessions_total{answer=\"D\"} 1",
            "nullq_qmqp_sessions_total{answer=\"Z\"} 0",
            "nullq_qmqp_sessions_total{answer=\"none\"} 0",
            "nullq_queue_messages 2",
            "nullq_queue_oldest_message_age_seconds 90.0",
            "nullq_deliveries_total{backend=\"smtp\",result=\"deferred\"} 1",
            "nullq_cgp_bad_files_total 1",
            "nullq_commit_duration_seconds_count 1",
            "# TYPE nullq_commit_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
