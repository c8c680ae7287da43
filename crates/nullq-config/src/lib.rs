//! Configuration, one source per module:
//! - [`tcprules`]: ucspi-tcp access rules (text and cdb), the server's access control,
//!   looked up in tcpserver's order;
//! - [`cdb`]: a reader for the constant database `tcprules` compiles rules into;
//! - [`server`]: the server's TOML file, its defaults and validation.

pub mod cdb;
pub mod server;
pub mod tcprules;
