//! `nullq qmqpd`: one QMQP session on stdin/stdout, under tcpserver or inetd, as qmail-qmqpd:
//! the client described by tcpserver's environment, the spool attached without its lock (a
//! `nullq deliver` holds it).

use std::sync::Arc;

use nullq_config::server::ServerConfig;
use nullq_spool::Spool;

use crate::inbound::access::Access;
use crate::inbound::context::Context;
use crate::inbound::peer::Peer;
use crate::inbound::policy::Policy;
use crate::inbound::session;
use crate::process::settings::{configure, ready, CommonArgs};
use crate::process::start::{drop_privileges, runtime};
use crate::process::StartError;

/// `nullq qmqpd`: one session on stdin/stdout, the client described by tcpserver's environment.
pub fn qmqpd(args: CommonArgs) -> Result<i32, StartError> {
    let Some(mut config) = ready(configure(&args)?, args.print_config)? else {
        return Ok(0);
    };
    let peer = peer_from_env();
    // tcpserver has applied its own rules (-x); rules in our config are checked as well.
    if config.access.rules.is_some() {
        let access = Access::load(config.access.rules.clone())?;
        if let Some(ip) = peer.ip {
            let decision = access.check(ip, Some(&peer.host));
            if !decision.allow {
                tracing::info!(target: "nullq::session", client = %ip, answer = "-", reason = "denied by access rules; connection closed");
                return Ok(0);
            }
        }
    }
    if config.hostname.is_none() {
        // qmail-qmqpd: TCPLOCALHOST, else TCPLOCALIP, else `unknown`.
        config.hostname = Some(
            tcp_env("TCPLOCALHOST")
                .or_else(|| tcp_env("TCPLOCALIP"))
                .unwrap_or_else(|| "unknown".to_owned()),
        );
    }
    // tcpserver -u/-g usually dropped root already; a configured user is applied as well.
    drop_privileges(&config)?;
    let runtime = runtime(None)?;
    runtime.block_on(async {
        let spool = attach_spool(&config)?;
        let mut context = Context::new(&config, spool);
        context.policy = Arc::new(Policy::from_config(&config.policy)?);
        let ctx = Arc::new(context);
        let mut io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        let progress = session::Progress::new(ctx.min_data_rate);
        let outcome = session::run(&mut io, &peer, ctx, &progress).await;
        outcome.log(&peer);
        Ok(0)
    })
}

/// The client as tcpserver describes it: TCPREMOTEIP, TCPREMOTEHOST (else `unknown`),
/// TCPREMOTEINFO, and the variables its rule set, which are ordinary environment variables by
/// now.
fn peer_from_env() -> Peer {
    let ip_text = tcp_env("TCPREMOTEIP");
    let ip = ip_text.as_deref().and_then(|s| s.parse().ok());
    let host = tcp_env("TCPREMOTEHOST").unwrap_or_else(|| "unknown".to_owned());
    let info = tcp_env("TCPREMOTEINFO");
    // The variables the policy reads (tcprules set them for this client).
    let env = crate::inbound::policy::ENV_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    Peer {
        ip,
        host,
        ip_text,
        info,
        env,
        tls: None,
    }
}

/// A variable tcpserver set, byte by byte: ASCII as it is, every other byte as `?`. qmail-qmqpd
/// takes these values as bytes and writes each unsafe byte as `?`, so a name that is not UTF-8
/// is not lost (as `unknown`) but shows the same `?` qmail's Received line would.
fn tcp_env(name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let value = std::env::var_os(name)?;
    Some(
        value
            .as_bytes()
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect(),
    )
}

/// The spool for one `qmqpd` session. Many of these run at once beside a `nullq deliver`, so it
/// is attached without the lock and without recovery (which would delete the other sessions'
/// files in `tmp/`); only a spool that does not exist yet is created, with `open`.
fn attach_spool(config: &ServerConfig) -> Result<Spool, StartError> {
    let describe = |source| StartError::Spool {
        dir: config.data_dir.clone(),
        source,
    };
    match Spool::attach(&config.data_dir) {
        Ok(spool) => Ok(spool),
        Err(e) if e.is_not_found() => {
            // First use: create it. A concurrent first session may hold the lock; then it has
            // created the directories, and attaching works.
            if let Err(e) = Spool::open(&config.data_dir) {
                tracing::debug!(target: "nullq::spool", "creating the spool: {e}");
            }
            Spool::attach(&config.data_dir).map_err(describe)
        }
        Err(e) => Err(describe(e)),
    }
}
