//! `nullq serve`'s front end: accept connections on every listening socket, admit or refuse each
//! (access rules, global and per-address session limits), and run a session for each admitted one.
//!
//! A refused client is told nothing about our rules: a denied address is logged and the socket
//! closed before a byte is read (as tcpserver does); a client over a session limit gets a `Z` so
//! its null client tries the next server or later.

use std::collections::HashMap;
use std::net::IpAddr;
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
                            let admitted = admit(stream, addr.ip(), &access, &sessions, &per_ip, limits);
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
    outcome.log(&peer);
    drop((permit, ip_guard, guard));
}

type Admitted = (TcpStream, Peer, OwnedSemaphorePermit, PerIpGuard);

/// Decide on a new connection; refused ones are logged and answered here.
fn admit(
    stream: TcpStream,
    ip: IpAddr,
    access: &Access,
    sessions: &Arc<Semaphore>,
    per_ip: &Arc<PerIp>,
    limits: ConnectionLimits,
) -> Option<Admitted> {
    // IPv4-mapped IPv6 addresses (an IPv6 socket accepting IPv4) are IPv4 clients.
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
    let peer = Peer {
        ip: Some(ip),
        host: "unknown".to_owned(),
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
