//! Receiving: `nullq serve` and `nullq qmqpd` take QMQP requests into the spool.

mod flood;
mod metrics;
mod poison;
mod powercut;
mod qmqp;
mod qmqpd_cases;
mod setup;
mod systemd;
mod tcpserver;
mod tls;
