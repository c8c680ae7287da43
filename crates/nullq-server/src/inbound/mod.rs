//! Receiving: from a QMQP client's bytes to a committed spool message and its answer.
//!
//! ```text
//! client ══QMQP══▶ listener ─(access, limits)─▶ session ─(policy, Received)─▶ spool commit ─▶ K/Z/D
//! ```
//! - [`listener`]: `nullq serve`'s front end: accepting, admitting (access rules, session
//!   limits, eviction of the slowest client when full), one session per connection;
//! - [`session`]: one QMQP session on any byte stream (`nullq serve` and `nullq qmqpd`);
//!   [`progress`]: how far its request has come, for the eviction of the slowest;
//! - [`peer`]: who the client is; [`access`]: tcprules, reloaded on SIGHUP;
//! - [`policy`]: allowed senders and relay control, checked before `K`;
//! - [`received`]: the Received lines put on every message;
//! - [`context`]: the read-only state all sessions share;
//! - [`tls`]: QMQP over TLS: the certificates (reloaded on SIGHUP) and what a handshake tells.
//!
//! Errors here are answers: a problem with the client's request is a QMQP `D`, a problem on our
//! side a `Z`.

pub mod access;
pub mod context;
pub mod listener;
pub mod peer;
pub mod policy;
pub mod progress;
pub mod received;
pub mod session;
pub mod tls;
