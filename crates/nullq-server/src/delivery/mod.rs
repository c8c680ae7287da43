//! Delivery: takes committed messages out of the spool and hands each recipient to its
//! backend, records every result durably, bounces what failed for good, and removes a message
//! when no recipient is pending. It depends on the spool and the configuration, never on
//! `inbound` (a message reaches it only through the spool).
//!
//! ```text
//! spool ─(id on a channel, or found by a scan)─▶ runner ─▶ attempt ─▶ routes ─▶ backend ─▶ target
//!                                                            │
//!                                                 decide (pure) ─▶ bounce ─▶ spool
//! ```
//! - [`runner`]: the schedule ([`schedule`], bounded in memory: a backlog waits on disk),
//!   concurrency, scans, wake-ups, shutdown;
//! - [`group`]: the batching threads (the Maildir and CGP writers, grouped removals and state
//!   saves): one fsync for everything finished at the same moment; [`durable`]: the Maildir's
//!   and CGP's files synced with the spool's own commits;
//! - [`attempt`]: one attempt at one message, in the order that makes a crash repeat work;
//! - [`decide`]: the decision after an attempt as a pure function of state, answers, time and
//!   the site's rules (retry, give up, bounce to whom, warn);
//! - [`backend`]: the trait every target implements, one file each: [`maildir`], [`cgp`],
//!   [`smtp`], [`pipe`], [`qmail_queue`], [`hold`]; [`routes`] builds them and picks one per
//!   recipient; [`job`] and [`message`] are what they are handed, [`handover`] how the
//!   envelope goes with the message;
//! - [`bounce`] (RFC 3464 reports), [`retry`] (backoff), [`clock`] (queue time, scalable for
//!   tests), [`lock`] (one writer per message, shared with `nullq queue`), [`stats`].
//!
//! The order of an attempt is what makes a crash repeat work rather than skip it:
//! 1. lock `queue/ID`, check the whole file (its checksum), load envelope, state and the
//!    message's header (the body is streamed from the queue file by each backend: see
//!    [`message::Message`]); a file found corrupt goes to `corrupt/` with its state (one ERROR
//!    line) and is not tried again, an I/O error is tried again later;
//! 2. deliver every due recipient (a crash here: delivered again after restart);
//! 3. queue the bounce for those that failed for good (a new spool message, committed);
//! 4. only then write the new state (`save_state`: delivered / failed / next attempt);
//! 5. remove the message once no recipient is pending (if none is left after the first
//!    attempt the state write is skipped: removal says it all).

pub mod attempt;
pub mod backend;
pub mod bounce;
pub mod cgp;
pub mod cgp_header;
pub mod clock;
pub mod decide;
pub mod durable;
pub mod group;
pub mod handover;
pub mod hold;
pub mod job;
pub mod lock;
pub mod maildir;
pub mod message;
pub mod pipe;
pub mod qmail_queue;
pub mod retry;
pub mod routes;
pub mod runner;
pub mod schedule;
pub mod smtp;
pub mod smtp_conn;
pub mod stats;

pub use runner::Runner;
