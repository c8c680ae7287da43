//! One QMQP session: read one request, spool it, answer `K`, `Z` or `D`, close.
//!
//! This is the only place where network bytes meet the spool, and both front ends use it: the
//! tokio listener (`nullq serve`) and stdin/stdout under tcpserver (`nullq qmqpd`). It is generic
//! over any `AsyncRead + AsyncWrite`, so tests can drive it without a socket.
//!
//! The order of things is what makes `K` mean "safe":
//! 1. bytes are decoded by [`RequestDecoder`] under the configured limits; message bytes are
//!    streamed into a spool file in `tmp/` (after our Received lines), never held whole;
//! 2. at the end of the request the envelope is checked; any refusal is a `D` and the tmp file is
//!    dropped (unlinked);
//!
//!    A request over a limit is answered what was asked, too: it is read on to its end, its bytes
//!    thrown away as they come (never buffered), and only then is the `D` written, so that a
//!    client still sending reads it instead of a reset. That is bounded: by the drain budget
//!    ([`Context::drain_limit`] bytes of request in all, then `D` at once and close), by the read
//!    timeout (a client gone quiet gets its `D` then) and by the session's deadline; a client
//!    that closes its side early gets the `D` at once. qmail-qmqpd, too, reads the whole message
//!    before it answers.
//! 3. otherwise the message goes to the spool's committer: whole, if it fit in the session's
//!    buffer (the committer thread writes its file), or its file finished (envelope, trailer)
//!    and renamed into `queue/`; the committer flushes it with its batch; only then is `K`
//!    written. A spool failure is a `Z`,
//!    and a refused commit has unlinked its file from `queue/` again: a message answered `Z` is
//!    never delivered. A failed directory fsync (or a commit refused since one failed) is also
//!    logged at ERROR, once, and stops `nullq serve` ([`Context::commit_failed`]); from then on
//!    the spool creates no file at all, so the sessions still open get `Z` without writing.
//!
//! A client that vanishes halfway gets nothing, and its tmp file goes with the dropped
//! [`Incoming`]. Spool calls run on tokio's blocking pool: they fsync.
//!
//! Time is bounded three ways, so that slow clients cannot hold the slots: a request must
//! arrive at [`Context::min_data_rate`] on average after a grace of
//! [`Context::first_byte_timeout`] (which is also all a silent connection gets), a pause in a
//! transfer may last [`Context::read_timeout`], and the whole session
//! [`Context::session_timeout`]. When every slot is taken, the listener may ask the session
//! furthest below the rate to give its slot up ([`Progress::evict`]): it is answered `Z`. For
//! that choice the rate is reckoned with a capped credit ([`Progress::behind`]), and a TLS
//! connection is registered before its handshake.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nullq_proto::qmqp::{self, Event, RequestDecoder, Response, Status};
use nullq_proto::DecodeError;
use nullq_spool::{Envelope, Incoming, SpoolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::inbound::context::{Context, ENVELOPE_BYTES};
use crate::inbound::peer::Peer;
pub use crate::inbound::progress::Progress;
use crate::inbound::received;
use crate::process::logging::{escape, push_escaped_field};

/// How many message bytes are gathered before one write to the spool file: large enough that a
/// typical message is written in one blocking call. The buffer grows to 128 KiB before the
/// write, so a thousand sessions receiving large messages at once hold about 100 MiB (measured
/// by a red-team review: 104 KiB a session), bounded by `max_sessions`.
const WRITE_CHUNK: usize = 64 * 1024;

/// The most a message buffer is sized for at its start, from the length its client claims.
const MESSAGE_ROOM: usize = 8 * 1024;

/// The socket read buffer of a session that is sending.
const READ_BUFFER: usize = 16 * 1024;

/// The read buffer of a session before its first bytes: most of a thousand open sessions are
/// idle at any moment, and an idle one should not hold 16 KiB.
const FIRST_READ: usize = 512;

/// The read buffer of a connection being drained after its answer ([`linger`]).
const LINGER_BUFFER: usize = 4096;

/// The longest a connection is drained after its answer ([`linger`]), unless the first-byte
/// timeout is longer.
const LINGER_LIMIT: Duration = Duration::from_secs(60);

/// The answer of a session that gave its slot to a new connection.
const EVICTED: &str =
    "sorry, every session is taken and this one is the slowest, try again later (#4.3.2)";

/// What one session did: the fields of its log line.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The queue id, when a message was spooled.
    pub id: Option<String>,
    /// The envelope sender, when read.
    pub sender: Option<Vec<u8>>,
    /// How many recipients were read.
    pub recipients: usize,
    /// Message bytes received.
    pub size: u64,
    /// The answer sent, or `None` if none was (the client went away, or timed out).
    pub answer: Option<Status>,
    /// The answer's text or why there was none.
    pub reason: String,
    /// When the session started.
    pub started: Instant,
}

impl Outcome {
    /// Write the session's one log line. It is built here in one buffer ([`Outcome::line`])
    /// and handed to tracing as the event's message: the fields ten `key = %value` fields
    /// gave, without ten formatting visits and the small strings each needed (measured:
    /// tracing's field visits were most of the 6 % of the server's samples that its log
    /// lines took, BENCHMARKS.md).
    pub fn log(&self, peer: &Peer) {
        if tracing::enabled!(target: "nullq::session", tracing::Level::INFO) {
            let line = self.line(peer, self.started.elapsed().as_millis());
            tracing::info!(target: "nullq::session", "{line}");
        }
    }

    /// The log line's text, `ms` the session's duration: `client=... reason=...`, what the
    /// client gave escaped spaces included ([`push_escaped_field`]); the reason, last, keeps
    /// its spaces (client bytes in it were escaped where it was made).
    fn line(&self, peer: &Peer, ms: u128) -> String {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(192 + self.reason.len());
        line.push_str("client=");
        match peer.ip {
            Some(ip) => {
                let _ = write!(line, "{ip}");
            }
            None => line.push_str("unknown"),
        }
        line.push_str(" host=");
        // TCPREMOTEHOST under `nullq qmqpd`: whatever the UCSPI server set.
        push_escaped_field(&mut line, peer.host.as_bytes());
        line.push_str(" id=");
        line.push_str(self.id.as_deref().unwrap_or("-"));
        line.push_str(" from=");
        match &self.sender {
            Some(s) => {
                line.push('<');
                push_escaped_field(&mut line, s);
                line.push('>');
            }
            None => line.push('-'),
        }
        let answer = self.answer.map_or('-', |status| char::from(status.byte()));
        let _ = write!(
            line,
            " rcpts={} size={} answer={answer} ms={ms} tls=",
            self.recipients, self.size
        );
        peer.push_tls_text(&mut line);
        line.push_str(" reason=");
        line.push_str(&self.reason);
        line
    }
}

/// Why a session ended without an answer or with a refusal, before the spool was involved.
enum Stop {
    /// Answer `D` with this text.
    Refuse(String),
    /// Answer `Z` with this text.
    TempFail(String),
    /// Close without an answer (client gone, or the connection is unusable).
    Hangup(String),
}

/// Run one session on `io` for `peer`. Never panics on input; always returns what happened.
/// `progress` is updated as bytes arrive; its [`Progress::evict`] ends the session with `Z`.
pub async fn run<S>(io: &mut S, peer: &Peer, ctx: Arc<Context>, progress: &Progress) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut outcome = Outcome {
        id: None,
        sender: None,
        recipients: 0,
        size: 0,
        answer: None,
        reason: String::new(),
        started: Instant::now(),
    };
    let result = receive(io, peer, &ctx, &mut outcome, progress).await;
    progress.reading.store(false, Ordering::Relaxed);
    let response = match result {
        Ok(response) => response,
        Err(Stop::Refuse(text)) => {
            // Postfix's qmqpd_error_delay: slow down clients that send garbage.
            tokio::time::sleep(ctx.error_delay).await;
            Response::new(Status::PermFail, text)
        }
        Err(Stop::TempFail(text)) => Response::new(Status::TempFail, text),
        Err(Stop::Hangup(reason)) => {
            outcome.reason = reason;
            return outcome;
        }
    };
    outcome.reason = response.text.clone();
    let write = async {
        io.write_all(&response.encode()).await?;
        io.flush().await?;
        io.shutdown().await
    };
    match tokio::time::timeout(ctx.read_timeout, write).await {
        Ok(Ok(())) => outcome.answer = Some(response.status),
        // The answer may not have arrived; a K that did not arrive means the client retries, and
        // the message may be delivered twice: never lost.
        Ok(Err(e)) => outcome.reason = format!("{} (answer not sent: {e})", response.text),
        Err(_) => outcome.reason = format!("{} (answer not sent: timeout)", response.text),
    }
    outcome
}

/// The message being received: gathered bytes and, once they outgrow memory, the spool file.
struct Receiving {
    buffer: Vec<u8>,
    file: Option<Incoming>,
}

async fn receive<S>(
    io: &mut S,
    peer: &Peer,
    ctx: &Arc<Context>,
    outcome: &mut Outcome,
    progress: &Progress,
) -> Result<Response, Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + ctx.session_timeout;
    let mut decoder = RequestDecoder::new(ctx.limits.clone());
    // Read into its spare room (`read_buf`): nothing to zero first.
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ);
    let mut receiving: Option<Receiving> = None;
    let mut sender: Option<Vec<u8>> = None;
    let mut recipients: Vec<Vec<u8>> = Vec::new();
    // What the addresses above count against the server's envelope budget, until they go.
    let mut held = EnvelopeHeld { ctx, bytes: 0 };
    // The first bad address: the request is still read to its end before `D` is answered.
    let mut bad_address: Option<String> = None;
    let arrival = SystemTime::now();
    // The message's start, kept only when the policy checks the header From:.
    let mut head: Vec<u8> = Vec::new();
    let keep_head = ctx.policy.wants_header();

    loop {
        if let Some(e) = decoder.rejection() {
            if decoder.offset() > ctx.drain_limit {
                // Enough of a refused request: answer now; what else comes is not read.
                return Err(refusal(e.clone()));
            }
        }
        let n = match read(io, &mut buf, deadline, ctx, progress).await {
            Ok(n) => n,
            // A refused request whose client went quiet is answered what it was going to get.
            Err(Stop::TempFail(why)) => match decoder.rejection() {
                Some(e) => return Err(refusal(e.clone())),
                None => return Err(Stop::TempFail(why)),
            },
            Err(stop) => return Err(stop),
        };
        progress.add(n);
        let full = n == buf.capacity() && buf.capacity() < READ_BUFFER;
        if n == 0 {
            if let Some(e) = decoder.rejection() {
                // It closed its side before the end: it can still read the refusal.
                return Err(refusal(e.clone()));
            }
            let reason = match decoder.eof() {
                Err(e) => format!("client closed the connection: {e}"),
                Ok(()) => "client closed the connection".to_owned(),
            };
            return Err(Stop::Hangup(reason));
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            let (used, event) = decoder.feed(input).map_err(refusal)?;
            input = &input[used..];
            let Some(event) = event else { continue };
            match event {
                Event::MessageStart { len } => {
                    let header = received::header(peer, &ctx.local_name, arrival);
                    // Room for the whole of a small message, so that gathering it never
                    // copies it; never more than MESSAGE_ROOM for a length the client only
                    // claims (a larger message grows its buffer as its bytes come).
                    let room = usize::try_from(len).map_or(MESSAGE_ROOM, |n| n.min(MESSAGE_ROOM));
                    let mut buffer = Vec::with_capacity(header.len() + room);
                    buffer.extend_from_slice(header.as_bytes());
                    receiving = Some(Receiving { buffer, file: None });
                }
                Event::Message(bytes) => {
                    outcome.size += bytes.len() as u64;
                    if keep_head && head.len() < crate::inbound::policy::HEAD_LIMIT {
                        let room = crate::inbound::policy::HEAD_LIMIT - head.len();
                        head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    }
                    if let Some(r) = receiving.as_mut() {
                        r.buffer.extend_from_slice(bytes);
                        if r.buffer.len() >= WRITE_CHUNK {
                            spill(ctx, r).await?;
                        }
                    }
                }
                Event::Sender(address) => {
                    held.take(address.len())?;
                    if let Err(problem) = qmqp::check_address(&address, true) {
                        bad_address.get_or_insert_with(|| bad(&address, problem));
                    }
                    sender = Some(address);
                    outcome.sender.clone_from(&sender);
                }
                Event::Recipient(address) => {
                    held.take(address.len())?;
                    if let Err(problem) = qmqp::check_address(&address, false) {
                        bad_address.get_or_insert_with(|| bad(&address, problem));
                    }
                    recipients.push(address);
                    outcome.recipients = recipients.len();
                }
                Event::Rejected(e) => return Err(refusal(e)),
                Event::End => {
                    progress.reading.store(false, Ordering::Relaxed);
                    if !input.is_empty() {
                        return Err(Stop::Refuse(
                            "sorry, data after the end of the request (#5.5.2)".to_owned(),
                        ));
                    }
                    if let Some(text) = bad_address {
                        return Err(Stop::Refuse(text));
                    }
                    let (Some(r), Some(sender)) = (receiving.take(), sender.take()) else {
                        // The decoder does not end a request without these; be safe anyway.
                        return Err(Stop::Refuse("sorry, incomplete request (#5.5.2)".into()));
                    };
                    ctx.policy
                        .check(peer, &sender, &recipients, &head)
                        .map_err(Stop::Refuse)?;
                    let envelope = Envelope {
                        arrival,
                        client_addr: peer.addr_text(),
                        client_host: peer.host.clone(),
                        sender,
                        recipients: std::mem::take(&mut recipients),
                    };
                    let id = commit(ctx, r, envelope).await?;
                    let unix = arrival
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    outcome.id = Some(id.clone());
                    return Ok(Response::new(Status::Ok, format!("ok {unix} qp {id}")));
                }
            }
        }
        if full {
            // The client is sending in earnest: read in bigger pieces from now on.
            buf = Vec::with_capacity(READ_BUFFER);
        }
    }
}

/// Read into `buf`, bounded by the per-read timeout, the session's deadline and the time the
/// bytes received so far have earned ([`Progress`]); an eviction ends the wait at once. The
/// answer to a timeout names the configured limit that was hit (not the time left of it).
async fn read<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    ctx: &Context,
    progress: &Progress,
) -> Result<usize, Stop>
where
    S: AsyncRead + Unpin,
{
    let now = tokio::time::Instant::now();
    let session_left = deadline.saturating_duration_since(now);
    let earned_left = progress
        .allowed_until(ctx.first_byte_timeout, ctx.min_data_rate)
        .saturating_duration_since(now);
    let received = progress.received.load(Ordering::Relaxed);
    let (limit, why) = if session_left <= ctx.read_timeout && session_left <= earned_left {
        (
            session_left,
            format!(
                "session time limit of {}s exceeded",
                ctx.session_timeout.as_secs()
            ),
        )
    } else if earned_left < ctx.read_timeout && received == 0 {
        (
            earned_left,
            format!(
                "no request within the first-byte timeout of {}s",
                ctx.first_byte_timeout.as_secs()
            ),
        )
    } else if earned_left < ctx.read_timeout {
        (
            earned_left,
            format!(
                "the request is arriving too slowly ({received} bytes in {}s, under {} bytes a \
                 second after the first {}s)",
                progress.accepted.elapsed().as_secs(),
                ctx.min_data_rate,
                ctx.first_byte_timeout.as_secs()
            ),
        )
    } else {
        (
            ctx.read_timeout,
            format!("read timeout of {}s exceeded", ctx.read_timeout.as_secs()),
        )
    };
    tokio::select! {
        read = tokio::time::timeout(limit, read_into(io, buf)) => match read {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(Stop::Hangup(format!("read error: {e}"))),
            // The client is too slow: it is most likely gone, but say why in case it is not.
            Err(_) => Err(Stop::TempFail(format!("sorry, {why} (#4.4.2)"))),
        },
        () = progress.evicted() => Err(Stop::TempFail(EVICTED.to_owned())),
    }
}

/// Reads what the client sent into `buf`'s spare room, in place of what was there: as much as
/// its capacity takes.
async fn read_into<S>(io: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    buf.clear();
    io.read_buf(buf).await
}

/// After a refusal, read (and throw away) what the client still sends until it closes, so that
/// closing does not reset the connection: a socket closed with unread bytes sends RST, and a
/// client that gets RST may never read the answer sitting in its buffer. Bounded as a request
/// is: [`Context::drain_limit`] bytes, [`Context::min_data_rate`] after the first-byte timeout,
/// and the read timeout for each pause.
pub async fn linger<S>(io: &mut S, ctx: &Context)
where
    S: AsyncRead + Unpin,
{
    let progress = Progress::new(ctx.min_data_rate);
    // In all, a minute (or the first-byte timeout, if longer): a client still sending at a
    // normal pace is done by then, and one trickling at the minimum rate must not keep a
    // lingering place for the hours its drain budget would allow.
    let end = tokio::time::Instant::now()
        + ctx
            .first_byte_timeout
            .max(LINGER_LIMIT)
            .min(ctx.session_timeout);
    let mut buf = vec![0u8; LINGER_BUFFER];
    let mut got: u64 = 0;
    while got <= ctx.drain_limit {
        let now = tokio::time::Instant::now();
        let left = progress
            .allowed_until(ctx.first_byte_timeout, ctx.min_data_rate)
            .min(end)
            .saturating_duration_since(now)
            .min(ctx.read_timeout);
        match tokio::time::timeout(left, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                got += n as u64;
                progress.add(n);
            }
            _ => return,
        }
    }
}

/// The `D` answer for a decoding error.
fn refusal(e: DecodeError) -> Stop {
    use nullq_proto::ErrorKind;
    let code = match e.kind() {
        ErrorKind::MessageTooBig { .. } | ErrorKind::RequestTooBig { .. } => "5.3.4",
        ErrorKind::TooManyRecipients { .. } => "5.5.3",
        ErrorKind::AddressTooLong { .. } => "5.1.3",
        _ => "5.5.2",
    };
    Stop::Refuse(format!("sorry, {e} (#{code})"))
}

fn bad(address: &[u8], problem: qmqp::AddressProblem) -> String {
    format!(
        "sorry, I can't accept addresses like <{}>: {problem} (#5.1.3)",
        escape(address)
    )
}

/// The `Z` answer for a spool failure; the detail goes to the log line through the text.
fn spool_failure(e: &SpoolError) -> Stop {
    if e.is_full() {
        Stop::TempFail(format!(
            "sorry, the server's disk is full, try again later (#4.3.1): {e}"
        ))
    } else {
        Stop::TempFail(format!(
            "sorry, the server could not queue the message (#4.3.0): {e}"
        ))
    }
}

/// One of the sessions' slots for blocking file work (see [`Context::disk_slots`]), held until
/// the blocking task ends.
async fn disk_slot(ctx: &Arc<Context>) -> Result<OwnedSemaphorePermit, Stop> {
    Arc::clone(&ctx.disk_slots)
        .acquire_owned()
        .await
        // Never closed; if it were, the server is stopping.
        .map_err(|e| Stop::TempFail(format!("sorry, internal error (#4.3.0): {e}")))
}

/// Move the gathered bytes into the spool file, creating it on first use.
/// A session's envelope, counted: the first [`ENVELOPE_OWN`] bytes are its own, the rest is
/// taken from the shared [`ENVELOPE_BYTES`] and given back when this is dropped.
struct EnvelopeHeld<'a> {
    ctx: &'a Context,
    bytes: usize,
}

/// What an address costs beside its bytes (a `Vec` of its own).
const ADDRESS_OVERHEAD: usize = 32;

/// The envelope bytes every session may hold without taking from the shared budget: a hundred
/// recipients of ordinary length. So a few connections holding the whole budget (33 sessions of
/// a megabyte each) cannot get ordinary mail refused; a thousand sessions hold 8 MiB of these.
const ENVELOPE_OWN: usize = 8 * 1024;

impl EnvelopeHeld<'_> {
    /// The part of `bytes` that the shared budget carries.
    fn shared(bytes: usize) -> usize {
        bytes.saturating_sub(ENVELOPE_OWN)
    }

    /// Count an address of `len` bytes, or refuse the request for now (`Z`) if it takes the
    /// session past its own allowance and the open sessions hold the whole budget already.
    fn take(&mut self, len: usize) -> Result<(), Stop> {
        let total = self.bytes + len + ADDRESS_OVERHEAD;
        let n = Self::shared(total) - Self::shared(self.bytes);
        if n > 0 {
            let before = self.ctx.envelope_bytes.fetch_add(n, Ordering::Relaxed);
            if before + n > ENVELOPE_BYTES {
                self.ctx.envelope_bytes.fetch_sub(n, Ordering::Relaxed);
                return Err(Stop::TempFail(format!(
                    "sorry, the open sessions hold {} MiB of envelopes already, try again later \
                     (#4.3.2)",
                    ENVELOPE_BYTES >> 20
                )));
            }
        }
        self.bytes = total;
        Ok(())
    }
}

impl Drop for EnvelopeHeld<'_> {
    fn drop(&mut self) {
        self.ctx
            .envelope_bytes
            .fetch_sub(Self::shared(self.bytes), Ordering::Relaxed);
    }
}

async fn spill(ctx: &Arc<Context>, r: &mut Receiving) -> Result<(), Stop> {
    let spool = ctx.spool.clone();
    let slot = disk_slot(ctx).await?;
    let file = r.file.take();
    let buffer = std::mem::take(&mut r.buffer);
    let joined = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut file = match file {
            Some(f) => f,
            None => spool.receive()?,
        };
        file.write(&buffer)?;
        Ok::<_, SpoolError>((file, buffer))
    })
    .await;
    match joined {
        Ok(Ok((file, mut buffer))) => {
            buffer.clear();
            r.file = Some(file);
            r.buffer = buffer;
            Ok(())
        }
        Ok(Err(e)) => {
            ctx.commit_failed(&e);
            Err(spool_failure(&e))
        }
        Err(e) => Err(Stop::TempFail(format!(
            "sorry, internal error (#4.3.0): {e}"
        ))),
    }
}

/// Write what is left, finish the file and commit it (group commit). Returns the queue id.
///
/// A message that never outgrew the session's buffer (most mail) is handed whole to the spool's
/// committer thread, which writes, renames and flushes it with its batch: no blocking-pool
/// thread and no handoff beyond the commit's own. A larger one has its file already; what is
/// left is written and the file finished on the blocking pool, then committed.
async fn commit(ctx: &Arc<Context>, r: Receiving, envelope: Envelope) -> Result<String, Stop> {
    let started = Instant::now();
    let joined = match r.file {
        None => Ok(ctx.spool.store(r.buffer, envelope).await),
        Some(mut file) => {
            let slot = disk_slot(ctx).await?;
            let buffer = r.buffer;
            let finished = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                file.write(&buffer)?;
                file.finish(&envelope)
            })
            .await;
            // The commit is awaited here, not in the blocking pool: a thousand sessions waiting
            // for it hold no thread, and the runner's file reads are not queued behind them.
            match finished {
                Ok(Ok(renamed)) => Ok(renamed.submit().await),
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        }
    };
    let joined = joined.map(|r| r.map(|id| (id, started.elapsed())));
    if let Some(e) = ctx.spool.committer().take_flush_fallback() {
        tracing::error!(target: "nullq::spool", "syncfs of the spool's filesystem failed ({e}): a writeback on that disk failed; committing file by file (fsync each) from now on");
    }
    match joined {
        Ok(Ok((id, took))) => {
            ctx.metrics.commit_took(took);
            // Tell the delivery runner at once (no polling delay on the happy path).
            if let Some(tx) = &ctx.committed {
                let _ = tx.send(id);
            }
            Ok(id.to_string())
        }
        Ok(Err(e)) => {
            ctx.commit_failed(&e);
            Err(spool_failure(&e))
        }
        Err(e) => Err(Stop::TempFail(format!(
            "sorry, internal error (#4.3.0): {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The session reads into its buffer's spare room (`read_into`), growing it from 512 bytes
    //! to 16 KiB: a request handed over in pieces of every size around those (a reader that
    //! gives exactly the pieces asked for: TCP cannot be made to split so) must be stored
    //! exactly, each message differing at every offset so that a stale byte shows (a red-team
    //! test of 904c4c3; without `buf.clear()` it fails).
    use super::*;
    use std::io::Read;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};
    use tokio::io::ReadBuf;

    use nullq_config::server::ServerConfig;
    use nullq_spool::Spool;

    /// A client that hands the request over in pieces of the given sizes (cycled), then EOF.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
        out: Vec<u8>,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let me = &mut *self;
            let left = me.data.len() - me.pos;
            let size = me.sizes[me.next % me.sizes.len()].max(1);
            me.next += 1;
            let n = left.min(size).min(buf.remaining());
            buf.put_slice(&me.data[me.pos..me.pos + n]);
            me.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Chunked {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.out.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn peer() -> Peer {
        Peer {
            ip: "10.1.2.3".parse().ok(),
            host: "unknown".into(),
            ip_text: None,
            info: None,
            env: Vec::new(),
            tls: None,
        }
    }

    /// Message bytes that differ at every offset (so a stale byte shows).
    fn message(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut m: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'!' + (x % 90) as u8
            })
            .collect();
        if len > 20 {
            m[..11].copy_from_slice(b"Subject: x\n");
        }
        m
    }

    fn run_case(
        rt: &tokio::runtime::Runtime,
        ctx: &Arc<Context>,
        spool: &Spool,
        request: Vec<u8>,
        sizes: &[usize],
    ) -> (String, Option<Vec<u8>>) {
        let mut io = Chunked {
            data: request,
            pos: 0,
            sizes: sizes.to_vec(),
            next: 0,
            out: Vec::new(),
        };
        let peer = peer();
        let progress = Progress::new(ctx.min_data_rate);
        let outcome = rt.block_on(run(&mut io, &peer, Arc::clone(ctx), &progress));
        let answer = String::from_utf8_lossy(&io.out).into_owned();
        let stored = outcome.id.map(|id| {
            let id = id.parse().expect("queue id");
            let mut stored = Vec::new();
            spool
                .message(&id)
                .expect("message")
                .read_to_end(&mut stored)
                .expect("read");
            spool.remove(&id).ok();
            stored
        });
        (answer, stored)
    }

    #[test]
    fn every_split_stores_the_message_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        let (spool, _) = rt
            .block_on(async { Spool::open(dir.path()) })
            .expect("spool");
        let ctx =
            rt.block_on(async { Arc::new(Context::new(&ServerConfig::default(), spool.clone())) });
        let lens = [
            0usize, 1, 2, 100, 480, 511, 512, 513, 1000, 4095, 8191, 8192, 8193, 9000, 16383,
            16384, 16385, 40000, 65535, 65536, 65537, 70000, 140_000,
        ];
        let splits: [&[usize]; 10] = [
            &[1],
            &[2],
            &[3, 7],
            &[511],
            &[512],
            &[513],
            &[600, 1],
            &[16384],
            &[100_000],
            &[17, 4096, 1, 16383, 9999],
        ];
        let mut cases = 0;
        for (i, &len) in lens.iter().enumerate() {
            for sizes in splits {
                if len > 20_000 && sizes.iter().all(|&s| s < 300) {
                    continue; // too slow, covered by the others
                }
                let msg = message(len, (i * 31 + sizes[0]) as u32);
                let request =
                    qmqp::encode_request(&msg, b"a@example.net", &[b"b@example.net".to_vec()]);
                let (answer, stored) = run_case(&rt, &ctx, &spool, request, sizes);
                assert!(
                    answer.contains(":Kok "),
                    "len {len} split {sizes:?}: {answer}"
                );
                let stored = stored.expect("stored");
                assert!(
                    stored.ends_with(&msg),
                    "len {len} split {sizes:?}: message bytes differ"
                );
                let head = &stored[..stored.len() - msg.len()];
                assert_eq!(
                    head.iter().filter(|&&b| b == b'\n').count(),
                    3,
                    "len {len} split {sizes:?}"
                );
                assert!(
                    head.starts_with(b"Received: (nullq "),
                    "len {len} split {sizes:?}"
                );
                cases += 1;
            }
        }
        assert!(cases > 150);
    }

    /// The log line is built by hand (not by tracing's field visits): every field, and what a
    /// client controls (the sender, TCPREMOTEHOST under `nullq qmqpd`, a certificate name)
    /// escaped, spaces too, so that it can forge neither a line nor a field (a red-team
    /// review found a space in the sender making a second `answer=`, and a newline in the
    /// host a second line, both older than the hand-built line).
    #[test]
    fn the_log_line_has_every_field_and_escapes_what_the_client_gave() {
        let outcome = Outcome {
            id: Some("0006619e.0000506d.00000001".to_owned()),
            sender: Some(b"a\nINFO x answer=K\x00\xff@b".to_vec()),
            recipients: 3,
            size: 1234,
            answer: Some(Status::Ok),
            reason: "ok 1796181066 qp 0006619e.0000506d.00000001".to_owned(),
            started: Instant::now(),
        };
        let mut peer = Peer {
            ip: "192.0.2.7".parse().ok(),
            host: "h\x1b[31m\nINFO nullq::session: client=6.6.6.6".to_owned(),
            ip_text: None,
            info: None,
            env: Vec::new(),
            tls: None,
        };
        let line = outcome.line(&peer, 17);
        assert_eq!(
            line,
            "client=192.0.2.7 host=h\\x1b[31m\\x0aINFO\\x20nullq::session:\\x20client=6.6.6.6 \
             id=0006619e.0000506d.00000001 from=<a\\x0aINFO\\x20x\\x20answer=K\\x00\\xff@b> \
             rcpts=3 size=1234 answer=K ms=17 tls=- \
             reason=ok 1796181066 qp 0006619e.0000506d.00000001"
        );
        // One line, and one answer= field, whatever the client sent.
        assert!(!line.contains(['\n', '\r', '\x1b']));
        assert_eq!(line.matches(" answer=").count(), 1);
        peer.ip = None;
        peer.host = "unknown".to_owned();
        peer.tls = Some(crate::inbound::peer::TlsInfo {
            version: "TLSv1.3".to_owned(),
            cipher: "TLS13_AES_256_GCM_SHA384".to_owned(),
            client: Some("h1\r\nx answer=K".to_owned()),
        });
        let refused = Outcome {
            id: None,
            sender: None,
            answer: None,
            reason: "client went away".to_owned(),
            ..outcome
        };
        assert_eq!(
            refused.line(&peer, 0),
            "client=unknown host=unknown id=- from=- rcpts=3 size=1234 answer=- ms=0 \
             tls=TLSv1.3/TLS13_AES_256_GCM_SHA384/h1\\x0d\\x0ax\\x20answer=K \
             reason=client went away"
        );
        assert_eq!(
            peer.tls_text(),
            "TLSv1.3/TLS13_AES_256_GCM_SHA384/h1\\x0d\\x0ax\\x20answer=K"
        );
    }
}
