//! Receiving: `nullq serve` and `nullq qmqpd` take QMQP requests into the spool.

mod powercut;
mod qmqp;
mod setup;
mod tcpserver;
