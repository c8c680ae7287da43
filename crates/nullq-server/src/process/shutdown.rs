//! Graceful shutdown, as a value handed around (the mini-redis pattern).
//!
//! The listener holds a [`Shutdown`] to learn when to stop accepting; every session holds a
//! [`SessionGuard`], and "all sessions done" is "all guards dropped". Sessions are not told to
//! stop: a session in the middle of a commit must finish it and answer. The binary decides how
//! long to wait for them.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Tells the listener that shutdown has started.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Wait until shutdown starts (returns at once if it has).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// Starts shutdown.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    /// Start shutdown.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

/// A new trigger and the receivers that follow it.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

/// Held by each session; dropped when it ends.
#[derive(Debug, Clone)]
pub struct SessionGuard {
    _tx: mpsc::Sender<()>,
}

/// Waits for every [`SessionGuard`] to be dropped.
#[derive(Debug)]
pub struct Drain {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

impl Drain {
    /// A new drain with no sessions.
    pub fn new() -> Drain {
        let (tx, rx) = mpsc::channel(1);
        Drain { tx: Some(tx), rx }
    }

    /// A guard for one more session.
    pub fn guard(&self) -> Option<SessionGuard> {
        self.tx.as_ref().map(|tx| SessionGuard { _tx: tx.clone() })
    }

    /// Wait up to `limit` for the sessions to end. Returns whether they all did.
    pub async fn wait(mut self, limit: Duration) -> bool {
        self.tx = None;
        tokio::time::timeout(limit, self.rx.recv()).await.is_ok()
    }
}

impl Default for Drain {
    fn default() -> Drain {
        Drain::new()
    }
}
