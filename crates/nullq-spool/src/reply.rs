//! A one-shot reply: the committer thread answers each waiting caller exactly once, and the
//! caller waits for it either blocking (a condvar: `nullq queue` tools, bounces, tests) or as a
//! future (a waker: an async session, which then holds no thread while it waits). Plain `std`,
//! so the spool needs no runtime; a dropped sender is an answer too ("gone"), never a hang.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A new channel for one value.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        inner: Mutex::new(Inner {
            value: None,
            closed: false,
            waker: None,
            blocked: false,
        }),
        ready: Condvar::new(),
    });
    (Sender { slot: slot.clone() }, Receiver { slot })
}

struct Slot<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
}

struct Inner<T> {
    value: Option<T>,
    /// The sender is gone: `value` is all there will ever be.
    closed: bool,
    /// The task to wake when the sender is done, if the receiver is polled as a future.
    waker: Option<Waker>,
    /// A thread is blocked in [`Receiver::wait`]: only then is the condvar notified (a
    /// notification is a system call, and most receivers are futures).
    blocked: bool,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing under this lock panics (moves of a value and a waker), so it is whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answering side: [`Sender::send`] once, or drop it to say "no answer".
pub(crate) struct Sender<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Sender<T> {
    /// Hands over the answer; the receiver is woken when `self` is dropped, here.
    pub(crate) fn send(self, value: T) {
        self.slot.lock().value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // `blocked` is read under the lock a waiter sets it under, before it waits: a waiter
        // that set it has released the lock only by waiting, so the notification reaches it.
        let (waker, blocked) = {
            let mut inner = self.slot.lock();
            inner.closed = true;
            (inner.waker.take(), inner.blocked)
        };
        if blocked {
            self.slot.ready.notify_all();
        }
        // Woken outside the lock: a waker may poll at once, on this thread.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The waiting side.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// Blocks until the sender answers (`Some`) or is dropped without answering (`None`).
    pub(crate) fn wait(self) -> Option<T> {
        let mut inner = self.slot.lock();
        loop {
            if let Some(value) = inner.value.take() {
                return Some(value);
            }
            if inner.closed {
                return None;
            }
            inner.blocked = true;
            inner = self
                .slot
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The answer if it is there (`Some`), `None` if the sender went without one, else
    /// `Pending` with the task registered to be woken. After `Ready(Some)` the value is gone:
    /// a later poll gives `Ready(None)`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = self.slot.lock();
        if let Some(value) = inner.value.take() {
            return Poll::Ready(Some(value));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    #[test]
    fn a_blocked_receiver_gets_the_value() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7);
        });
        assert_eq!(rx.wait(), Some(7));
        assert!(t.join().is_ok());
    }

    #[test]
    fn a_dropped_sender_is_no_answer() {
        let (tx, rx) = channel::<u8>();
        drop(tx);
        assert_eq!(rx.wait(), None);
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_polled_receiver_is_woken_once_answered() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel();
        assert_eq!(rx.poll(&mut cx), Poll::Pending);
        assert_eq!(rx.poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        tx.send("k");
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once, by the drop");
        assert_eq!(rx.poll(&mut cx), Poll::Ready(Some("k")));
        assert_eq!(rx.poll(&mut cx), Poll::Ready(None));

        let (tx, mut rx) = channel::<u8>();
        assert_eq!(rx.poll(&mut cx), Poll::Pending);
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.poll(&mut cx), Poll::Ready(None));
    }
}
