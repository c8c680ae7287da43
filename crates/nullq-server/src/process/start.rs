//! The start-up steps the server programs share, in the order they must come: drop root while
//! the process has one thread, then build the runtime, then open the spool; and the signal
//! handlers (SIGTERM and SIGINT stop, SIGHUP reloads the access rules and TLS certificates).

use std::sync::Arc;

use nullq_config::server::{ServerConfig, SpoolFlush};
use nullq_spool::{Flush, Spool};

use crate::inbound::access::Access;
use crate::inbound::tls::ServerTls;
use crate::process::privilege::{self, PrivilegeError};
use crate::process::{shutdown, StartError};

/// The tokio runtime: `workers` threads for the server and the runner
/// ([`ServerConfig::worker_threads`]), or, with `None`, the calling thread alone for a
/// `qmqpd` session (one connection per process: more threads would only cost start-up time).
pub(crate) fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, StartError> {
    let mut builder = match workers {
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build().map_err(StartError::Runtime)
}

/// The worker threads `config` asks for on this machine, and a line that says so for the
/// log (`runtime: 1 worker thread (runtime_threads=0: half of 2 cores)`).
pub(crate) fn workers(config: &ServerConfig) -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let n = config.worker_threads(cores);
    let plural = if n == 1 { "" } else { "s" };
    let why = match config.runtime_threads {
        0 => {
            let unit = if cores == 1 { "core" } else { "cores" };
            format!("runtime_threads=0: half of {cores} {unit}")
        }
        k => format!("runtime_threads={k}"),
    };
    (n, format!("runtime: {n} worker thread{plural} ({why})"))
}

/// Become the configured user (`user`, `group`, `groups`), if one is: see [`privilege`].
/// Called before the runtime is built, while the process has one thread.
pub(crate) fn drop_privileges(config: &ServerConfig) -> Result<(), PrivilegeError> {
    let id = privilege::configured(
        config.user.as_deref(),
        config.group.as_deref(),
        &config.groups,
    )?;
    match id {
        Some(id) => privilege::drop_to(&id),
        None => Ok(()),
    }
}

pub(crate) fn open_spool(config: &ServerConfig) -> Result<Spool, StartError> {
    let flush = match config.spool_flush {
        SpoolFlush::Auto => Flush::Auto,
        SpoolFlush::Files => Flush::Files,
        SpoolFlush::Filesystem => Flush::Filesystem,
    };
    let (spool, report) =
        Spool::open_with(&config.data_dir, flush).map_err(|source| StartError::Spool {
            dir: config.data_dir.clone(),
            source,
        })?;
    tracing::info!(target: "nullq::spool", "recovery: {report}");
    tracing::info!(target: "nullq::spool", "commits: flush={} (spool_flush={})", spool.flush(), match config.spool_flush {
        SpoolFlush::Auto => "auto",
        SpoolFlush::Files => "files",
        SpoolFlush::Filesystem => "filesystem",
    });
    if let Some(n) = nullq_spool::fault::armed() {
        tracing::warn!(target: "nullq::spool", "fault injection: {}={n}: directory fsync {n} of the queue will fail with EIO (a debug build, for tests)", nullq_spool::fault::DIR_FSYNC);
    }
    for file in &report.corrupt {
        tracing::warn!(target: "nullq::spool", "recovery: {file}");
    }
    for file in &report.unreadable {
        tracing::error!(target: "nullq::spool", "recovery: {file}");
    }
    Ok(spool)
}

/// SIGTERM and SIGINT start shutdown, and so does `poisoned` (a failed commit, already logged);
/// SIGHUP reloads the access rules and the TLS certificates (each on its own: one that fails
/// keeps its old settings, says so at ERROR, and does not stop the other).
pub(crate) fn spawn_signal_handlers(
    trigger: shutdown::Trigger,
    access: Arc<Access>,
    tls: Option<Arc<ServerTls>>,
    poisoned: Arc<tokio::sync::Notify>,
) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(target: "nullq::server", "SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!(target: "nullq::server", "SIGINT: shutting down"),
            _ = poisoned.notified() => tracing::info!(target: "nullq::server", "a commit failed: shutting down"),
        }
        trigger.fire();
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match access.reload() {
                Ok(()) => {
                    tracing::info!(target: "nullq::server", "SIGHUP: access rules reloaded from {}", access.describe())
                }
                Err(e) => {
                    tracing::error!(target: "nullq::server", "SIGHUP: access rules NOT reloaded, keeping the old ones: {e}")
                }
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(target: "nullq::server", "SIGHUP: TLS certificates reloaded: {}", tls.describe())
                    }
                    Err(e) => {
                        tracing::error!(target: "nullq::server", "SIGHUP: TLS certificates NOT reloaded, keeping the old ones: {e}")
                    }
                }
            }
        }
    });
    Ok(())
}

/// A commit that failed outside a session (the runner queueing a bounce or a delay warning)
/// poisons the committer too, with no session to report it: look once a second, and once it
/// is poisoned hand `poisoned` the refusal a receive now gets (it carries the first failure;
/// `None` if, unexpectedly, a receive is not refused), for the program to report and stop.
/// Meanwhile this loop pets `watchdog`, if given (a server with no delivery runner).
pub(crate) fn spawn_poison_watch(
    spool: Spool,
    mut watchdog: Option<crate::process::systemd::Watchdog>,
    poisoned: impl FnOnce(Option<nullq_spool::SpoolError>) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            if let Some(w) = watchdog.as_mut() {
                w.pet();
            }
            if spool.committer().is_poisoned() {
                poisoned(spool.receive().err());
                return;
            }
        }
    });
}
