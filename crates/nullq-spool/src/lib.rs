//! nullq-spool: the durable queue on disk, between the QMQP server and delivery.
//!
//! ```text
//! client ══QMQP══▶ session ─▶ [ spool ] ─▶ delivery
//! ```
//! The server hands a message to the spool (whole, for the committer thread to write: most
//! mail; or streamed into its file from `spawn_blocking`: this crate is plain blocking `std` +
//! `libc`, no tokio), awaits its commit (a future that needs no runtime, so no thread waits
//! for the batch's flush), answers `K` only once it is durable, and the delivery
//! runner and `nullq queue` tools read it back, record per-recipient results, and remove it.
//!
//! # Map
//! - [`Spool`] (`spool.rs`): open with recovery, list, load, message, save_state, remove.
//! - `layout.rs`: the names of the directories and files under `ROOT`, and their paths.
//! - [`Incoming`] (`incoming.rs`): receiving into `tmp/ID` as the message arrives; the file
//!   itself is written, sealed and renamed into `queue/ID` by `writer.rs` (also for the
//!   committer thread's [`Spool::store`]).
//! - [`Committer`], [`Renamed`], [`PendingCommit`] (`commit.rs`): group commit, one flush for
//!   every waiting caller, by one committer thread per spool; a caller waits blocking or awaits
//!   the answer (`reply.rs`: the one-shot channel it comes on, plain `std`). `ledger.rs`: what
//!   the committer's handles and thread share (uncommitted ids, counts, the poison).
//! - [`Flush`] (`flush.rs`): how a batch is flushed (one `syncfs`, or `fsync`s issued
//!   together and one fsync of `queue/`), and the batch's writing and flushing.
//! - [`Envelope`] and the message file format (`format.rs`, no I/O); [`MessageReader`] and
//!   the checks on reading (`reader.rs`).
//! - [`DeliveryState`] (`state.rs`): per-recipient state and its file format.
//! - [`RecoveryReport`] (`recover.rs`): what `open` cleaned up; the one move to `corrupt/`,
//!   also behind [`Spool::set_aside`] for a file found bad at run time ([`Spool::verify`]).
//! - [`QueueId`] (`id.rs`): unique ids that sort by arrival.
//! - [`SpoolError`] (`error.rs`): one type, naming the step and the path. Every spool error is
//!   a temporary failure (QMQP `Z`) for the caller, so it is not classified further, except
//!   [`SpoolError::is_full`] (disk or quota full) for a better log line and reply text.
//! - [`pull_trigger`] (`trigger.rs`): `ROOT/trigger`, waking the runner without signals.
//! - [`fault`]: a failing directory fsync on demand, for tests; debug builds only.
//! - `sys.rs`: the system calls durability rests on (fdatasync, syncfs, checked close,
//!   directory fsync, `renameat2(RENAME_NOREPLACE)`, flock).
//!
//! # Layout (a contract; see also `docs/spool.md`)
//! ```text
//! ROOT/
//!   tmp/        files being received, and state updates being written, each flock'd by its
//!               writer until it leaves tmp/ (unless that writer holds `lock`); deleted at
//!               open unless their lock is held
//!   queue/ID    committed messages: one self-checking file each, immutable once committed
//!   state/ID    per-recipient delivery state, replaced atomically; absent = all pending
//!   corrupt/    files that failed the check at open or when loaded for delivery, moved here
//!               (never silently deleted)
//!   lock        flock'd by the process that opened the spool
//!   trigger     a Unix datagram socket its delivery runner reads: a datagram = rescan
//! ```
//!
//! # The life of a message
//! 1. **receiving**: `tmp/ID` is being written ([`Spool::receive`], [`Incoming::write`]; or
//!    by the committer thread, for a message handed over whole with [`Spool::store`]).
//!    Crash or drop: the file is deleted (a crash's at the next open, which finds its lock
//!    free); the client had no `K` and sends again.
//! 2. **written**: envelope and trailer appended ([`Incoming::finish`]). Still in `tmp/`: a
//!    crash deletes it.
//! 3. **renamed**: `tmp/ID` → `queue/ID` without replacing, not yet synced ([`Renamed`]). A
//!    crash may keep it (whole or torn: moved to `corrupt/` at open) or lose it; no `K` was
//!    sent either way.
//! 4. **committed**: the committer's flush of its batch (one `syncfs`, or the files'
//!    `fdatasync`s and one fsync of `queue/`: [`Flush`]) returned ([`Renamed::commit`],
//!    [`Renamed::submit`] awaited, [`Spool::store`]'s answer). Now, and only now, answer `K`.
//!    No `state/ID` yet: every recipient pending.
//! 5. **delivering**: `state/ID` records each result ([`Spool::save_state`]) before it is acted
//!    upon; a crash repeats a delivery at worst, never skips one.
//! 6. **removed**: no recipient pending; `queue/ID` unlinked and `queue/` fsynced, then
//!    `state/ID` unlinked ([`Spool::remove`]). A crash in between leaves an orphan state
//!    file, deleted at the next open.
//!
//! ```no_run
//! # fn main() -> Result<(), nullq_spool::SpoolError> {
//! use nullq_spool::{Envelope, Spool};
//! let (spool, report) = Spool::open("/var/nullq")?;
//! eprintln!("{report}");
//! let mut incoming = spool.receive()?;
//! incoming.write(b"Received: from ...\n")?;
//! incoming.write(b"Subject: hi\n\nhello\n")?;
//! let envelope = Envelope {
//!     arrival: std::time::SystemTime::now(),
//!     client_addr: "192.0.2.7:4711".into(),
//!     client_host: String::new(),
//!     sender: b"me@example.org".to_vec(),
//!     recipients: vec![b"you@example.org".to_vec()],
//! };
//! let id = incoming.finish(&envelope)?.commit()?; // now answer K
//! assert!(spool.load(&id)?.state.any_pending());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod commit;
mod error;
pub mod fault;
mod flush;
mod format;
mod id;
mod incoming;
mod layout;
mod ledger;
mod reader;
mod recover;
mod reply;
mod spool;
mod state;
mod sys;
mod trigger;
mod writer;

pub use commit::{Committer, PendingCommit, PendingSync, Renamed};
pub use error::{SpoolError, Step};
pub use flush::Flush;
pub use format::Envelope;
pub use id::{BadQueueId, QueueId};
pub use incoming::Incoming;
pub use reader::{MessageBytes, MessageReader};
pub use recover::{CorruptFile, RecoveryReport, UnreadableFile};
pub use spool::{QueuedMessage, Spool};
pub use state::{DeliveryState, RecipientState, Status};
pub use trigger::{pull_trigger, TRIGGER};
pub use writer::is_being_written;

#[cfg(test)]
mod tests {
    /// The server shares a spool between tasks and moves receptions into `spawn_blocking`.
    #[test]
    fn types_cross_threads() {
        fn shared<T: Clone + Send + Sync>() {}
        fn sent<T: Send>() {}
        shared::<crate::Spool>();
        shared::<crate::Committer>();
        sent::<crate::Incoming>();
        sent::<crate::Renamed>();
        sent::<crate::PendingCommit>();
        sent::<crate::MessageReader>();
        sent::<crate::SpoolError>();
    }
}
