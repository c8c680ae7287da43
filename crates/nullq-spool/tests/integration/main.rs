//! The integration tests of nullq-spool, in one test binary: the public `Spool` API on real
//! directories (on the disk of `target/`, so every fsync is real), with one support module.
//!
//! - [`concurrency`]: many threads at once: group commit, and ids across two spools;
//! - [`flush_mode`]: which batch flush `auto` takes where, and where `filesystem` is refused;
//! - [`full_disk`]: a full disk, for real, on a 64 KiB tmpfs (needs root);
//! - [`fuse_flush`]: a power cut under a FUSE mount, where `syncfs` syncs nothing (needs root,
//!   bindfs);
//! - [`recovery`]: what `open` does with what a crash left behind, and the lock;
//! - [`roundtrip`]: receive → finish → commit → list/load/message, small to 20 MB;
//! - [`state`]: delivery state round trips, and remove.
//!
//! Run one module with `cargo test -p nullq-spool --test integration recovery::`.

mod support;

mod concurrency;
mod flush_mode;
mod full_disk;
mod fuse_flush;
mod recovery;
mod roundtrip;
mod state;
