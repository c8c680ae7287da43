//! The integration tests of nullq-spool, in one test binary: the public `Spool` API on real
//! directories (on the disk of `target/`, so every fsync is real), with one support module.
//!
//! - [`concurrency`]: many threads at once: group commit, and ids across two spools;
//! - [`full_disk`]: a full disk, for real, on a 64 KiB tmpfs (needs root);
//! - [`recovery`]: what `open` does with what a crash left behind, and the lock;
//! - [`roundtrip`]: receive → finish → commit → list/load/message, small to 20 MB;
//! - [`state`]: delivery state round trips, and remove.
//!
//! Run one module with `cargo test -p nullq-spool --test integration recovery::`.

mod support;

mod concurrency;
mod full_disk;
mod recovery;
mod roundtrip;
mod state;
