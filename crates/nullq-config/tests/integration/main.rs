//! The integration tests of nullq-config, in one test binary: configuration as files on disk.
//!
//! - [`server_config`]: the shipped `docs/nullq.toml.example` loads, and errors name file,
//!   line and column;
//! - [`tcprules_real`]: our tcprules parser, cdb reader and lookup against ucspi-tcp's own
//!   `tcprules` and `tcprulescheck` (which fail, not skip, when missing).
//!
//! Run one module with `cargo test -p nullq-config --test integration tcprules_real::`.

mod server_config;
mod tcprules_real;
