//! The QMQP server, laid out by its data path:
//!
//! ```text
//! client ══QMQP══▶ inbound ──commit──▶ spool (nullq-spool) ──▶ delivery ──▶ CommuniGate Pro,
//!                  (listener, session,                          (runner,      SMTP, Maildir,
//!                   access, policy)                              backends)    pipe, qmail-queue
//! ```
//! - [`inbound`]: listener, session, peer, access rules, admission policy, Received lines;
//! - [`delivery`]: the queue runner, the pure delivery decision, routes, one file per backend,
//!   bounces and retries; it never uses `inbound` (a message reaches it only through the spool);
//! - [`admin`]: `nullq queue ...` and `nullq health`;
//! - [`process`]: the programs' edge: command line, logging, privilege drop, shutdown, systemd;
//! - shared by inbound and delivery: [`rewriting`] (the site's address rewriting, checked by the
//!   policy and applied by delivery) and [`metrics`] (the counters and the Prometheus endpoint).
//!
//! `docs/architecture.md` says what each part owns and where to add a backend or a program.

pub mod admin;
pub mod delivery;
pub mod inbound;
pub mod metrics;
pub mod process;
pub mod rewriting;
