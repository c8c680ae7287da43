//! `nullq serve`'s front end: accept connections on every listening socket, admit or refuse each
//! (access rules, global and per-address session limits), and run a session for each admitted one.
//!
//! A refused client is told nothing about our rules: a denied address is logged and the socket
//! closed before a byte is read (as tcpserver does); a client over a session limit gets a `Z` so
//! its null client tries the next server or later.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullq_proto::qmqp::{Response, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::Access;
use crate::context::Context;
use crate::session::{self, Peer};
use crate::shutdown::{Drain, SessionGuard, Shutdown};

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

/// Accept on every listener until `shutdown`, then wait up to `grace` for open sessions.
/// Returns whether every session finished within `grace`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    ctx: Arc<Context>,
    access: Arc<Access>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
    grace: Duration,
) -> bool {
    let sessions = Arc::new(Semaphore::new(limits.max_sessions));
    let per_ip = Arc::new(PerIp::default());
    let drain = Drain::new();
    let mut accepting = Vec::new();
    for listener in listeners {
        let ctx = Arc::clone(&ctx);
        let access = Arc::clone(&access);
        let sessions = Arc::clone(&sessions);
        let per_ip = Arc::clone(&per_ip);
        let Some(guard) = drain.guard() else { break };
        let mut shutdown = shutdown.clone();
        accepting.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.recv() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, addr)) => {
                            let admitted = admit(stream, addr, &access, &sessions, &per_ip, limits);
                            if let Some((stream, peer, permit, ip_guard)) = admitted {
                                let ctx = Arc::clone(&ctx);
                                let guard = guard.clone();
                                tokio::spawn(run_one(stream, peer, ctx, permit, ip_guard, guard));
                            }
                        }
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
    drain.wait(grace).await
}

async fn run_one(
    stream: TcpStream,
    peer: Peer,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
    ip_guard: PerIpGuard,
    guard: SessionGuard,
) {
    let outcome = session::run(stream, &peer, ctx).await;
    // The order matters: the connection slot (the session permit and the per-address count) is
    // given back before the session's log line is written, so whoever has seen that line (a
    // monitor, a test) knows the slot is free and may connect again without being refused as
    // over a limit. The shutdown guard goes last: a draining server waits for the line.
    drop((permit, ip_guard));
    outcome.log(&peer);
    drop(guard);
}

type Admitted = (TcpStream, Peer, OwnedSemaphorePermit, PerIpGuard);

/// Decide on a new connection from `addr`; refused ones are logged and answered here, admitted
/// ones logged (debug) while their slot is held, before the session reads a byte.
fn admit(
    stream: TcpStream,
    addr: SocketAddr,
    access: &Access,
    sessions: &Arc<Semaphore>,
    per_ip: &Arc<PerIp>,
    limits: ConnectionLimits,
) -> Option<Admitted> {
    // IPv4-mapped IPv6 addresses (an IPv6 socket accepting IPv4) are IPv4 clients.
    let ip = addr.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let decision = access.check(ip, None);
    if !decision.allow {
        tracing::info!(
            target: "nullq::session",
            client = %ip,
            rule = %decision.matched.as_deref().unwrap_or("-"),
            answer = "-",
            reason = "denied by access rules; connection closed",
        );
        return None;
    }
    let Ok(permit) = Arc::clone(sessions).try_acquire_owned() else {
        refuse(
            stream,
            ip,
            format!(
                "sorry, too many sessions ({} at once), try again later (#4.3.2)",
                limits.max_sessions
            ),
        );
        return None;
    };
    let Some(ip_guard) = PerIp::enter(per_ip, ip, limits.max_sessions_per_ip) else {
        refuse(
            stream,
            ip,
            format!(
                "sorry, too many sessions from your address ({} at once), try again later (#4.3.2)",
                limits.max_sessions_per_ip
            ),
        );
        return None;
    };
    // With the port, so that a client can find the line of its own connection.
    tracing::debug!(
        target: "nullq::session",
        client = %SocketAddr::new(ip, addr.port()),
        "admitted"
    );
    let peer = Peer {
        ip: Some(ip),
        host: "unknown".to_owned(),
        ip_text: None,
        info: None,
        env: decision.env,
    };
    Some((stream, peer, permit, ip_guard))
}

/// Answer `Z` and close, without reading: the client should try another server or later.
fn refuse(mut stream: TcpStream, ip: IpAddr, text: String) {
    tracing::info!(target: "nullq::session", client = %ip, answer = "Z", reason = %text);
    tokio::spawn(async move {
        let wire = Response::new(Status::TempFail, text).encode();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            stream.write_all(&wire).await?;
            stream.shutdown().await
        })
        .await;
    });
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
    fn slots(sessions: &Arc<Semaphore>, per_ip: &Arc<PerIp>) -> Probe {
        let (sessions, per_ip) = (Arc::clone(sessions), Arc::clone(per_ip));
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

    #[test]
    fn admitted_is_logged_at_debug_with_the_port_while_the_slot_is_held() {
        let sessions = Arc::new(Semaphore::new(1));
        let per_ip = Arc::new(PerIp::default());
        let capture = Capture::new(slots(&sessions, &per_ip));
        let _log = log_into(&capture);
        rt().block_on(async {
            let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
            let (_client, server, addr) = connection(&listener).await;
            let access = Access::allow_all();
            let admitted = admit(server, addr, &access, &sessions, &per_ip, ONE);
            assert!(admitted.is_some());
            let client = format!("client={addr}");
            let (line, probed) = capture
                .find(&["DEBUG", "nullq::session", "admitted", &client])
                .expect("an admitted line");
            assert!(line.ends_with(&format!("admitted {client}")), "{line}");
            assert_eq!(probed, "free=0 counted=1", "logged while the slot is held");

            // Over the limit: refused, and not logged as admitted.
            let (_client2, server2, addr2) = connection(&listener).await;
            assert!(admit(server2, addr2, &access, &sessions, &per_ip, ONE).is_none());
            assert!(capture.find(&["admitted", &format!("{addr2}")]).is_none());
        });
    }

    #[test]
    fn the_slot_is_free_when_the_session_line_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Arc::new(Semaphore::new(1));
        let per_ip = Arc::new(PerIp::default());
        let capture = Capture::new(slots(&sessions, &per_ip));
        let _log = log_into(&capture);
        rt().block_on(async {
            let ctx = context(dir.path());
            let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
            let (mut client, server, addr) = connection(&listener).await;
            let access = Access::allow_all();
            let (stream, peer, permit, ip_guard) =
                admit(server, addr, &access, &sessions, &per_ip, ONE).unwrap();
            let drain = Drain::new();
            let guard = drain.guard().unwrap();
            let session = tokio::spawn(run_one(stream, peer, ctx, permit, ip_guard, guard));
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
            let (trigger, stop) = crate::shutdown::channel();
            let server = tokio::spawn(serve(
                vec![listener],
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
