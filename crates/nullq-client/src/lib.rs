//! The null client: everything that runs on a host that sends mail, on the left of the data path
//! (`cron/mutt/Pine → sendmail → qmail-inject → qmail-qmqpc ══QMQP══▶ server`).
//!
//! Synchronous on purpose: cron starts one of these per message on every host, so there is no
//! async runtime, no thread pool and no configuration parsing beyond the qmail control files.
//! Each program is one module with one entry point, `main(args) -> exit code`, and the multi-call
//! binary picks it by `argv[0]` (see [`program`]).
//!
//! The programs, one module each:
//! - [`sendmail`]: `sendmail`, `mailq`, `newaliases` (qmail's wrapper), with [`smtp_stdio`] for
//!   `sendmail -bs`;
//! - [`qmail_inject`]: `qmail-inject`, the program around `nullq_mail::injector`'s rewriting;
//! - [`qmqpc`]: `qmail-qmqpc`/`qmail-queue` (the qmail-queue interface) and `nullq flush`;
//! - [`showctl`]: `qmail-showctl`, the configuration and what it will do;
//! - [`programs`]: `predate`, `datemail`, `mailsubj`, `forward`, `elq`, `pinq`, `qail`;
//! - [`maildir_tools`]: `maildirmake`, `maildir2mbox`, `maildirwatch`;
//! - [`install`]: `nullq install`, the mini-qmail layout.
//!
//! What they share, below them:
//! - [`transport`]: one message offered to the QMQP servers in turn (`send`), with [`tls`]
//!   for `qmqps://` servers;
//! - [`server_memory`]: the host's memory of failed servers, which reorders that turn, and
//!   [`server_memory_session`]: its settings and one run's use of it;
//! - [`fallback`]: the fallback queue a message waits in when every server fails;
//! - [`smtp_relay`]: the `smtp://` lines of `qmqpservers`, SMTP to a relay as a last resort;
//! - [`control`]: the qmail control files, with qmail's defaults and environment overrides;
//! - [`syslog`], [`calendar`], [`errstr`], [`startfds`]: the log line, dates, qmail's error
//!   words, the descriptors closed at start.
//!
//! Errors are typed where a module hands them to another (`transport::ConfigError`,
//! `control::ServerLineError`, `qmail_inject::InjectError`); each program turns them into
//! qmail's exit codes at its edge.

pub mod calendar;
pub mod control;
pub mod errstr;
pub mod fallback;
pub mod install;
pub mod maildir_tools;
pub mod programs;
pub mod qmail_inject;
pub mod qmqpc;
pub mod sendmail;
pub mod server_memory;
pub mod server_memory_session;
pub mod showctl;
pub mod smtp_relay;
pub mod smtp_stdio;
pub mod startfds;
pub mod syslog;
pub mod tls;
pub mod transport;

use std::ffi::OsString;

/// The subcommands of `nullq` that are client programs (dispatched before the server's CLI),
/// with the line `nullq --help` shows for each; `nullq help NAME` and `nullq NAME --help` print
/// each one's own help.
pub const SUBCOMMANDS: &[(&str, &str)] = &[
    (
        "install",
        "Lay out a mini-qmail host: /var/qmail/bin links, control files, man pages",
    ),
    (
        "flush",
        "Send what waits in the client's fallback queue to the QMQP servers",
    ),
];

/// The entry point of one client program: its whole argv (argv\[0\] included), returns the exit code.
pub type Program = fn(&[OsString]) -> i32;

/// Find the client program called `name` (a basename such as `sendmail` or `qmail-inject`).
///
/// Returns `None` for names that are not client programs, so the caller can try the server's
/// subcommands.
pub fn program(name: &str) -> Option<Program> {
    Some(match name {
        "sendmail" | "mailq" | "newaliases" => sendmail::main,
        "qmail-inject" => qmail_inject::main,
        "qmail-qmqpc" | "qmail-queue" => qmqpc::main,
        "qmail-showctl" => showctl::main,
        "predate" => programs::predate,
        "datemail" => programs::datemail,
        "mailsubj" => programs::mailsubj,
        "forward" => programs::forward,
        "elq" | "pinq" | "qail" => programs::mua_wrapper,
        "maildirmake" => maildir_tools::maildirmake,
        "maildir2mbox" => maildir_tools::maildir2mbox,
        "maildirwatch" => maildir_tools::maildirwatch,
        "flush" => qmqpc::flush,
        "install" => install::main,
        _ => return None,
    })
}
