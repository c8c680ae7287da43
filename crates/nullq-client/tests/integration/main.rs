//! The integration tests of nullq-client, in one test binary: the qmail-inject and
//! qmail-showctl libraries the client programs run, on control files in temporary homes.
//!
//! - [`inject_cases`]: qmail-inject case by case, each output as notqmail's qmail-inject wrote it;
//! - [`inject_rewrite`]: nullq's additions: `control/rewrite`, the header limit, option parsing;
//! - [`inject_showctl`]: qmail-showctl's report, its warnings, and `--check`'s connection test.
//!
//! Run one module with `cargo test -p nullq-client --test integration inject_cases::`.

mod inject_cases;
mod inject_rewrite;
mod inject_showctl;
