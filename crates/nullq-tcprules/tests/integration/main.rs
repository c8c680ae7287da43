//! The integration tests of nullq-tcprules, in one test binary:
//!
//! - [`tcprules_real`]: our tcprules parser, cdb reader and lookup against ucspi-tcp's own
//!   `tcprules` and `tcprulescheck` (which fail, not skip, when missing).
//!
//! Run one module with `cargo test -p nullq-tcprules --test integration tcprules_real::`.

mod tcprules_real;
