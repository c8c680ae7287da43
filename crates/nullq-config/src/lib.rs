//! Configuration, one source per module:
//! - [`control`]: the qmail control files of the null client (`/var/qmail/control/*`) with qmail's
//!   defaults and environment overrides;
//! - [`tcprules`]: ucspi-tcp access rules (text and cdb), the server's access control,
//!   looked up in tcpserver's order;
//! - [`cdb`]: a reader for the constant database `tcprules` compiles rules into;
//! - [`server`]: the server's TOML file, its defaults and validation.

pub mod cdb;
pub mod control;
pub mod server;
pub mod tcprules;
