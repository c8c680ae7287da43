//! How far a session's request has come, shared between the session, which counts what it
//! receives, and the listener, which asks the session furthest behind the minimum rate to give
//! up its slot when every slot is taken ([`Progress::behind`], [`Progress::evict`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How soon after it was accepted a session may be asked to give up its slot: a client that
/// has just connected has not had the time to send anything yet.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// How far a session's request has come: shared with the listener, which asks the session
/// furthest behind the minimum rate
/// ([`Context::min_data_rate`](crate::inbound::context::Context::min_data_rate)) to give up its
/// slot when every slot is taken.
#[derive(Debug)]
pub struct Progress {
    pub(crate) accepted: Instant,
    pub(crate) received: AtomicU64,
    /// How far ahead of the minimum rate the session is, for eviction ([`Progress::behind`]).
    pace: Mutex<Pace>,
    /// The minimum rate, bytes a second (`Context::min_data_rate`).
    rate: u64,
    /// Until the request is whole: a session that is committing or answering is not evicted.
    pub(crate) reading: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
}

/// Bytes received ahead of the minimum rate at a moment (negative: behind), as a leaky bucket
/// that holds at most [`CREDIT_SECS`] of the rate: what a client sent fast early on does not
/// let it stall later for as long as the average would (a client that sent a megabyte at once
/// would otherwise be "ahead" for half an hour of silence).
#[derive(Debug)]
struct Pace {
    ahead: i128,
    at: Instant,
}

/// The most a session may be ahead of the minimum rate, in seconds of it, for eviction.
const CREDIT_SECS: u64 = 3;

impl Progress {
    /// A session accepted now, which should send at `rate` bytes a second.
    pub fn new(rate: u64) -> Progress {
        let now = Instant::now();
        Progress {
            accepted: now,
            received: AtomicU64::new(0),
            pace: Mutex::new(Pace { ahead: 0, at: now }),
            rate,
            reading: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// How many bytes the session is behind its rate, if it may be evicted: still reading its
    /// request (or still in its TLS handshake), accepted at least `EVICTABLE_AFTER` ago, not
    /// already asked, and behind at all, by the capped reckoning of `Pace`.
    pub fn behind(&self, now: Instant) -> Option<u64> {
        let age = now.saturating_duration_since(self.accepted);
        if age < EVICTABLE_AFTER
            || !self.reading.load(Ordering::Relaxed)
            || self.evicted.load(Ordering::Relaxed)
        {
            return None;
        }
        let ahead = self.ahead_at(
            &self.pace.lock().unwrap_or_else(PoisonError::into_inner),
            now,
        );
        (ahead < 0).then(|| u64::try_from(-ahead).unwrap_or(u64::MAX))
    }

    /// `pace` carried forward to `now`: the rate's due for the time since subtracted.
    fn ahead_at(&self, pace: &Pace, now: Instant) -> i128 {
        // In microseconds: what each step rounds away must stay far below a byte at any rate a
        // client could be charged (in milliseconds, reads 4 ms apart cost nothing at 500 B/s).
        let us = now.saturating_duration_since(pace.at).as_micros() as i128;
        pace.ahead - i128::from(self.rate) * us / 1_000_000
    }

    /// Ask the session to answer `Z` and end. Whether this call was the one that asked.
    pub fn evict(&self) -> bool {
        if self.evicted.swap(true, Ordering::SeqCst) {
            return false;
        }
        // notify_one keeps the wake-up for a session not waiting in a read right now.
        self.evict.notify_one();
        true
    }

    /// Until [`Progress::evict`] is called (at once if it was).
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// `n` more bytes of request received.
    pub(crate) fn add(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = i128::from(self.rate) * i128::from(CREDIT_SECS);
        pace.ahead = (self.ahead_at(&pace, now) + n as i128).min(cap);
        pace.at = now;
    }

    /// When the request must be whole at the present count: the grace, then one second for
    /// every `rate` bytes received.
    pub(crate) fn allowed_until(&self, grace: Duration, rate: u64) -> tokio::time::Instant {
        let received = self.received.load(Ordering::Relaxed);
        let earned = Duration::from_millis(received.saturating_mul(1000) / rate.max(1));
        tokio::time::Instant::from_std(self.accepted) + grace + earned
    }
}
