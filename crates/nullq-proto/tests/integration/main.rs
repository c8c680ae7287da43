//! The integration tests of nullq-proto, in one test binary: the QMQP codec through its public
//! API, and the bounded fuzz run of the cargo-fuzz targets in the workspace's `fuzz/`.
//!
//! - [`fuzz`]: each cargo-fuzz target for a fixed time under libFuzzer (nightly, cargo-fuzz);
//! - [`qmqp`]: the request decoder against a table of good and bad requests, and property tests.
//!
//! Run one module with `cargo test -p nullq-proto --test integration qmqp::`.

mod fuzz;
mod qmqp;
