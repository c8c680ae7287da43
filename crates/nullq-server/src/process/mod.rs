//! The process edge: what turns the library into the `nullq serve`, `qmqpd`, `deliver`,
//! `queue` and `health` programs. [`cli`] (command line, start-up order, signals, exit codes),
//! [`logging`] (stderr, syslog, journald), [`privilege`] (dropping root after binding),
//! [`shutdown`] (graceful shutdown as values), [`systemd`] (socket activation, readiness,
//! watchdog).

pub mod cli;
pub mod logging;
pub mod privilege;
pub mod shutdown;
pub mod systemd;
