//! Group commit on the delivery side, as the spool's committer does it for receiving: one thread
//! per [`Group`] takes every request waiting when it wakes as one batch, does the batch's
//! blocking work once (the Maildir's or CommuniGate Pro folder's writer: every file of the batch
//! synced together and one fsync of the directory for all; the spool's removals: one `queue/`
//! fsync for all the messages that go), and answers each request. A request is sent only after
//! its own step is done (its rename, its decision), so the batch's fsync, which starts after the
//! request was received, covers it; requests that arrive during the work wait for the next
//! batch. Under load a batch grows with the arrivals, so the cost per message falls as the rate
//! rises instead of the rate falling. With batches of one and a few workers it is a small pool
//! of threads of its own (the attempts' loaders: a burst of requests wakes a few threads, not
//! one each, and no answer waits for another request's work).
//!
//! The thread ends when the last [`Group`] handle is dropped (its channel closes).

use std::sync::{mpsc, Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Request<T, R> = (T, oneshot::Sender<R>);

/// What a request is answered when the thread is gone (it panicked, or could not start).
type Gone<R> = Arc<dyn Fn() -> R + Send + Sync>;

/// A batching thread that runs `work` on every batch of `T` and answers each with an `R`.
pub struct Group<T, R> {
    requests: mpsc::Sender<Request<T, R>>,
    gone: Gone<R>,
}

impl<T, R> std::fmt::Debug for Group<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// Start the thread `name`. `work` gets a batch (at least one item, in arrival order) and
    /// returns one answer per item, in the same order; `gone` makes the answer to a request
    /// when the thread is not there (a missing answer too).
    pub fn spawn(
        name: &str,
        gone: impl Fn() -> R + Send + Sync + 'static,
        work: impl FnMut(Vec<T>) -> Vec<R> + Send + 'static,
    ) -> Group<T, R> {
        // One worker: the Mutex only satisfies the shared form.
        let work = Mutex::new(work);
        Group::spawn_bounded(name, usize::MAX, 1, gone, move |batch| {
            let mut work = work.lock().unwrap_or_else(PoisonError::into_inner);
            (*work)(batch)
        })
    }

    /// [`Group::spawn`] with at most `max` items a batch (a batch that holds a descriptor per
    /// item must not run the process out of them) and `workers` threads taking batches from the
    /// same queue, each its own batch at a time: the waits of several batches (their fsyncs)
    /// overlap, and the filesystem's journal joins them into the same commits.
    pub fn spawn_bounded(
        name: &str,
        max: usize,
        workers: usize,
        gone: impl Fn() -> R + Send + Sync + 'static,
        work: impl Fn(Vec<T>) -> Vec<R> + Send + Sync + 'static,
    ) -> Group<T, R> {
        let gone: Gone<R> = Arc::new(gone);
        let max = max.max(1);
        let (tx, rx) = mpsc::channel::<Request<T, R>>();
        let rx = Arc::new(Mutex::new(rx));
        let work = Arc::new(work);
        let mut started = 0;
        for _ in 0..workers.max(1) {
            let (rx, work, missing) = (Arc::clone(&rx), Arc::clone(&work), Arc::clone(&gone));
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || loop {
                    // One worker takes a batch at a time: the first request (waiting for it),
                    // then whatever else is queued.
                    let items = {
                        let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                        let Ok(first) = rx.recv() else { break };
                        let mut items = vec![first];
                        items.extend(rx.try_iter().take(max - 1));
                        items
                    };
                    let (batch, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        items.into_iter().unzip();
                    let mut answers = work(batch).into_iter();
                    for reply in replies {
                        // A caller that gave up (its attempt was cut short) no longer listens.
                        let _ = reply.send(answers.next().unwrap_or_else(|| missing()));
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(target: "nullq::delivery", "cannot start a {name} thread: {e}")
                }
            }
        }
        if started == 0 {
            // Every request gets `gone` at once: the callers fall back to "try again".
            let (tx, _) = mpsc::channel();
            return Group { requests: tx, gone };
        }
        Group { requests: tx, gone }
    }

    /// Hand `item` to the next batch and wait for its answer.
    pub async fn submit(&self, item: T) -> R {
        let (tx, rx) = oneshot::channel();
        if self.requests.send((item, tx)).is_err() {
            return (self.gone)();
        }
        rx.await.unwrap_or_else(|_| (self.gone)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_together_share_one_batch() {
        // The first batch is held until all eight later requests are queued behind it.
        let gate = Arc::new(Barrier::new(2));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (g, b) = (Arc::clone(&gate), Arc::clone(&batches));
        let group = Arc::new(Group::spawn(
            "test-group",
            || 0usize,
            move |batch: Vec<u32>| {
                let n = batch.len();
                b.lock().expect("lock").push(batch.clone());
                if batch == [0] {
                    g.wait();
                }
                vec![n; n]
            },
        ));
        let first = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.submit(0).await })
        };
        // Wait until the thread holds the first batch.
        while batches.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        let (tx, mut queued) = tokio::sync::mpsc::unbounded_channel();
        let mut later = Vec::new();
        for i in 1..=8 {
            let group = Arc::clone(&group);
            let tx = tx.clone();
            later.push(tokio::spawn(async move {
                let (reply, rx) = oneshot::channel();
                group.requests.send((i, reply)).expect("send");
                tx.send(()).expect("queued");
                rx.await.expect("answer")
            }));
        }
        for _ in 0..8 {
            queued.recv().await.expect("queued");
        }
        gate.wait();
        assert_eq!(first.await.expect("join"), 1);
        for h in later {
            assert_eq!(h.await.expect("join"), 8, "answered from a batch of eight");
        }
        let mut seen = batches.lock().expect("lock").clone();
        // The eight were sent from tasks on two worker threads: in any order, but together.
        if let Some(second) = seen.get_mut(1) {
            second.sort_unstable();
        }
        assert_eq!(seen, vec![vec![0], (1..=8).collect::<Vec<_>>()]);
    }

    #[tokio::test]
    async fn a_short_answer_list_answers_gone() {
        let group = Group::spawn("test-group", || "gone", |_batch: Vec<u8>| Vec::new());
        assert_eq!(group.submit(1).await, "gone");
    }
}
