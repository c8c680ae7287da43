//! The operator's tools on a spool that a server may be running on: [`queue_tools`]
//! (`nullq queue list|show|retry|delete|stats`) and [`health`] (`nullq health`, a Nagios-style
//! check). They read the spool directly, take a message's lock before changing it, and wake the
//! runner through the spool's trigger socket.

pub mod health;
pub mod queue_scan;
pub mod queue_tools;
