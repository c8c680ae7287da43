//! The process edge: what turns the library into the `nullq serve`, `qmqpd`, `deliver`,
//! `queue` and `health` programs. [`cli`] (the command line and its exit codes), one module per
//! program ([`serve`], [`qmqpd`], [`deliver`]), [`settings`] (flags and configuration),
//! [`start`] (the start-up steps they share, signals),
//! [`logging`] (stderr, syslog, journald), [`privilege`] (dropping root after binding),
//! [`shutdown`] (graceful shutdown as values), [`systemd`] (socket activation, readiness,
//! watchdog); [`StartError`], why a program could not start, and its exit code.

pub mod cli;
pub mod deliver;
mod error;
pub mod logging;
pub mod privilege;
pub mod qmqpd;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod start;
pub mod systemd;

pub use error::StartError;
