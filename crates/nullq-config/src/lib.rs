//! The server's configuration, `nullq.toml` ([`server`]): one module per section, each value
//! (addresses, networks, modes, targets) typed as it is read, the defaults and the checks on
//! the finished configuration. Its only user is `nullq-server`.
//!
//! The qmail control files of the null client live with the client (`nullq_client::control`);
//! the access rules a server's file names (ucspi-tcp's tcprules, text and cdb) are the
//! `nullq-tcprules` crate's.

pub mod server;
