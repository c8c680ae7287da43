//! The integration tests of nullq-config, in one test binary: configuration as files on disk.
//!
//! - [`server_config`]: the shipped `docs/nullq.toml.example` loads, and errors name file,
//!   line and column.
//!
//! Run one module with `cargo test -p nullq-config --test integration server_config::`.

mod server_config;
