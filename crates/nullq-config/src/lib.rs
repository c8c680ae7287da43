//! Configuration, one source per module:
//! - [`control`]: the qmail control files of the null client (`/var/qmail/control/*`) with qmail's
//!   defaults and environment overrides;
//! - [`server`]: the server's TOML file (`nullq.toml`), one module per section, its defaults
//!   and validation.
//!
//! The access rules a server's file names (ucspi-tcp's tcprules, text and cdb) are the
//! `nullq-tcprules` crate's.

pub mod control;
pub mod server;
