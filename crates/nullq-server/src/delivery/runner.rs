//! The delivery runner of one spool: the schedule (which message is due when), bounded
//! concurrency, the start-up scan and rescans, wake-ups (a commit announced on a channel, the
//! spool's trigger socket, SIGUSR1), the housekeeping tick (statistics, CommuniGate Pro `.bad`
//! files) and graceful shutdown. Each due message gets one [`Deliverer::attempt`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nullq_config::server::ServerConfig;
use nullq_spool::{QueueId, Spool};
use tokio::sync::mpsc;

use crate::delivery::attempt::{Deliverer, Next};
use crate::delivery::cgp;
use crate::delivery::clock::Clock;
use crate::delivery::decide::Rules;
use crate::delivery::routes::{Routes, RoutesError};
use crate::delivery::schedule::{next_due, Schedule, SCHEDULE_MAX};
use crate::delivery::stats::Stats;
use crate::metrics::Metrics;
use crate::process::shutdown::Shutdown;
use crate::process::systemd::Watchdog;
use crate::rewriting::Rewriting;

/// The pid file earlier versions kept in the spool root (and signalled); removed at start.
const OLD_PID_FILE: &str = "deliver.pid";

/// The delivery runner of one spool. Build it with [`Runner::new`], hand
/// [`Runner::notifier`] to the sessions, then [`Runner::run`] it.
pub struct Runner {
    shared: Arc<Deliverer>,
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
    watchdog: Watchdog,
}

impl Runner {
    /// A runner for `spool` as `config` says, counting in `metrics`. `poll`: look for new messages in the queue
    /// directory every `delivery.poll_interval_ms` (for `nullq deliver`, whose messages come
    /// from other processes); `nullq serve` is told of each commit instead.
    pub fn new(
        config: &ServerConfig,
        spool: Spool,
        rewriting: Arc<Rewriting>,
        metrics: Arc<Metrics>,
        poll: bool,
    ) -> Result<Runner, RoutesError> {
        let d = &config.delivery;
        let routes = Routes::new(config, &spool)?;
        let (notify, inbox) = mpsc::unbounded_channel();
        let stats = Stats::new(spool.root(), metrics);
        let storage = Deliverer::storage(&spool);
        Ok(Runner {
            shared: Arc::new(Deliverer {
                loads: storage.loads,
                removals: storage.removals,
                saves: storage.saves,
                unrecorded: Default::default(),
                spool,
                routes,
                rewriting,
                clock: Clock::new(d.time_scale),
                rules: Rules {
                    lifetime: Duration::from_secs(d.queue_lifetime_secs),
                    retry_min: Duration::from_secs(d.retry_min_secs),
                    retry_max: Duration::from_secs(d.retry_max_secs),
                    warn_after: (d.delay_warning_secs > 0)
                        .then(|| Duration::from_secs(d.delay_warning_secs)),
                    postmaster: d.postmaster.as_ref().map(|p| p.as_bytes().to_vec()),
                },
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
            watchdog: Watchdog::from_env(),
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
        let cleaner = Arc::clone(&shared);
        let spool_root = root.clone();
        let cleaned =
            tokio::task::spawn_blocking(move || cleaner.routes.clean_leftovers(&spool_root)).await;
        if let Err(e) = cleaned {
            tracing::warn!(target: "nullq::delivery", "cleaning leftovers failed: {e}");
        }
        // Announcements left out while the schedule was full: the disk has them; rescan once
        // there is room again.
        let mut overflowed = false;
        let found = scan(&shared, &mut schedule, &in_flight, &mut overflowed).await;
        tracing::info!(
            target: "nullq::delivery",
            queued = found,
            concurrency = self.concurrency,
            targets = %shared.routes.labels().collect::<Vec<_>>().join(","),
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
                    let next = shared.attempt(id).await;
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
                    if overflowed && schedule.has_room() {
                        let n = scan(&shared, &mut schedule, &in_flight, &mut overflowed).await;
                        tracing::info!(target: "nullq::delivery", queued = n, "the schedule has room again: queue rescanned");
                    }
                }
                Some(id) = self.inbox.recv() => {
                    if in_flight.contains(&id) {
                        again.insert(id);
                    } else if schedule.full_for(&id) {
                        if !overflowed {
                            tracing::warn!(target: "nullq::delivery", "delivery is {SCHEDULE_MAX} messages behind: the rest wait in queue/ until the schedule has room");
                        }
                        overflowed = true;
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
                            if in_flight.contains(&id) || schedule.contains(&id) {
                                continue;
                            }
                            if schedule.full_for(&id) {
                                overflowed = true;
                                break;
                            }
                            schedule.put(id, now);
                        }
                    }
                }
                Some(()) = async { match trigger.as_mut() { Some(t) => woken(t).await, None => std::future::pending().await } } => {
                    let n = scan(&shared, &mut schedule, &in_flight, &mut overflowed).await;
                    tracing::info!(target: "nullq::delivery", queued = n, "trigger: queue rescanned");
                }
                Some(()) = async { match usr1.as_mut() { Some(u) => u.recv().await, None => std::future::pending().await } } => {
                    let n = scan(&shared, &mut schedule, &in_flight, &mut overflowed).await;
                    tracing::info!(target: "nullq::delivery", queued = n, "SIGUSR1: queue rescanned");
                }
                _ = rescan.tick() => {
                    let n = scan(&shared, &mut schedule, &in_flight, &mut overflowed).await;
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
                                postmaster: shared.rules.postmaster.as_deref(),
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

/// Load every queued message's state and schedule it by its next attempt, up to
/// [`SCHEDULE_MAX`] scheduled (oldest first; `overflowed` says whether some were left on disk,
/// for a later scan). Returns how many messages are queued.
async fn scan(
    shared: &Arc<Deliverer>,
    schedule: &mut Schedule,
    in_flight: &HashSet<QueueId>,
    overflowed: &mut bool,
) -> usize {
    let spool = shared.spool.clone();
    let committer = spool.committer();
    let skip: HashSet<QueueId> = in_flight.clone();
    let deliverer = Arc::clone(shared);
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
            // Results not written yet (the spool's disk is failing): their back-off stands,
            // not the state on disk, which is older.
            if let Some(t) = deliverer.unrecorded_due(&id) {
                due.push((id, Some(t)));
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
    *overflowed = false;
    for (id, t) in found {
        if schedule.full_for(&id) {
            *overflowed = true;
            continue;
        }
        schedule.set(id, t.unwrap_or(now));
    }
    n
}
