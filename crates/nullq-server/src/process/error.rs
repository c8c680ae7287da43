//! [`StartError`]: everything that stops `nullq serve`, `qmqpd` or `deliver` before it serves
//! or delivers, and the exit code each means. [`crate::process::cli`] prints it as
//! `nullq: fatal: {error}` and exits with [`StartError::exit_code`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use nullq_config::server::ConfigError;
use nullq_spool::SpoolError;
use nullq_tcprules::RulesError;

use crate::delivery::routes::RoutesError;
use crate::inbound::tls::TlsError;
use crate::process::logging::LogLevelError;
use crate::process::privilege::PrivilegeError;
use crate::process::systemd::ActivationError;
use crate::rewriting::RewritingError;

/// Why a server program could not start. Each names what failed and why, in the words the
/// operator reads after `nullq: fatal: `.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration file, or a flag checked as its key would be (`--listen`,
    /// `--metrics-listen`), or the finished configuration.
    Config(ConfigError),
    /// The file's `log.level` (a bad `--log-level` is refused by the command line).
    LogLevel(LogLevelError),
    /// `--log` is not a log destination (the configuration's text for it).
    LogFormat(String),
    /// `--deliver` is not a delivery target (the configuration's text for it).
    DeliverTarget(String),
    /// The sockets systemd passed cannot be served.
    Activation(ActivationError),
    /// A QMQP address could not be listened on (`addr`: when binding; none: when handing the
    /// listener to the runtime).
    Listen {
        /// The address.
        addr: Option<SocketAddr>,
        /// The system's error.
        source: io::Error,
    },
    /// The metrics address could not be listened on (as [`StartError::Listen`]).
    MetricsListen {
        /// The address.
        addr: Option<SocketAddr>,
        /// The system's error.
        source: io::Error,
    },
    /// The user, group and groups to run as could not be found or taken.
    Privilege(PrivilegeError),
    /// The tokio runtime could not be built.
    Runtime(io::Error),
    /// The spool could not be opened (or, for `qmqpd`, attached).
    Spool {
        /// The spool directory.
        dir: PathBuf,
        /// The spool's error.
        source: SpoolError,
    },
    /// The access rules could not be loaded.
    Access(RulesError),
    /// The rewriting records (of the admission policy or the delivery runner) could not be read.
    Rewriting(RewritingError),
    /// A delivery target's backend could not be built.
    Routes(RoutesError),
    /// The signal handlers could not be installed.
    Signals(io::Error),
    /// The TLS certificate, key or client CA (`[tls]`) could not be loaded.
    Tls(TlsError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::LogLevel(e) => write!(f, "configuration: log.level: {e}"),
            StartError::LogFormat(problem) => f.write_str(problem),
            StartError::DeliverTarget(problem) => write!(f, "--deliver: {problem}"),
            StartError::Activation(e) => e.fmt(f),
            StartError::Listen { addr, source } => match addr {
                Some(addr) => write!(f, "cannot listen on {addr}: {source}"),
                None => write!(f, "cannot listen: {source}"),
            },
            StartError::MetricsListen { addr, source } => match addr {
                Some(addr) => write!(f, "cannot listen for metrics on {addr}: {source}"),
                None => write!(f, "cannot listen for metrics: {source}"),
            },
            StartError::Privilege(e) => e.fmt(f),
            StartError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            StartError::Spool { dir, source } => {
                write!(f, "cannot open the spool in {}: {source}", dir.display())
            }
            StartError::Access(e) => write!(f, "cannot load access rules: {e}"),
            StartError::Rewriting(e) => e.fmt(f),
            StartError::Routes(e) => e.fmt(f),
            StartError::Signals(e) => write!(f, "signals: {e}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // These show the inner error's text as their own: what lies under it is its source.
            StartError::Config(e) => std::error::Error::source(e),
            StartError::Activation(e) => std::error::Error::source(e),
            StartError::Privilege(e) => std::error::Error::source(e),
            StartError::Rewriting(e) => std::error::Error::source(e),
            StartError::Routes(e) => std::error::Error::source(e),
            StartError::LogFormat(_) | StartError::DeliverTarget(_) => None,
            StartError::LogLevel(e) => Some(e),
            StartError::Listen { source, .. }
            | StartError::MetricsListen { source, .. }
            | StartError::Runtime(source)
            | StartError::Signals(source) => Some(source),
            StartError::Spool { source, .. } => Some(source),
            StartError::Access(e) => Some(e),
            StartError::Tls(e) => Some(e),
        }
    }
}

impl StartError {
    /// The exit code: 111 for every start-up failure, qmail's "temporary failure" (a
    /// supervisor restarts the service; nothing was received or delivered). Each kind is
    /// named, so that a new one has to be decided here.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_)
            | StartError::LogLevel(_)
            | StartError::LogFormat(_)
            | StartError::DeliverTarget(_)
            | StartError::Activation(_)
            | StartError::Listen { .. }
            | StartError::MetricsListen { .. }
            | StartError::Privilege(_)
            | StartError::Runtime(_)
            | StartError::Spool { .. }
            | StartError::Access(_)
            | StartError::Rewriting(_)
            | StartError::Routes(_)
            | StartError::Signals(_)
            | StartError::Tls(_) => 111,
        }
    }
}

impl From<TlsError> for StartError {
    fn from(e: TlsError) -> StartError {
        StartError::Tls(e)
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> StartError {
        StartError::Config(e)
    }
}

impl From<ActivationError> for StartError {
    fn from(e: ActivationError) -> StartError {
        StartError::Activation(e)
    }
}

impl From<PrivilegeError> for StartError {
    fn from(e: PrivilegeError) -> StartError {
        StartError::Privilege(e)
    }
}

impl From<RulesError> for StartError {
    fn from(e: RulesError) -> StartError {
        StartError::Access(e)
    }
}

impl From<RewritingError> for StartError {
    fn from(e: RewritingError) -> StartError {
        StartError::Rewriting(e)
    }
}

impl From<RoutesError> for StartError {
    fn from(e: RoutesError) -> StartError {
        StartError::Routes(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_codes() {
        let io = || io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        let addr: SocketAddr = "192.0.2.1:628".parse().unwrap();
        let cases = [
            (
                StartError::Listen {
                    addr: Some(addr),
                    source: io(),
                },
                "cannot listen on 192.0.2.1:628: ",
            ),
            (
                StartError::Listen {
                    addr: None,
                    source: io(),
                },
                "cannot listen: ",
            ),
            (
                StartError::MetricsListen {
                    addr: Some(addr),
                    source: io(),
                },
                "cannot listen for metrics on 192.0.2.1:628: ",
            ),
            (StartError::Runtime(io()), "cannot start the runtime: "),
            (StartError::Signals(io()), "signals: "),
            (StartError::DeliverTarget("bad".into()), "--deliver: bad"),
            (StartError::LogFormat("bad".into()), "bad"),
            (
                StartError::Privilege(PrivilegeError::UnknownUser("x".into())),
                "unknown user \"x\"",
            ),
        ];
        for (e, start) in cases {
            assert!(e.to_string().starts_with(start), "{e} / {start}");
            assert_eq!(e.exit_code(), 111, "{e}");
        }
    }
}
