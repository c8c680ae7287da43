//! `nullq serve`: bind (or take systemd's sockets), drop privileges, start the runtime, open
//! the spool, start the delivery runner and the metrics endpoint, say ready, serve until told
//! to stop, then shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use nullq_config::server::ServerConfig;

use crate::delivery;
use crate::inbound::access::Access;
use crate::inbound::context::Context;
use crate::inbound::listener::{self, ConnectionLimits, Listening};
use crate::inbound::policy::Policy;
use crate::inbound::tls::ServerTls;
use crate::metrics::Metrics;
use crate::process::settings::{configure, ready, set_target, CommonArgs};
use crate::process::start::{
    drop_privileges, open_spool, runtime, spawn_poison_watch, spawn_signal_handlers, workers,
};
use crate::process::{privilege, shutdown, StartError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Address to listen on, IPv4 or [IPv6] with a port; repeat for more [default: 127.0.0.1:6628].
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Vec<String>,
    /// Most sessions at once [default: 1000].
    #[arg(long, value_name = "N")]
    pub(crate) max_sessions: Option<usize>,
    /// Most sessions at once from one address [default: 100].
    #[arg(long, value_name = "N")]
    pub(crate) max_sessions_per_ip: Option<usize>,
    /// Where messages go: maildir:DIR, cgp:DIR, smtp://HOST:PORT, smtps://HOST:PORT,
    /// pipe:'COMMAND ARGS', qmail-queue:PATH or none [default: maildir:DATA/delivered].
    #[arg(long, value_name = "TARGET")]
    pub(crate) deliver: Option<String>,
    /// Serve GET /metrics (Prometheus text format) on this address, e.g. 127.0.0.1:9628;
    /// overrides metrics.listen [default: none, no metrics endpoint].
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics_listen: Option<String>,
    /// Also accept QMQP over TLS on this address (the client's qmqps://HOST, port 7628);
    /// repeat for more; overrides tls.listen [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) tls_listen: Vec<String>,
    /// The TLS certificate chain, PEM; overrides tls.cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The TLS certificate's key, PEM; overrides tls.key.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Require TLS clients to present a certificate signed by one of these CAs (PEM);
    /// overrides tls.client_ca [default: no client certificate asked for].
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_client_ca: Option<std::path::PathBuf>,
}

pub(crate) fn serve(args: ServeArgs) -> Result<i32, StartError> {
    let mut config = configure(&args.common)?;
    set_target(&mut config, args.deliver.as_deref())?;
    if !args.listen.is_empty() {
        config.listen = args
            .listen
            .iter()
            .map(|text| nullq_config::server::parse_listen(text))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = args.max_sessions {
        config.limits.max_sessions = v;
    }
    if let Some(v) = args.max_sessions_per_ip {
        config.limits.max_sessions_per_ip = v;
    }
    if let Some(text) = &args.metrics_listen {
        config.metrics.listen = Some(nullq_config::server::parse_metrics_listen(text)?);
    }
    set_tls(&mut config, &args)?;
    let Some(mut config) = ready(config, args.common.print_config)? else {
        return Ok(0);
    };
    fit_sessions_to_descriptors(&mut config);
    // 1. Bind while we may still be root (port 628), and before any thread exists; or take
    //    the sockets systemd passed (socket activation: then no privilege is needed at all).
    let mut bound = crate::process::systemd::inherited_listeners()?;
    if bound.is_empty() {
        for &addr in &config.listen {
            let listener = privilege::bind(addr).map_err(|source| StartError::Listen {
                addr: Some(addr),
                source,
            })?;
            bound.push(listener);
        }
    } else {
        tracing::info!(
            target: "nullq::server",
            "socket activation: {} listening socket(s) passed by systemd; `listen` is not used",
            bound.len()
        );
    }
    let mut tls_bound = Vec::new();
    for &addr in &config.tls.listen {
        let listener = privilege::bind(addr).map_err(|source| StartError::Listen {
            addr: Some(addr),
            source,
        })?;
        tls_bound.push(listener);
    }
    let metrics_bound = match config.metrics.listen {
        Some(addr) => {
            let listener = privilege::bind(addr).map_err(|source| StartError::MetricsListen {
                addr: Some(addr),
                source,
            })?;
            Some(listener)
        }
        None => None,
    };
    // 2. Drop privileges: still one thread, no spool opened, no client byte read.
    drop_privileges(&config)?;
    // 3. Only now the runtime and its threads.
    let (threads, line) = workers(&config);
    let runtime = runtime(Some(threads))?;
    tracing::info!(target: "nullq::server", "{line}");
    runtime.block_on(run_server(config, (bound, tls_bound), metrics_bound))
}

/// `--tls-listen`, `--tls-cert`, `--tls-key`, `--tls-client-ca`, each replacing its key.
fn set_tls(config: &mut ServerConfig, args: &ServeArgs) -> Result<(), StartError> {
    if !args.tls_listen.is_empty() {
        config.tls.listen = args
            .tls_listen
            .iter()
            .map(|text| nullq_config::server::parse_tls_listen(text))
            .collect::<Result<_, _>>()?;
    }
    for (flag, key) in [
        (&args.tls_cert, &mut config.tls.cert),
        (&args.tls_key, &mut config.tls.key),
        (&args.tls_client_ca, &mut config.tls.client_ca),
    ] {
        if flag.is_some() {
            key.clone_from(flag);
        }
    }
    Ok(())
}

/// File descriptors kept for everything but sessions and deliveries: listeners, logs, the
/// spool's directories and lock, the trigger socket, the committer's.
const RESERVED_FIXED: u64 = 64;

/// Descriptors one delivery at once may hold: the locked queue file (through which it is also
/// read), the file being written and the duplicate that keeps its lock; or a connection; or a
/// child's pipes.
const FDS_PER_DELIVERY: u64 = 4;

/// File descriptors kept for everything but sessions.
fn reserved_descriptors(config: &ServerConfig) -> u64 {
    RESERVED_FIXED + FDS_PER_DELIVERY * config.delivery.concurrency as u64
}

/// Lower `delivery.concurrency`, saying so, if its descriptors would take more than a quarter
/// of what `nofile` leaves beside the fixed ones: a low open file limit must still leave room
/// for sessions.
fn fit_deliveries_to_descriptors(config: &mut ServerConfig, nofile: u64) {
    let most = nofile.saturating_sub(RESERVED_FIXED) / 4 / FDS_PER_DELIVERY;
    let most = usize::try_from(most).unwrap_or(usize::MAX).max(1);
    if config.delivery.concurrency > most {
        tracing::warn!(
            target: "nullq::server",
            "delivery.concurrency lowered from {} to {most}: the open file limit \
             (RLIMIT_NOFILE) is {nofile}, and each delivery may need {FDS_PER_DELIVERY} \
             descriptors; raise it (LimitNOFILE= in systemd, ulimit -n) to deliver more at once",
            config.delivery.concurrency,
        );
        config.delivery.concurrency = most;
    }
}

/// Raise the soft limit on open files to the hard one (the usual soft limit, 1024, is far too
/// few for a thousand sessions), then lower `limits.max_sessions` if even that cannot serve it,
/// saying so: running out of descriptors would fail accepts and spool files at random instead.
fn fit_sessions_to_descriptors(config: &mut ServerConfig) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(
                target: "nullq::server",
                "cannot raise the open file limit (RLIMIT_NOFILE) from {:?} to {:?}: {e}",
                limit.current,
                limit.maximum
            ),
        }
    }
    let Some(nofile) = limit.current else { return };
    fit_deliveries_to_descriptors(config, nofile);
    let reserved = reserved_descriptors(config);
    let most = listener::sessions_for(nofile, reserved).max(1);
    if config.limits.max_sessions > most {
        tracing::warn!(
            target: "nullq::server",
            "limits.max_sessions lowered from {} to {most}: the open file limit \
             (RLIMIT_NOFILE) is {nofile}, and each session may need {} descriptors beside {reserved} \
             for the rest; raise it (LimitNOFILE= in systemd, ulimit -n) to serve more",
            config.limits.max_sessions,
            listener::FDS_PER_SESSION,
        );
        config.limits.max_sessions = most;
        config.limits.max_sessions_per_ip = config.limits.max_sessions_per_ip.min(most);
    }
}

async fn run_server(
    config: ServerConfig,
    (bound, tls_bound): (Vec<std::net::TcpListener>, Vec<std::net::TcpListener>),
    metrics_bound: Option<std::net::TcpListener>,
) -> Result<i32, StartError> {
    let to_tokio = |bound: Vec<std::net::TcpListener>| {
        bound
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| StartError::Listen { addr: None, source })
    };
    let listeners = to_tokio(bound)?;
    let tls_listeners = to_tokio(tls_bound)?;
    // Read as the user we run as now, as every SIGHUP will.
    let tls = ServerTls::load(&config.tls)?.map(Arc::new);
    let metrics_listener = metrics_bound
        .map(tokio::net::TcpListener::from_std)
        .transpose()
        .map_err(|source| StartError::MetricsListen { addr: None, source })?;
    // 4. Open the spool: this is where crash leftovers are cleaned.
    let spool = open_spool(&config)?;
    let access = Arc::new(Access::load(config.access.rules.clone())?);
    // 5. The delivery runner, told of every commit through the context.
    let policy = Arc::new(Policy::from_config(&config.policy)?);
    let metrics = Arc::new(Metrics::new());
    let runner = delivery::Runner::new(
        &config,
        spool.clone(),
        Arc::clone(policy.rewriting()),
        Arc::clone(&metrics),
        false,
    )?;
    let runner = (!runner.holds_everything()).then_some(runner);
    let mut context = Context::new(&config, spool);
    context.policy = policy;
    context.metrics = Arc::clone(&metrics);
    context.committed = runner.as_ref().map(delivery::Runner::notifier);
    let ctx = Arc::new(context);
    // Signals are handled before the ready line: whoever waits for it may send SIGTERM at once.
    // A failed commit (the spool's directory fsync) stops the server the same way.
    let (trigger, stop) = shutdown::channel();
    spawn_signal_handlers(
        trigger,
        Arc::clone(&access),
        tls.clone(),
        Arc::clone(&ctx.poisoned),
    )?;
    let watchdog = runner
        .is_none()
        .then(crate::process::systemd::Watchdog::from_env);
    let reporter = Arc::clone(&ctx);
    spawn_poison_watch(ctx.spool.clone(), watchdog, move |refusal| match refusal {
        Some(e) => reporter.commit_failed(&e),
        // Not expected; still stop rather than take mail on a poisoned spool.
        None => reporter.poisoned.notify_one(),
    });
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let tls_addrs: Vec<String> = tls_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    // Serving before the ready line, which names its address (port 0 gets one of its own).
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::metrics::serve(
            l,
            metrics,
            ctx.spool.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        target: "nullq::server",
        listen = %bound.join(","),
        metrics = %crate::metrics::describe(metrics_addr),
        data = %config.data_dir.display(),
        access = %access.describe(),
        databytes = config.limits.databytes,
        tls = %if tls_addrs.is_empty() { "-".to_owned() } else { tls_addrs.join(",") },
        "nullq serve ready"
    );
    if let Some(tls) = &tls {
        tracing::info!(target: "nullq::server", "TLS on {}: {}", tls_addrs.join(","), tls.describe());
    }
    crate::process::systemd::ready(&format!("accepting QMQP on {}", bound.join(",")));

    let limits = ConnectionLimits {
        max_sessions: config.limits.max_sessions,
        max_sessions_per_ip: config.limits.max_sessions_per_ip,
    };
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    let delivering = runner.map(|r| tokio::spawn(r.run(stop.clone(), grace)));
    let committer = ctx.committer.clone();
    let mut listening: Vec<Listening> = listeners.into_iter().map(Listening::from).collect();
    listening.extend(tls_listeners.into_iter().map(|socket| Listening {
        socket,
        tls: tls.clone(),
    }));
    let all_done = listener::serve(listening, ctx, access, limits, stop, grace).await;
    if let Some(task) = delivering {
        let _ = task.await;
    }
    if !all_done {
        tracing::warn!(target: "nullq::server", "shut down with sessions still open after {}s; they got no answer", grace.as_secs());
    }
    if committer.is_poisoned() {
        // Exit non-zero so that the supervisor sees a failure (and restarts us: Restart=on-failure).
        // The failure itself was the one ERROR line; this says what followed.
        tracing::warn!(target: "nullq::server", "stopped after a failed commit; exit code {POISONED_EXIT}");
        return Ok(POISONED_EXIT);
    }
    if all_done {
        tracing::info!(target: "nullq::server", "shut down cleanly");
    }
    Ok(0)
}

/// `nullq serve`'s exit code after a failed commit (qmail's "temporary failure").
pub const POISONED_EXIT: i32 = 111;
