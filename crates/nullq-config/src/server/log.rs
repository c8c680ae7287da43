//! `[log]`: where log lines go ([`LogFormat`]) and the least severe level logged. The level is
//! a `tracing` filter, checked by the server, which has the filter's parser.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Where log lines go. Default `stderr` (for svc/multilog, runit or systemd to collect, as
    /// qmail-qmqpd's stderr is).
    pub format: LogFormat,
    /// The least severe level logged: `error`, `warn`, `info`, `debug` or `trace`, or a
    /// `tracing` filter such as `info,nullq::session=debug`. Default `info`. The server checks
    /// it at start: a bare word that is not a level (`verbose`) is refused.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Stderr,
            level: "info".to_owned(),
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain lines on standard error.
    #[default]
    Stderr,
    /// The local syslog (facility mail, each line at its event's priority), as Postfix logs.
    Syslog,
    /// The systemd journal, with fields.
    Journald,
}

impl FromStr for LogFormat {
    type Err = String;

    /// `stderr`, `syslog` or `journald`, as `--log` takes them.
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "stderr" => Ok(LogFormat::Stderr),
            "syslog" => Ok(LogFormat::Syslog),
            "journald" => Ok(LogFormat::Journald),
            other => Err(format!(
                "unknown log format {other:?} (stderr, syslog, journald)"
            )),
        }
    }
}
