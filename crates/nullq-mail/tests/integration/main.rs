//! The integration tests of nullq-mail, in one test binary: property tests of the RFC 822
//! tokenizer and of qmail-inject's rewriting engine, through the public API.
//!
//! - [`inject_props`]: any header field, recipient or control value is accepted or refused
//!   with qmail's error, never a panic, and the output keeps one field per line;
//! - [`token822_props`]: the tokenizer never panics, and what it emits is a fixed point.
//!
//! Each module's proptest failures are saved (and replayed first) from the
//! `<module>.proptest-regressions` file beside it.

mod inject_props;
mod token822_props;
