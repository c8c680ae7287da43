//! `nullq serve`'s front end: accept connections on every listening socket, admit or refuse each
//! (access rules, global and per-address session limits), and run a session for each admitted one.
//!
//! A refused client is told nothing about our rules: a denied address is logged and the socket
//! closed before a byte is read (as tcpserver does); a client over a session limit gets a `Z` so
//! its null client tries the next server or later, and what it sends is then read and thrown
//! away until it closes ([`session::linger`], bounded), so that it reads the `Z` instead of a
//! connection reset.
//!
//! When every slot is taken, a new connection is not refused at once: the session furthest
//! below the minimum data rate (if any is) is asked to give up its slot, answered `Z`, and the
//! newcomer takes the slot. So slow connections, however many, cannot keep a client that sends
//! at a normal pace out; a client over its per-address limit is refused without that.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullq_proto::qmqp::{Response, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::inbound::access::Access;
use crate::inbound::context::Context;
use crate::inbound::peer::Peer;
use crate::inbound::session::{self, Progress};
use crate::inbound::tls::ServerTls;
use crate::process::shutdown::{Drain, SessionGuard, Shutdown};

/// How long a new connection waits for the slot of the session it had evicted.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Connections refused or answered, being read until they close, for each session slot.
const LINGERING_PER_SESSION: usize = 2;

/// File descriptors a session slot may need: its socket, its spool file, and its share of
/// lingering connections.
pub const FDS_PER_SESSION: u64 = 2 + LINGERING_PER_SESSION as u64;

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Sessions at once, in all.
    pub max_sessions: usize,
    /// Sessions at once from one IP address.
    pub max_sessions_per_ip: usize,
}

/// Counts sessions per client address; a [`PerIpGuard`] gives its slot back when dropped.
#[derive(Debug, Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(table: &Arc<PerIp>, ip: IpAddr, limit: usize) -> Option<PerIpGuard> {
        let mut counts = match table.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut counts = match self.table.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The [`Progress`] of every open session, for choosing one to evict.
#[derive(Debug, Default)]
struct OpenSessions {
    table: Mutex<HashMap<u64, Arc<Progress>>>,
    next: AtomicU64,
}

/// A session's entry in [`OpenSessions`], removed when dropped.
struct Registered {
    sessions: Arc<OpenSessions>,
    key: u64,
    progress: Arc<Progress>,
}

impl OpenSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Progress>>> {
        match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn register(sessions: &Arc<OpenSessions>, progress: Progress) -> Registered {
        let key = sessions.next.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(progress);
        sessions.lock().insert(key, Arc::clone(&progress));
        Registered {
            sessions: Arc::clone(sessions),
            key,
            progress,
        }
    }

    /// Ask the session furthest below its rate to give up its slot. Whether one was asked.
    fn evict_slowest(&self) -> bool {
        let now = Instant::now();
        let slowest = self
            .lock()
            .values()
            .filter_map(|p| p.behind(now).map(|behind| (behind, Arc::clone(p))))
            .max_by_key(|(behind, _)| *behind);
        slowest.is_some_and(|(_, progress)| progress.evict())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.key);
    }
}

/// A listening socket, and for a TLS listener the settings its connections are wrapped in.
pub struct Listening {
    /// The socket.
    pub socket: TcpListener,
    /// `Some` for a TLS listener (`--tls-listen`): each admitted connection does the TLS
    /// handshake, inside its session slot, before its session reads a QMQP byte.
    pub tls: Option<Arc<ServerTls>>,
}

impl From<TcpListener> for Listening {
    fn from(socket: TcpListener) -> Listening {
        Listening { socket, tls: None }
    }
}

/// What every accept loop shares.
struct Front {
    ctx: Arc<Context>,
    access: Arc<Access>,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    open: Arc<OpenSessions>,
    /// Connections being read until they close after their answer ([`session::linger`]).
    lingering: Arc<Semaphore>,
}

/// Accept on every listener until `shutdown`, then wait up to `grace` for open sessions.
/// Returns whether every session finished within `grace`.
pub async fn serve(
    listeners: Vec<Listening>,
    ctx: Arc<Context>,
    access: Arc<Access>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
    grace: Duration,
) -> bool {
    let front = Arc::new(Front::new(ctx, access, limits));
    let drain = Drain::new();
    let mut accepting = Vec::new();
    for Listening {
        socket: listener,
        tls,
    } in listeners
    {
        let front = Arc::clone(&front);
        let Some(guard) = drain.guard() else { break };
        let mut shutdown = shutdown.clone();
        accepting.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.recv() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, addr)) => match front.admit(stream, addr, tls.as_ref()) {
                            Admission::Refused => {}
                            Admission::Now(admitted) => {
                                tokio::spawn(run_one(Arc::clone(&front), admitted, guard.clone()));
                            }
                            Admission::AfterEviction(waiting) => {
                                let front = Arc::clone(&front);
                                let guard = guard.clone();
                                tokio::spawn(async move {
                                    if let Some(admitted) = front.take_evicted_slot(waiting).await {
                                        run_one(front, admitted, guard).await;
                                    }
                                });
                            }
                        },
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(target: "nullq::listener", "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            drop(guard);
        }));
    }
    for task in accepting {
        let _ = task.await;
    }
    tracing::info!(target: "nullq::listener", "stopped accepting; waiting up to {}s for open sessions", grace.as_secs());
    crate::process::systemd::stopping();
    drain.wait(grace).await
}

async fn run_one(front: Arc<Front>, admitted: Admitted, guard: SessionGuard) {
    let Admitted {
        stream,
        peer,
        permit,
        ip_guard,
        tls,
    } = admitted;
    // Registered from the start, so that when every slot is taken a connection still in its
    // TLS handshake can be asked to give its slot up like any session that sends nothing.
    let registered = OpenSessions::register(&front.open, Progress::new(front.ctx.min_data_rate));
    let slot = (permit, ip_guard, registered);
    let Some(tls) = tls else {
        if let Some(stream) = run_session(&front, stream, &peer, slot, guard).await {
            front.linger(stream).await;
        }
        return;
    };
    // On the heap: a TLS session's future is several kilobytes (the handshake, the rustls
    // connection), and every plain session's task would otherwise be that size too, copied
    // into its task and moved at each of its stages (measured: 10 KB, a few µs a message).
    Box::pin(run_tls(front, stream, peer, slot, guard, tls)).await;
}

/// [`run_one`] for a connection to a TLS listener: the handshake, then the session.
async fn run_tls(
    front: Arc<Front>,
    stream: TcpStream,
    mut peer: Peer,
    slot: (OwnedSemaphorePermit, PerIpGuard, Registered),
    guard: SessionGuard,
    tls: Arc<ServerTls>,
) {
    // TLS sends whole records: without Nagle's algorithm the answer's record and close_notify
    // leave at once instead of waiting for the client's delayed ACK. A failure only costs that.
    let _ = stream.set_nodelay(true);
    // The handshake holds the slot (the limits count it) and is bounded as a first byte is.
    let handshake =
        tokio::time::timeout(front.ctx.first_byte_timeout, tls.acceptor().accept(stream));
    let shaken = tokio::select! {
        shaken = handshake => shaken.map_err(|_| {
            format!("no handshake within {}s", front.ctx.first_byte_timeout.as_secs())
        }),
        // Nothing can be answered before the handshake: the connection is closed.
        () = slot.2.progress.evicted() => Err(
            "every session is taken and this handshake is the slowest".to_owned(),
        ),
    };
    let shaken = match shaken {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(why) => Err(why),
    };
    let stream = match shaken {
        Ok(stream) => stream,
        Err(reason) => {
            drop(slot);
            front.ctx.metrics.session(None);
            tracing::info!(
                target: "nullq::session",
                client = %peer.addr_text(),
                answer = "-",
                reason = %format!("TLS handshake failed: {reason}; connection closed"),
            );
            drop(guard);
            return;
        }
    };
    peer.tls = Some(crate::inbound::tls::info(stream.get_ref().1));
    if let Some(mut stream) = run_session(&front, stream, &peer, slot, guard).await {
        if let Ok(_place) = Arc::clone(&front.lingering).try_acquire_owned() {
            session::linger(&mut stream, &front.ctx).await;
        }
    }
}

/// One session on `stream` in its slot; gives the stream back when it should be read until the
/// client closes (after a refusal).
async fn run_session<S>(
    front: &Arc<Front>,
    mut stream: S,
    peer: &Peer,
    slot: (OwnedSemaphorePermit, PerIpGuard, Registered),
    guard: SessionGuard,
) -> Option<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (permit, ip_guard, registered) = slot;
    let ctx = Arc::clone(&front.ctx);
    let outcome = session::run(&mut stream, peer, ctx, &registered.progress).await;
    // The order matters: the connection slot (the session permit and the per-address count) is
    // given back before the session's log line is written, so whoever has seen that line (a
    // monitor, a test) knows the slot is free and may connect again without being refused as
    // over a limit. The shutdown guard goes after the line: a draining server waits for it.
    drop((registered, permit, ip_guard));
    // Counted before the log line, so that whoever has seen the line sees the count.
    front.ctx.metrics.session(outcome.answer);
    outcome.log(peer);
    drop(guard);
    // Refused before the client had sent everything, maybe: read the rest (outside the slot)
    // so that the answer is read, not reset.
    matches!(outcome.answer, Some(Status::TempFail | Status::PermFail)).then_some(stream)
}

/// A connection given a slot, before its session has read a byte.
struct Admitted {
    stream: TcpStream,
    peer: Peer,
    permit: OwnedSemaphorePermit,
    ip_guard: PerIpGuard,
    tls: Option<Arc<ServerTls>>,
}

/// A connection waiting for the slot of a session asked to give it up.
struct Waiting {
    stream: TcpStream,
    client: SocketAddr,
    peer: Peer,
    ip_guard: PerIpGuard,
    tls: Option<Arc<ServerTls>>,
}

enum Admission {
    /// Refused, and handled (logged, answered or closed).
    Refused,
    /// Admitted to a free slot.
    Now(Admitted),
    /// Every slot was taken; a slow session was asked to give up its own.
    AfterEviction(Waiting),
}

impl Front {
    fn new(ctx: Arc<Context>, access: Arc<Access>, limits: ConnectionLimits) -> Front {
        Front {
            ctx,
            access,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_sessions)),
            per_ip: Arc::new(PerIp::default()),
            open: Arc::new(OpenSessions::default()),
            lingering: Arc::new(Semaphore::new(
                limits.max_sessions.saturating_mul(LINGERING_PER_SESSION),
            )),
        }
    }

    /// Decide on a new connection from `addr`; refused ones are logged and answered here,
    /// admitted ones logged (debug) while their slot is held, before the session reads a byte.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        tls: Option<&Arc<ServerTls>>,
    ) -> Admission {
        // IPv4-mapped IPv6 addresses (an IPv6 socket accepting IPv4) are IPv4 clients.
        let ip = addr.ip();
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let client = SocketAddr::new(ip, addr.port());
        let decision = self.access.check(ip, None);
        if !decision.allow {
            self.ctx.metrics.session(None);
            tracing::info!(
                target: "nullq::session",
                client = %ip,
                rule = %decision.matched.as_deref().unwrap_or("-"),
                answer = "-",
                reason = "denied by access rules; connection closed",
            );
            return Admission::Refused;
        }
        let tls = tls.cloned();
        let Some(ip_guard) = PerIp::enter(&self.per_ip, ip, self.limits.max_sessions_per_ip) else {
            self.refuse(
                stream,
                tls.is_some(),
                ip,
                format!(
                    "sorry, too many sessions from your address ({} at once), try again later (#4.3.2)",
                    self.limits.max_sessions_per_ip
                ),
            );
            return Admission::Refused;
        };
        let peer = Peer {
            ip: Some(ip),
            host: "unknown".to_owned(),
            ip_text: None,
            info: None,
            env: decision.env,
            tls: None,
        };
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                log_admitted(client);
                Admission::Now(Admitted {
                    stream,
                    peer,
                    permit,
                    ip_guard,
                    tls,
                })
            }
            Err(_) if self.open.evict_slowest() => Admission::AfterEviction(Waiting {
                stream,
                client,
                peer,
                ip_guard,
                tls,
            }),
            Err(_) => {
                drop(ip_guard);
                self.refuse(stream, tls.is_some(), ip, self.full());
                Admission::Refused
            }
        }
    }

    /// Wait for the slot a slow session is giving up (it answers `Z` and ends at once); if it
    /// does not come within [`EVICTION_WAIT`], refuse after all.
    async fn take_evicted_slot(self: &Arc<Self>, waiting: Waiting) -> Option<Admitted> {
        let slot = tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.slots).acquire_owned());
        match slot.await {
            Ok(Ok(permit)) => {
                log_admitted(waiting.client);
                Some(Admitted {
                    stream: waiting.stream,
                    peer: waiting.peer,
                    permit,
                    ip_guard: waiting.ip_guard,
                    tls: waiting.tls,
                })
            }
            _ => {
                drop(waiting.ip_guard);
                let tls = waiting.tls.is_some();
                self.refuse(waiting.stream, tls, waiting.client.ip(), self.full());
                None
            }
        }
    }

    fn full(&self) -> String {
        format!(
            "sorry, too many sessions ({} at once), try again later (#4.3.2)",
            self.limits.max_sessions
        )
    }

    /// Answer `Z` and close after reading what the client sends: it should try another server
    /// or later. A TLS client is not answered (a `Z` in clear would only garble its
    /// handshake, and a handshake would spend what the limit saves): the connection is
    /// closed, which its client takes as a temporary failure too.
    fn refuse(self: &Arc<Self>, mut stream: TcpStream, tls: bool, ip: IpAddr, text: String) {
        if tls {
            self.ctx.metrics.session(None);
            tracing::info!(target: "nullq::session", client = %ip, answer = "-", reason = %format!("{text}; TLS connection closed"));
            return;
        }
        self.ctx.metrics.session(Some(Status::TempFail));
        tracing::info!(target: "nullq::session", client = %ip, answer = "Z", reason = %text);
        let front = Arc::clone(self);
        tokio::spawn(async move {
            let wire = Response::new(Status::TempFail, text).encode();
            let written = tokio::time::timeout(front.ctx.read_timeout, async {
                stream.write_all(&wire).await?;
                stream.shutdown().await
            })
            .await;
            if matches!(written, Ok(Ok(()))) {
                front.linger(stream).await;
            }
        });
    }

    /// Read `stream` until the client closes ([`session::linger`]), if a lingering place is
    /// free; else take what has arrived already and close.
    async fn linger(&self, mut stream: TcpStream) {
        match Arc::clone(&self.lingering).try_acquire_owned() {
            Ok(_place) => session::linger(&mut stream, &self.ctx).await,
            Err(_) => {
                let mut buf = [0u8; 4096];
                for _ in 0..16 {
                    if !matches!(stream.try_read(&mut buf), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
        }
    }
}

/// With the port, so that a client can find the line of its own connection.
fn log_admitted(client: SocketAddr) {
    tracing::debug!(target: "nullq::session", client = %client, "admitted");
}

/// How many sessions `nofile` file descriptors serve, beside `reserved` for everything else.
pub fn sessions_for(nofile: u64, reserved: u64) -> usize {
    usize::try_from(nofile.saturating_sub(reserved) / FDS_PER_SESSION).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::Ipv4Addr;

    use nullq_config::server::ServerConfig;
    use tokio::io::AsyncReadExt;
    use tracing_subscriber::fmt::MakeWriter;

    const REQUEST: &[u8] = b"45:0:,17:jason@example.net,17:jason@example.net,,";
    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    type Probe = Arc<dyn Fn() -> String + Send + Sync>;

    /// Every log line, each with what `probe` said at the moment it was written.
    #[derive(Clone)]
    struct Capture {
        lines: Arc<Mutex<Vec<(String, String)>>>,
        probe: Probe,
    }

    impl Capture {
        fn new(probe: Probe) -> Capture {
            Capture {
                lines: Arc::default(),
                probe,
            }
        }

        /// The first line containing every one of `parts`, with its probe.
        fn find(&self, parts: &[&str]) -> Option<(String, String)> {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .find(|(line, _)| parts.iter().all(|p| line.contains(p)))
                .cloned()
        }

        /// Wait (up to 60 s: the machine may be loaded) for a line containing every one of `parts`.
        async fn wait_for(&self, parts: &[&str]) -> (String, String) {
            for _ in 0..6000 {
                if let Some(found) = self.find(parts) {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no line with {parts:?} in {:?}", self.lines.lock().unwrap());
        }
    }

    struct Line {
        capture: Capture,
        buffer: Vec<u8>,
    }

    impl Write for Line {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.buffer.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Line {
        fn drop(&mut self) {
            let text = String::from_utf8_lossy(&self.buffer).trim_end().to_owned();
            let probed = (self.capture.probe)();
            self.capture.lines.lock().unwrap().push((text, probed));
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Line;

        fn make_writer(&'a self) -> Line {
            Line {
                capture: self.clone(),
                buffer: Vec::new(),
            }
        }
    }

    /// Logging as `--log-level info,nullq::session=debug` sets it, into `capture`, for this
    /// thread (the tests run a current-thread runtime, so every task logs here).
    fn log_into(capture: &Capture) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,nullq::session=debug",
            ))
            .with_ansi(false)
            .without_time()
            .with_writer(capture.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The slots in use: free session permits, and sessions counted for 127.0.0.1.
    fn slots(front: &Front) -> Probe {
        let (sessions, per_ip) = (Arc::clone(&front.slots), Arc::clone(&front.per_ip));
        Arc::new(move || {
            let counted = per_ip
                .counts
                .lock()
                .unwrap()
                .get(&LOCALHOST)
                .copied()
                .unwrap_or(0);
            format!("free={} counted={counted}", sessions.available_permits())
        })
    }

    const ONE: ConnectionLimits = ConnectionLimits {
        max_sessions: 1,
        max_sessions_per_ip: 1,
    };

    /// A connection to a fresh listener: the client's side and the accepted side.
    async fn connection(listener: &TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, addr) = listener.accept().await.unwrap();
        assert_eq!(addr, client.local_addr().unwrap());
        (client, server, addr)
    }

    fn context(dir: &std::path::Path) -> Arc<Context> {
        let config = ServerConfig {
            data_dir: dir.to_path_buf(),
            ..ServerConfig::default()
        };
        let (spool, _) = nullq_spool::Spool::open(dir).unwrap();
        Arc::new(Context::new(&config, spool))
    }

    async fn answer(client: &mut TcpStream) -> String {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    fn front(dir: &std::path::Path) -> Arc<Front> {
        Arc::new(Front::new(context(dir), Arc::new(Access::allow_all()), ONE))
    }

    #[test]
    fn admitted_is_logged_at_debug_with_the_port_while_the_slot_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let front = front(dir.path());
        let capture = Capture::new(slots(&front));
        let _log = log_into(&capture);
        rt().block_on(async {
            let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
            let (_client, server, addr) = connection(&listener).await;
            let admitted = front.admit(server, addr, None);
            assert!(matches!(admitted, Admission::Now(_)));
            let client = format!("client={addr}");
            let (line, probed) = capture
                .find(&["DEBUG", "nullq::session", "admitted", &client])
                .expect("an admitted line");
            assert!(line.ends_with(&format!("admitted {client}")), "{line}");
            assert_eq!(probed, "free=0 counted=1", "logged while the slot is held");

            // Over the limit: refused, and not logged as admitted.
            let (_client2, server2, addr2) = connection(&listener).await;
            assert!(matches!(
                front.admit(server2, addr2, None),
                Admission::Refused
            ));
            assert!(capture.find(&["admitted", &format!("{addr2}")]).is_none());
        });
    }

    #[test]
    fn the_slot_is_free_when_the_session_line_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let front = front(dir.path());
        let capture = Capture::new(slots(&front));
        let _log = log_into(&capture);
        rt().block_on(async {
            let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
            let (mut client, server, addr) = connection(&listener).await;
            let Admission::Now(admitted) = front.admit(server, addr, None) else {
                panic!("not admitted");
            };
            let drain = Drain::new();
            let guard = drain.guard().unwrap();
            let session = tokio::spawn(run_one(Arc::clone(&front), admitted, guard));
            client.write_all(REQUEST).await.unwrap();
            let got = answer(&mut client).await;
            assert!(got.contains(":K"), "{got}");
            session.await.unwrap();
            let (_, probed) = capture
                .find(&["INFO", "nullq::session", "client=127.0.0.1", "answer=K"])
                .expect("the session line");
            assert_eq!(
                probed, "free=1 counted=0",
                "slot given back before the line"
            );
            assert!(drain.wait(Duration::from_secs(5)).await);
        });
    }

    #[test]
    fn after_the_session_line_the_same_client_may_connect_again() {
        let dir = tempfile::tempdir().unwrap();
        let capture = Capture::new(Arc::new(String::new));
        let _log = log_into(&capture);
        rt().block_on(async {
            let ctx = context(dir.path());
            let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
            let at = listener.local_addr().unwrap();
            let (trigger, stop) = crate::process::shutdown::channel();
            let server = tokio::spawn(serve(
                vec![listener.into()],
                ctx,
                Arc::new(Access::allow_all()),
                ONE,
                stop,
                Duration::from_secs(5),
            ));
            for _ in 0..3 {
                let mut client = TcpStream::connect(at).await.unwrap();
                let me = format!("client={}", client.local_addr().unwrap());
                capture.wait_for(&["admitted", &me]).await;
                client.write_all(REQUEST).await.unwrap();
                let got = answer(&mut client).await;
                assert!(got.contains(":K"), "{got}");
                capture.wait_for(&["client=127.0.0.1 ", "answer=K"]).await;
                // Seen the line: the next connection (max one session) must be admitted, not
                // refused with a Z (then no admitted line would come and wait_for would fail).
                assert!(capture.find(&["answer=Z"]).is_none());
                capture.lines.lock().unwrap().clear();
            }
            trigger.fire();
            assert!(server.await.unwrap());
        });
    }
}
