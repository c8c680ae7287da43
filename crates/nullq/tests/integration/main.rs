//! The integration tests of nullq: the real `nullq` binary, run as a server and under every
//! program name of the null client, against real peers from Debian's packages (Postfix's
//! qmqp-source, qmqp-sink, smtp-sink and a private Postfix; ucspi-tcp's tcpserver and
//! tcprules; mutt and bsd-mailx), in one test binary with one support module. Grouped by the
//! data path:
//!
//! - [`server`]: receiving over QMQP into the spool (`nullq serve`, `nullq qmqpd`);
//! - [`delivery`]: from the spool to Maildir, CommuniGate Pro, SMTP, pipe and qmail-queue
//!   targets, and the queue tools;
//! - [`client`]: the null client (`sendmail`, `qmail-inject`, `qmail-qmqpc`, ...) and `install`;
//! - [`packaging`]: the systemd units and the Debian packages' metadata.
//!
//! Run one group with `cargo test -p nullq --test integration server::`. Tests that need root
//! (mounts, private Postfix instances) fail rather than skip without it: `scripts/test` is the
//! way to run the suite.

mod support;

mod architecture;

mod client;
mod delivery;
mod packaging;
mod server;
