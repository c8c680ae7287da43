//! One attempt at one message, in the order that makes a crash repeat work rather than skip
//! it: lock and load (`load`), deliver the due recipients, [`decide`], queue the bounce and
//! the warning the decision asks for, and only then save the new state (or remove the message
//! when nothing is pending). [`Deliverer`] holds what every attempt needs.
//!
//! A new state or a removal that cannot be written (the spool's disk full, read-only, failing)
//! is kept in memory (`Unrecorded`): the next attempt writes it before it delivers anything,
//! so what was delivered is not delivered again while the disk is bad (only a restart in
//! between, which forgets it, repeats those deliveries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use nullq_spool::{DeliveryState, MessageBytes, QueueId, QueuedMessage, Spool, Status};
use tokio::sync::mpsc;

use crate::delivery::backend;
use crate::delivery::bounce;
use crate::delivery::clock::Clock;
use crate::delivery::decide::{decide, BounceTo, Decision, Outcome, Rules};
use crate::delivery::group::Group;
use crate::delivery::job::{Job, DOUBLE_BOUNCE_SENDER};
use crate::delivery::lock::{LockError, MessageLock};
use crate::delivery::message::{read_head, Head, Message, HEAD_MAX};
use crate::delivery::retry;
use crate::delivery::routes::Routes;
use crate::delivery::schedule::next_due;
use crate::delivery::stats::Stats;
use crate::metrics::DeliveryResult;
use crate::process::logging::escape_field;
use crate::rewriting::Rewriting;

/// What every attempt of one runner needs, shared by them all.
pub struct Deliverer {
    pub(crate) spool: Spool,
    pub(crate) routes: Routes,
    pub(crate) rewriting: Arc<Rewriting>,
    pub(crate) clock: Clock,
    pub(crate) rules: Rules,
    pub(crate) local_name: String,
    pub(crate) stats: Stats,
    /// Where new messages (our bounces) are announced: the runner's own inbox.
    pub(crate) notify: mpsc::UnboundedSender<QueueId>,
    /// Messages locked and loaded for their attempts by a few threads of their own: the
    /// attempts that start together (the sessions a commit answered at once) wake a few
    /// threads, not one each ([`Loading`]).
    pub(crate) loads: Group<QueueId, Loading>,
    /// Removals of finished messages, grouped: one `queue/` fsync per batch.
    pub(crate) removals: Group<QueueId, Stored>,
    /// What attempts decided and could not write (see [`Unrecorded`]), by message.
    pub(crate) unrecorded: Mutex<HashMap<QueueId, Unrecorded>>,
    /// New states of messages still pending, grouped: one `state/` fsync per batch.
    pub(crate) saves: Group<(QueueId, DeliveryState), Stored>,
}

/// What a grouped removal or state save answers (the error as text: a batch shares it).
pub(crate) type Stored = Result<(), String>;

/// The threads an attempt's blocking spool work is done by.
pub(crate) struct Storage {
    pub(crate) loads: Group<QueueId, Loading>,
    pub(crate) removals: Group<QueueId, Stored>,
    pub(crate) saves: Group<(QueueId, DeliveryState), Stored>,
}

/// Loader threads. Each takes one message at a time and answers it at once: a batch would
/// keep every message in it waiting, locked, for its slowest load. A message too large to be
/// read in one piece is only locked by them ([`Loading::Large`]); with a queue file that is
/// not a regular file refused unopened ([`MessageLock::try_lock`]), nothing they do waits for
/// long on a working disk.
const LOAD_WORKERS: usize = 4;

impl Deliverer {
    /// The groups that load messages for their attempts ([`start_load`]), remove finished
    /// messages from `spool` and save new states, the last two each batch with one directory
    /// fsync ([`Spool::remove_batch`], [`Spool::save_state_batch`]).
    pub(crate) fn storage(spool: &Spool) -> Storage {
        let s = spool.clone();
        let loads = Group::spawn_bounded(
            "nullq-load",
            1,
            LOAD_WORKERS,
            || {
                Loading::Done(LoadResult::Failed(
                    "internal error: the loader thread is gone".to_string(),
                ))
            },
            move |ids: Vec<QueueId>| {
                // A panic is one message's answer (tried again later), not the thread's end.
                let one = |id: &QueueId| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start_load(&s, id)))
                        .unwrap_or_else(|_| {
                            Loading::Done(LoadResult::Failed(
                                "internal error: loading it panicked".into(),
                            ))
                        })
                };
                ids.iter().map(one).collect()
            },
        );
        let gone = || Err("internal error: the spool's batch thread is gone".to_string());
        let s = spool.clone();
        let removals = Group::spawn("nullq-remove", gone, move |ids: Vec<QueueId>| {
            let results = s.remove_batch(&ids);
            results
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        });
        let s = spool.clone();
        let saves = Group::spawn(
            "nullq-state",
            gone,
            move |states: Vec<(QueueId, DeliveryState)>| {
                let results = s.save_state_batch(&states);
                results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect()
            },
        );
        Storage {
            loads,
            removals,
            saves,
        }
    }
}

/// What an attempt leaves to be written once its bounces are queued.
enum Store {
    /// Nothing changed.
    Nothing,
    /// A new state of a message still pending.
    Save,
    /// Nothing is pending any more: the message goes.
    Remove,
}

/// The results of an attempt that could not be written: its deliveries are done, so the next
/// attempt writes this first and delivers nothing until it is written.
pub(crate) struct Unrecorded {
    /// The new state (`Some`), or the removal (`None`).
    state: Option<DeliveryState>,
    /// How many times writing it has failed: the next try waits twice as long each time.
    failures: u32,
    /// When the next try is due (what a rescan schedules it for, not the older state on disk).
    due: SystemTime,
}

/// What an attempt leaves for the schedule.
#[derive(Debug)]
pub enum Next {
    /// The message is gone (delivered, failed and bounced, deleted).
    Done,
    /// Try again at this queue time.
    At(SystemTime),
    /// Someone else holds the message (a `nullq queue` tool): try again shortly.
    Busy,
}

/// A message ready for an attempt: its lock, envelope, state, the start of its bytes, and all
/// of them for a small message.
pub(crate) struct Loaded {
    lock: MessageLock,
    queued: QueuedMessage,
    head: Head,
    bytes: Option<MessageBytes>,
}

/// One due recipient of an attempt: which backend had it, as what address, and what came of
/// it.
struct Tried {
    index: usize,
    backend: usize,
    rcpt: Vec<u8>,
    outcome: Outcome,
}

pub(crate) enum LoadResult {
    Ready(Box<Loaded>),
    Gone,
    Busy,
    /// An I/O error (EIO, EMFILE, EACCES...): the message is tried again later.
    Failed(String),
    /// The file's content was wrong: moved to `corrupt/` (the ERROR line, whether the message
    /// is still queued).
    SetAside(String, bool),
}

/// What a loader thread did with a message.
pub(crate) enum Loading {
    /// All of it: the message is ready, or why not.
    Done(LoadResult),
    /// Locked only: reading it whole takes a while, so the rest ([`finish_load`]) is done on
    /// the blocking pool, where it holds up no other message.
    Large(MessageLock),
}

/// A loader thread's part of loading `id`: the lock, then the rest if the spool reads the file
/// in one piece.
fn start_load(spool: &Spool, id: &QueueId) -> Loading {
    let lock = match MessageLock::try_lock(spool.root(), id) {
        Ok(l) => l,
        Err(LockError::Gone) => return Loading::Done(LoadResult::Gone),
        Err(LockError::Busy) => return Loading::Done(LoadResult::Busy),
        // Unlockable, so moved without the lock: nobody else can lock it either.
        Err(e @ LockError::NotRegular(_)) => {
            let reason = e.to_string();
            let moved = spool.set_aside_queue_file(id, &reason);
            return Loading::Done(set_aside_moved(spool, id, &reason, moved));
        }
        Err(e) => return Loading::Done(LoadResult::Failed(e.to_string())),
    };
    if !Spool::loads_whole(lock.file_len()) {
        return Loading::Large(lock);
    }
    Loading::Done(finish_load(spool, id, lock))
}

/// Load the message `lock` holds.
fn finish_load(spool: &Spool, id: &QueueId, lock: MessageLock) -> LoadResult {
    // The whole file is checked (its checksum, as at start-up) before anything of it is
    // delivered: a file that turned bad since its commit goes to corrupt/, not to recipients.
    // Through the lock's descriptor; a small file is read once, whole, and kept.
    let (queued, bytes) = match spool.load_open(id, lock.file()) {
        Ok(q) => q,
        Err(e) if e.is_not_found() => return LoadResult::Gone,
        Err(e) if e.is_corrupt() => return set_aside(spool, id, &e),
        Err(e) => return LoadResult::Failed(e.to_string()),
    };
    // A larger message: only the header is read here; backends read the body from the file
    // as they send it.
    let read = match &bytes {
        Some(b) => read_head(&mut b.as_slice()).map_err(|e| e.to_string()),
        None => match spool.message(id) {
            Ok(mut r) => read_head(&mut r).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => return LoadResult::Gone,
            Err(e) => Err(e.to_string()),
        },
    };
    match read {
        Ok(head) => LoadResult::Ready(Box::new(Loaded {
            lock,
            queued,
            head,
            bytes,
        })),
        Err(e) => LoadResult::Failed(e),
    }
}

/// Move what `err` found corrupt to `corrupt/` (the spool's one move, as at start-up), under
/// the message's lock; the line to log says what moved where and why.
fn set_aside(spool: &Spool, id: &QueueId, err: &nullq_spool::SpoolError) -> LoadResult {
    set_aside_moved(spool, id, &err.to_string(), spool.set_aside(id, err))
}

/// The answer and log line for a move to `corrupt/` made for `why`.
fn set_aside_moved(
    spool: &Spool,
    id: &QueueId,
    why: &str,
    moved: Result<Vec<nullq_spool::CorruptFile>, nullq_spool::SpoolError>,
) -> LoadResult {
    let moved = match moved {
        Ok(moved) => moved,
        Err(e) => {
            return LoadResult::Failed(format!("{why}; and moving it to corrupt/ failed: {e}"))
        }
    };
    let queue_file = spool.root().join("queue").join(id.to_string());
    let still_queued = !moved.iter().any(|m| m.from == queue_file);
    let mut line = String::new();
    for (i, m) in moved.iter().enumerate() {
        if i == 0 {
            line = format!(
                "found corrupt: moved {} to {}: {}",
                m.from.display(),
                m.to.display(),
                m.reason
            );
        } else {
            line.push_str(&format!(
                "; moved {} to {} with it",
                m.from.display(),
                m.to.display()
            ));
        }
    }
    line.push_str(if still_queued {
        "; the message stays queued, every recipient pending again"
    } else {
        "; not delivered, not retried"
    });
    LoadResult::SetAside(line, still_queued)
}

impl Deliverer {
    /// One attempt at message `id`: deliver its due recipients, bounce what failed, save the
    /// state. Returns when it is due again.
    pub async fn attempt(self: &Arc<Self>, id: QueueId) -> Next {
        let loaded = match self.loads.submit(id).await {
            Loading::Done(result) => result,
            Loading::Large(lock) => {
                let spool = self.spool.clone();
                tokio::task::spawn_blocking(move || finish_load(&spool, &id, lock))
                    .await
                    .unwrap_or_else(|e| LoadResult::Failed(format!("internal error: {e}")))
            }
        };
        let loaded = match loaded {
            LoadResult::Ready(l) => l,
            LoadResult::Gone => {
                // Removed meanwhile (a removal that did go through, or `nullq queue delete`).
                self.take_unrecorded(&id);
                return Next::Done;
            }
            LoadResult::Busy => return Next::Busy,
            LoadResult::Failed(e) => {
                tracing::error!(target: "nullq::delivery", id = %id, "cannot read the message (will try again): {e}");
                return self.later();
            }
            LoadResult::SetAside(line, still_queued) => {
                tracing::error!(target: "nullq::delivery", id = %id, "{line}");
                return if still_queued {
                    Next::At(self.clock.now())
                } else {
                    self.take_unrecorded(&id);
                    Next::Done
                };
            }
        };
        let Loaded {
            lock,
            mut queued,
            head,
            bytes,
        } = *loaded;
        if let Some(earlier) = self.take_unrecorded(&id) {
            match self.write_unrecorded(&id, earlier).await {
                Ok(Some(state)) => queued.state = state,
                Ok(None) => return Next::Done,
                Err(next) => return next,
            }
        }
        let now = self.clock.now();
        let tried = self
            .deliver_due(&queued, head.header.clone(), &head, bytes, now)
            .await;
        let outcomes: Vec<(usize, Outcome)> =
            tried.iter().map(|t| (t.index, t.outcome.clone())).collect();
        let decision = decide(
            &queued.envelope,
            &queued.state,
            &outcomes,
            now,
            &self.rules,
            retry::jitter(),
        );
        self.log_and_count(&queued, &tried, &decision, now);

        let outcome = if decision.bounce.is_empty() && decision.warn.is_empty() {
            // Nothing to queue, so no I/O here: no hand-off to a blocking thread.
            Ok(self.record(&queued, &head.start, decision))
        } else {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.record(&queued, &head.start, decision)).await
        };
        let (store, state, new_ids) = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(target: "nullq::delivery", id = %id, "internal error: {e}");
                return self.later();
            }
        };
        for new in new_ids {
            let _ = self.notify.send(new);
        }
        // Grouped with the other attempts finishing now; still under the message's lock.
        let result = match store {
            Store::Nothing => Ok(()),
            Store::Save => self.saves.submit((id, state.clone())).await,
            Store::Remove => self.removals.submit(id).await,
        };
        drop(lock);
        if let Err(e) = result {
            tracing::error!(target: "nullq::delivery", id = %id, "cannot record the results: {e}; kept in memory and written before anything of this message is delivered again");
            let state = (!matches!(store, Store::Remove)).then_some(state);
            return self.keep_unrecorded(id, state, 1);
        }
        if !state.any_pending() {
            return Next::Done;
        }
        Next::At(next_due(&state).unwrap_or_else(|| self.clock.now()))
    }

    /// After an error on our side: again in `retry_min`.
    fn later(&self) -> Next {
        Next::At(self.clock.now() + self.rules.retry_min)
    }

    /// The results of an earlier attempt at `id` that could not be written, if any.
    fn take_unrecorded(&self, id: &QueueId) -> Option<Unrecorded> {
        let mut all = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.remove(id)
    }

    /// Keeps `state` (or the removal, `None`) for the next attempt at `id`, which is due after
    /// a back-off that doubles with each of the `failures` to write it (from `retry_min` up to
    /// `retry_max`).
    fn keep_unrecorded(&self, id: QueueId, state: Option<DeliveryState>, failures: u32) -> Next {
        let wait = retry::backoff_at(
            failures,
            self.rules.retry_min,
            self.rules.retry_max,
            retry::jitter(),
        );
        let due = self.clock.now() + wait;
        let mut all = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.insert(
            id,
            Unrecorded {
                state,
                failures,
                due,
            },
        );
        Next::At(due)
    }

    /// When the next try to write the results of an earlier attempt at `id` is due, if any are
    /// waiting (for the runner's scans).
    pub(crate) fn unrecorded_due(&self, id: &QueueId) -> Option<SystemTime> {
        let all = self
            .unrecorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.get(id).map(|u| u.due)
    }

    /// Writes what an earlier attempt at `id` could not, under the message's lock (held by the
    /// caller). The state to go on with (`Ok(Some)`), or the message is removed (`Ok(None)`);
    /// failing again, when to try next.
    async fn write_unrecorded(
        &self,
        id: &QueueId,
        earlier: Unrecorded,
    ) -> Result<Option<DeliveryState>, Next> {
        let result = match &earlier.state {
            Some(state) => self.saves.submit((*id, state.clone())).await,
            None => self.removals.submit(*id).await,
        };
        match result {
            Ok(()) => {
                tracing::warn!(target: "nullq::delivery", id = %id, failures = earlier.failures, "the results of an earlier attempt are recorded now");
                Ok(earlier.state)
            }
            Err(e) => {
                tracing::error!(target: "nullq::delivery", id = %id, failures = earlier.failures + 1, "still cannot record the results of an earlier attempt: {e}; nothing of this message is delivered until they are");
                Err(self.keep_unrecorded(*id, earlier.state, earlier.failures + 1))
            }
        }
    }

    /// Hand every due recipient of `queued` to its backend (rewritten, grouped by backend, in
    /// envelope order inside a group); one outcome per due recipient.
    async fn deliver_due(
        &self,
        queued: &QueuedMessage,
        header: Vec<u8>,
        head: &Head,
        bytes: Option<MessageBytes>,
        now: SystemTime,
    ) -> Vec<Tried> {
        let env = &queued.envelope;
        let due: Vec<usize> = queued
            .state
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == Status::Pending && r.next_attempt.is_none_or(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        let mut tried = Vec::with_capacity(due.len());
        if due.is_empty() {
            return tried;
        }
        let sender = if env.sender.is_empty() || env.sender == DOUBLE_BOUNCE_SENDER {
            env.sender.clone()
        } else {
            self.rewriting.rewrite_address(&env.sender)
        };
        if head.too_long && self.rewriting.rewrites() {
            tracing::warn!(target: "nullq::delivery", id = %queued.id, "header longer than {HEAD_MAX} bytes: delivered as received, its addresses not rewritten");
        }
        let header = self.rewriting.rewrite_header(&header).unwrap_or(header);
        let message = Message::spooled(
            header,
            !head.too_long,
            self.spool.clone(),
            queued.id,
            (head.body_at, queued.message_len),
            bytes,
        );
        let mut groups: Vec<(usize, Vec<usize>, Vec<Vec<u8>>)> = Vec::new();
        for &i in &due {
            let rcpt = self.rewriting.rewrite_address(&env.recipients[i]);
            let b = self.routes.route(&rcpt);
            match groups.iter_mut().find(|g| g.0 == b) {
                Some(g) => {
                    g.1.push(i);
                    g.2.push(rcpt);
                }
                None => groups.push((b, vec![i], vec![rcpt])),
            }
        }
        for (b, indexes, recipients) in groups {
            let (_, backend) = self.routes.backend(b);
            let answers = if backend.holds() {
                vec![Outcome::Held; recipients.len()]
            } else {
                let job = Job {
                    id: queued.id,
                    sender: sender.clone(),
                    recipients: recipients.clone(),
                    message: message.clone(),
                };
                // The target's own limit (a smarthost takes fewer at once than a Maildir).
                let _permit = self.routes.permit(b).await;
                let answers = backend::deliver(backend, &job).await;
                answers.into_iter().map(Outcome::Answered).collect()
            };
            for ((index, rcpt), outcome) in indexes.into_iter().zip(recipients).zip(answers) {
                tried.push(Tried {
                    index,
                    backend: b,
                    rcpt,
                    outcome,
                });
            }
        }
        tried
    }

    /// One log line and one count per answer (after the decision: it says which temporary
    /// failure became a bounce, and how many attempts each recipient has had).
    fn log_and_count(
        &self,
        queued: &QueuedMessage,
        tried: &[Tried],
        decision: &Decision,
        now: SystemTime,
    ) {
        let age = now
            .duration_since(queued.envelope.arrival)
            .unwrap_or_default();
        for t in tried {
            let Outcome::Answered(answer) = &t.outcome else {
                continue;
            };
            let Some(r) = decision.state.recipients.get(t.index) else {
                continue;
            };
            let label = self.routes.backend(t.backend).0;
            // One line either way; at WARN when the trouble is this host's.
            macro_rules! result_line {
                ($level:ident) => {
                    tracing::$level!(
                        target: "nullq::delivery",
                        id = %queued.id,
                        rcpt = %escape_field(&t.rcpt),
                        backend = %label,
                        result = answer.verdict.word(),
                        attempt = r.attempts,
                        delay = age.as_secs(),
                        "{}",
                        answer.text
                    )
                };
            }
            if answer.ours {
                result_line!(warn);
            } else {
                result_line!(info);
            }
            let result = decision
                .results
                .iter()
                .find(|(j, _)| *j == t.index)
                .map_or(DeliveryResult::Deferred, |(_, r)| *r);
            self.stats.count(label, result);
        }
    }

    /// Queue the bounce and the warning `decision` asks for and tell it how that went
    /// (blocking). Returns what is then to be written (the new state, or the removal when
    /// nothing is pending), the new state, and the ids of the messages queued.
    fn record(
        &self,
        queued: &QueuedMessage,
        start: &[u8],
        mut decision: Decision,
    ) -> (Store, DeliveryState, Vec<QueueId>) {
        let now = self.clock.now();
        let mut new_ids = Vec::new();
        if !decision.bounce.is_empty() {
            match bounce::queue_bounce(
                &self.spool,
                &self.local_name,
                queued,
                start,
                &decision.bounce,
                &decision.bounce_to,
                now,
            ) {
                Ok(outcome) => {
                    match &outcome {
                        bounce::Queued::Bounce(id) => {
                            self.stats.update(|s| s.bounces_queued += 1);
                            new_ids.push(*id);
                        }
                        bounce::Queued::DoubleBounce(id) => {
                            self.stats.update(|s| s.double_bounces += 1);
                            new_ids.push(*id);
                        }
                        bounce::Queued::Dropped => self.stats.update(|s| s.double_bounces += 1),
                    }
                    debug_assert_eq!(
                        matches!(outcome, bounce::Queued::Dropped),
                        decision.bounce_to == BounceTo::Nobody
                    );
                    tracing::info!(target: "nullq::delivery", id = %queued.id, failed = decision.bounce.len(), "{outcome}");
                    decision.bounce_queued();
                }
                Err(e) => {
                    // Not marked failed: they stay pending and fail again at the next attempt.
                    tracing::error!(target: "nullq::delivery", id = %queued.id, "cannot queue the bounce, will try again: {e}");
                    decision.bounce_not_queued();
                }
            }
        }
        if !decision.warn.is_empty() {
            match bounce::queue_warning(
                &self.spool,
                &self.local_name,
                queued,
                start,
                &decision.state,
                &decision.warn,
                now,
            ) {
                Ok(id) => {
                    self.stats.update(|s| s.warnings_queued += 1);
                    new_ids.push(id);
                    decision.warning_queued();
                }
                Err(e) => {
                    tracing::error!(target: "nullq::delivery", id = %queued.id, "cannot queue the delay warning: {e}")
                }
            }
        }
        let state = decision.state;
        let store = if state.any_pending() {
            if state == queued.state {
                Store::Nothing
            } else {
                Store::Save
            }
        } else {
            // Nothing pending: removal alone records that (a crash before it repeats work).
            Store::Remove
        };
        (store, state, new_ids)
    }
}
