//! `nullq deliver`: the delivery runner alone, for sites that receive with `nullq qmqpd`.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::delivery;
use crate::inbound::access::Access;
use crate::metrics::Metrics;
use crate::process::serve::POISONED_EXIT;
use crate::process::settings::{configure, ready, set_target, CommonArgs};
use crate::process::start::{
    drop_privileges, open_spool, runtime, spawn_poison_watch, spawn_signal_handlers, workers,
};
use crate::process::{privilege, shutdown, StartError};
use crate::rewriting::Rewriting;

/// `nullq deliver`'s flags.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Where messages go: maildir:DIR, cgp:DIR, smtp://HOST:PORT, smtps://HOST:PORT,
    /// pipe:'COMMAND ARGS', qmail-queue:PATH or none [default: maildir:DATA/delivered].
    #[arg(long, value_name = "TARGET")]
    pub(crate) deliver: Option<String>,
}

/// `nullq deliver`: the delivery runner alone, on a spool that `nullq qmqpd` sessions fill.
/// It opens the spool (lock, recovery) and looks for new messages every `poll_interval_ms`.
pub fn deliver(args: DeliverArgs) -> Result<i32, StartError> {
    let mut config = configure(&args.common)?;
    set_target(&mut config, args.deliver.as_deref())?;
    let Some(config) = ready(config, args.common.print_config)? else {
        return Ok(0);
    };
    // The configured user; without one, as root, the spool's owner (so that the pipe: and
    // qmail-queue: targets never run as root by accident, and what it writes the server can
    // read). Before the runtime, while there is one thread.
    if config.user.is_some() {
        drop_privileges(&config)?;
    } else if let Some(owner) = privilege::spool_owner(&config.data_dir)? {
        privilege::drop_to(&owner)?;
    }
    let (threads, line) = workers(&config);
    let runtime = runtime(Some(threads))?;
    tracing::info!(target: "nullq::server", "{line}");
    runtime.block_on(async {
        let spool = open_spool(&config)?;
        let rewriting = Arc::new(Rewriting::from_config(&config.policy)?);
        // Counted for nothing: only `nullq serve` has a metrics endpoint.
        let metrics = Arc::new(Metrics::new());
        let runner = delivery::Runner::new(&config, spool.clone(), rewriting, metrics, true)?;
        let (trigger, stop) = shutdown::channel();
        // The runner commits the bounces and delay warnings it queues and syncs its removals
        // with the committer: a failed flush stops this program as it stops `nullq serve`,
        // with its exit code.
        let poisoned = Arc::new(tokio::sync::Notify::new());
        spawn_signal_handlers(
            trigger,
            Arc::new(Access::allow_all()),
            None,
            Arc::clone(&poisoned),
        )?;
        let committer = spool.committer();
        spawn_poison_watch(spool.clone(), None, move |refusal| {
            let why = refusal.map_or_else(|| "the committer is poisoned".to_owned(), |e| e.to_string());
            tracing::error!(target: "nullq::spool", "spool commit failed: {why}; every later commit is refused and nullq deliver stops: check the disk, then restart (the restart re-checks the queue)");
            poisoned.notify_one();
        });
        runner
            .run(stop, Duration::from_secs(config.shutdown_timeout_secs))
            .await;
        if committer.is_poisoned() {
            tracing::warn!(target: "nullq::server", "stopped after a failed commit; exit code {POISONED_EXIT}");
            return Ok(POISONED_EXIT);
        }
        Ok(0)
    })
}
