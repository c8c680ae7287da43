//! The QMQP server: the middle of the data path
//! `client ══QMQP══▶ listener → session → spool → delivery`.
//!
//! - [`cli`]: `nullq serve`, `nullq qmqpd`: configuration, start-up order (bind, drop privileges,
//!   open the spool), signals;
//! - [`listener`]: accepting TCP connections, admitting them (access rules, session limits);
//! - [`session`]: one QMQP session on any byte stream, shared by `serve` and `qmqpd`;
//! - [`policy`]: allowed senders, relay control, Router-syntax rewriting (checked before `K`);
//! - [`delivery`]: the queue runner and its backends (Maildir, CommuniGate Pro, SMTP, pipe,
//!   qmail-queue), retries and bounces; [`queue_tools`]: `nullq queue ...`;
//! - [`context`]: the read-only state all sessions share;
//! - [`access`]: tcprules-based access control, reloaded on SIGHUP;
//! - [`received`]: the Received lines put on every message;
//! - [`shutdown`]: graceful shutdown as values handed around;
//! - [`metrics`]: the Prometheus endpoint (`--metrics-listen`) and the counters behind it;
//!   [`health`]: `nullq health`, a Nagios-style check of the spool;
//! - [`logging`], [`privilege`]: log destinations; dropping root after binding;
//! - [`systemd`]: sockets inherited by socket activation, readiness and watchdog notifications.
//!
//! Errors inside the server are answers: a problem with the client's request is a QMQP `D`, a
//! problem on our side a `Z`. Only start-up problems end the process.

pub mod access;
pub mod cli;
pub mod context;
pub mod delivery;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod privilege;
pub mod queue_tools;
pub mod received;
pub mod rewriting;
pub mod session;
pub mod shutdown;
pub mod systemd;
