//! The null client: the programs `nullq install` links, talking to QMQP servers.

mod fallback;
mod forward_cases;
mod help;
mod inject;
mod install;
mod maildir_cases;
mod mailname;
mod man;
mod postfix;
mod predate_cases;
mod programs;
mod qmqpc;
mod qmqpc_cases;
mod qmqps;
mod sendmail;
mod server_memory;
mod smtp_relay;
mod syslog;
mod to_server;
