//! Configuration, one source per module:
//! - [`control`]: the qmail control files of the null client (`/var/qmail/control/*`) with qmail's
//!   defaults and environment overrides;
//! - `tcprules`: ucspi-tcp access rules (text and cdb), the server's access control;
//! - `server`: the server's TOML file, its defaults and validation.

pub mod control;
