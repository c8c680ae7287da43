//! The QMQP server's TOML configuration (`nullq serve --config nullq.toml`): its keys, their
//! defaults, and the checks a loaded file must pass.
//!
//! This module owns the file's shape only. The access rules a file names are read by
//! [`crate::tcprules`]; the `[delivery]` table is kept opaque here and read by the delivery
//! code. Every key is optional: an empty file is the default configuration, and
//! `docs/nullq.toml.example` lists every key with its default. Unknown keys are refused, so a
//! misspelt key is an error instead of a setting silently not applied.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole server configuration. Every field has a default (see each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on, `IP:PORT` each. Default `["127.0.0.1:6628"]` (QMQP's port is
    /// 628, which needs root to bind; the default is unprivileged and local). Mirrors the
    /// address and port arguments of `tcpserver` (`tcpserver ... 0 628`) and Postfix's
    /// `master.cf` service address for `qmqpd`.
    pub listen: Vec<String>,
    /// The spool directory. Default `./nullq-data`. Mirrors qmail's queue directory
    /// (`/var/qmail/queue`) and Postfix's `queue_directory`.
    pub data_dir: PathBuf,
    /// The name this server gives itself in `Received:` headers. Default: unset, meaning the
    /// machine's host name at run time (see [`ServerConfig::local_name`]). Mirrors qmail's
    /// `control/me` (qmail-qmqpd writes `$TCPLOCALHOST`) and Postfix's `myhostname`.
    pub hostname: Option<String>,
    /// The user to run as after binding the listeners. Default: unset (stay who we are).
    /// Mirrors `tcpserver -u` (the seed runs `tcpserver -u 1009`) and Postfix's
    /// `mail_owner`.
    pub user: Option<String>,
    /// The group to run as after binding the listeners. Default: unset (the user's primary
    /// group when `user` is set). Mirrors `tcpserver -g`.
    pub group: Option<String>,
    /// Who may connect. Default: loopback clients only.
    pub access: AccessConfig,
    /// Size and time limits.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Seconds to let open connections finish after a shutdown signal before closing them.
    /// Default 30. Mirrors the grace svc/systemd give a service before `SIGKILL`.
    pub shutdown_timeout_secs: u64,
    /// How messages leave the spool. Default: an empty table. Kept opaque here: the delivery
    /// code defines and checks its keys. Mirrors qmail's `qmail-queue` hand-off (the seed's
    /// `cgp-submit`) and Postfix's transports.
    pub delivery: toml::Table,
}

/// Access control: which clients may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// A rules file in ucspi-tcp's format: rules text (`/etc/qmqp.tcp`) or the cdb `tcprules`
    /// compiles from it (`/etc/qmqp.cdb`); see [`crate::tcprules::Rules::load`] for how the
    /// two are told apart. Default: unset, meaning allow 127.0.0.0/8 and `::1` and deny the
    /// rest ([`crate::tcprules::Rules::loopback_only`]). Mirrors `tcpserver -x
    /// /etc/qmqp.cdb` and Postfix's `qmqpd_authorized_clients`.
    pub rules: Option<PathBuf>,
}

/// Size, count and time limits. Each mirrors the qmail-qmqpd or Postfix qmqpd behaviour named
/// on the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest message accepted, in bytes (the message netstring's length). Default
    /// 10 240 000, Postfix's `message_size_limit`; qmail's `control/databytes` (0 there means
    /// no limit; here it must be more than 0).
    pub databytes: u64,
    /// The most recipients in one message. Default 1000, as Postfix's
    /// `smtpd_recipient_limit`; qmail-qmqpd has no limit but the message's size.
    pub max_recipients: usize,
    /// The longest sender or recipient address accepted, in bytes; a longer one is read,
    /// thrown away, and the message refused with `D` (#5.1.3). Default 999: qmail-qmqpd
    /// refuses addresses of 1000 bytes or more.
    pub max_address_len: usize,
    /// Seconds a read may wait for the client before the connection is dropped. Default 300,
    /// Postfix's `qmqpd_timeout`.
    pub read_timeout_secs: u64,
    /// Seconds a whole session may last. Default 3600, qmail-qmqpd's `alarm(3600)`.
    pub session_timeout_secs: u64,
    /// The most connections served at once; more wait to be accepted. Default 1000. Mirrors
    /// `tcpserver -c` (40 by default there) and Postfix's `default_process_limit`.
    pub max_sessions: usize,
    /// The most connections at once from one IP address; more are refused. Default 100.
    /// Mirrors Postfix's `smtpd_client_connection_count_limit` (tcpserver has none).
    pub max_sessions_per_ip: usize,
    /// Seconds to wait before answering a protocol error. Default 1, Postfix's
    /// `qmqpd_error_delay`.
    pub error_delay_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            databytes: 10_240_000,
            max_recipients: 1000,
            max_address_len: 999,
            read_timeout_secs: 300,
            session_timeout_secs: 3600,
            max_sessions: 1000,
            max_sessions_per_ip: 100,
            error_delay_secs: 1,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Where log lines go. Default `stderr` (for svc/multilog, runit or systemd to collect, as
    /// qmail-qmqpd's stderr is).
    pub format: LogFormat,
    /// The least severe level logged: `error`, `warn`, `info`, `debug` or `trace`, or a
    /// `tracing` filter such as `info,nullq_server=debug`. Default `info`.
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
    /// The local syslog (facility mail), as Postfix logs.
    Syslog,
    /// The systemd journal, with fields.
    Journald,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec!["127.0.0.1:6628".to_owned()],
            data_dir: PathBuf::from("./nullq-data"),
            hostname: None,
            user: None,
            group: None,
            access: AccessConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            shutdown_timeout_secs: 30,
            delivery: toml::Table::new(),
        }
    }
}

/// Why a configuration could not be used. Each names the file (when there is one), where in
/// it, and what is wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The file is not valid TOML, or has a key or value this configuration does not take.
    Parse {
        /// The file, when read by [`ServerConfig::load`].
        path: Option<PathBuf>,
        /// Line of the error, from 1, when known.
        line: Option<usize>,
        /// Column of the error, from 1, when known.
        column: Option<usize>,
        /// The TOML parser's message (for an unknown key it lists the keys allowed).
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    Invalid {
        /// The file, when read by [`ServerConfig::load`].
        path: Option<PathBuf>,
        /// The key, dotted (`limits.databytes`).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "{}: cannot read configuration: {source}", path.display())
            }
            ConfigError::Parse {
                path,
                line,
                column,
                message,
            } => {
                match path {
                    Some(p) => write!(f, "{}", p.display())?,
                    None => write!(f, "configuration")?,
                }
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                    if let Some(column) = column {
                        write!(f, ":{column}")?;
                    }
                }
                write!(f, ": {message}")
            }
            ConfigError::Invalid { path, key, problem } => {
                match path {
                    Some(p) => write!(f, "{}: ", p.display())?,
                    None => write!(f, "configuration: ")?,
                }
                write!(f, "{key}: {problem}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ConfigError {
    fn with_path(mut self, p: &Path) -> ConfigError {
        match &mut self {
            ConfigError::Read { .. } => {}
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                *path = Some(p.to_path_buf())
            }
        }
        self
    }
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl ServerConfig {
    /// Reads, parses and [validates](ServerConfig::validate) a configuration file. Errors
    /// name the file and, for TOML errors, the line and column.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::from_toml_str(&text).map_err(|e| e.with_path(path))
    }

    /// Parses and [validates](ServerConfig::validate) configuration text.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                path: None,
                line,
                column,
                message: e.message().trim_end().replace('\n', "; "),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, every key included (for `nullq serve --print-config`).
    pub fn to_toml_string(&self) -> String {
        // Only a path that is not UTF-8 cannot be written as TOML: then say so in the output
        // instead of panicking.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }

    /// Checks values that parse but cannot work: an empty or unparsable `listen`, a zero
    /// limit, `max_sessions_per_ip` above `max_sessions`, an empty `hostname`, `user` or
    /// `group`, an empty `data_dir`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "no address to listen on"));
        }
        for addr in &self.listen {
            if addr.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "listen",
                    format!("{addr:?} is not IP:PORT (write \"0.0.0.0:628\" or \"[::]:628\")"),
                ));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "empty path"));
        }
        for (key, value) in [
            ("hostname", &self.hostname),
            ("user", &self.user),
            ("group", &self.group),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(key, "empty: leave the key out for the default"));
            }
        }
        if let Some(h) = &self.hostname {
            if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "hostname",
                    format!("{h:?} has blanks or control characters"),
                ));
            }
        }
        if self
            .access
            .rules
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "access.rules",
                "empty path: leave the key out for loopback only",
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.databytes", l.databytes),
            ("limits.max_recipients", l.max_recipients as u64),
            ("limits.max_address_len", l.max_address_len as u64),
            ("limits.read_timeout_secs", l.read_timeout_secs),
            ("limits.session_timeout_secs", l.session_timeout_secs),
            ("limits.max_sessions", l.max_sessions as u64),
            ("limits.max_sessions_per_ip", l.max_sessions_per_ip as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if l.max_sessions_per_ip > l.max_sessions {
            return Err(invalid(
                "limits.max_sessions_per_ip",
                format!(
                    "{} is more than limits.max_sessions ({})",
                    l.max_sessions_per_ip, l.max_sessions
                ),
            ));
        }
        if l.read_timeout_secs > l.session_timeout_secs {
            return Err(invalid(
                "limits.read_timeout_secs",
                format!(
                    "{} is more than limits.session_timeout_secs ({})",
                    l.read_timeout_secs, l.session_timeout_secs
                ),
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid(
                "log.level",
                "empty: write \"info\" for the default",
            ));
        }
        Ok(())
    }

    /// The name for `Received:` headers: `hostname` when set, else the machine's host name
    /// (`gethostname(2)`), else `localhost` when even that cannot be had.
    pub fn local_name(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => machine_hostname().unwrap_or_else(|| "localhost".to_owned()),
        }
    }
}

/// The machine's host name from `gethostname(2)`; `None` on failure or when empty or not
/// UTF-8.
pub fn machine_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call;
    // gethostname writes at most that many bytes into it and does not keep the pointer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves truncated names possibly unterminated: take up to the first NUL, if any.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = ServerConfig::from_toml_str("").unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.listen, ["127.0.0.1:6628"]);
        assert_eq!(c.data_dir, PathBuf::from("./nullq-data"));
        assert_eq!(c.limits.databytes, 10_240_000);
        assert_eq!(c.limits.max_recipients, 1000);
        assert_eq!(c.limits.max_address_len, 999);
        assert_eq!(c.limits.read_timeout_secs, 300);
        assert_eq!(c.limits.session_timeout_secs, 3600);
        assert_eq!(c.limits.max_sessions, 1000);
        assert_eq!(c.limits.max_sessions_per_ip, 100);
        assert_eq!(c.limits.error_delay_secs, 1);
        assert_eq!(c.log.format, LogFormat::Stderr);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.shutdown_timeout_secs, 30);
        assert!(c.delivery.is_empty());
        assert_eq!(c.access.rules, None);
        c.validate().unwrap();
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let c =
            ServerConfig::from_toml_str("[limits]\ndatabytes = 5\n[log]\nformat = \"journald\"\n")
                .unwrap();
        assert_eq!(c.limits.databytes, 5);
        assert_eq!(c.limits.max_recipients, 1000);
        assert_eq!(c.log.format, LogFormat::Journald);
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn unknown_key_names_line_and_alternatives() {
        let e =
            ServerConfig::from_toml_str("listen = [\"127.0.0.1:628\"]\n\n[limits]\ndatabyte = 5\n")
                .unwrap_err();
        match &e {
            ConfigError::Parse { line, message, .. } => {
                assert_eq!(*line, Some(4));
                assert!(message.contains("unknown field `databyte`"), "{message}");
                assert!(message.contains("databytes"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("configuration:4:1: unknown field `databyte`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_values() {
        let e = ServerConfig::from_toml_str("[log]\nformat = \"file\"\n").unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { line: Some(2), .. }),
            "{e:?}"
        );
        let e = ServerConfig::from_toml_str("shutdown_timeout_secs = \"30\"\n").unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { line: Some(1), .. }),
            "{e:?}"
        );
    }

    #[test]
    fn validation_errors_name_the_key() {
        let cases = [
            ("listen = []", "listen"),
            ("listen = [\"localhost:628\"]", "listen"),
            ("listen = [\"127.0.0.1\"]", "listen"),
            ("data_dir = \"\"", "data_dir"),
            ("hostname = \"\"", "hostname"),
            ("hostname = \"a b\"", "hostname"),
            ("user = \" \"", "user"),
            ("[access]\nrules = \"\"", "access.rules"),
            ("[limits]\ndatabytes = 0", "limits.databytes"),
            ("[limits]\nmax_recipients = 0", "limits.max_recipients"),
            ("[limits]\nmax_address_len = 0", "limits.max_address_len"),
            ("[limits]\nmax_sessions = 10", "limits.max_sessions_per_ip"),
            (
                "[limits]\nmax_sessions_per_ip = 0",
                "limits.max_sessions_per_ip",
            ),
            (
                "[limits]\nread_timeout_secs = 7200",
                "limits.read_timeout_secs",
            ),
            ("[log]\nlevel = \"\"", "log.level"),
        ];
        for (text, want) in cases {
            match ServerConfig::from_toml_str(text) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = ServerConfig::from_toml_str("[limits]\nmax_sessions = 10").unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: limits.max_sessions_per_ip: 100 is more than limits.max_sessions (10)"
        );
    }

    #[test]
    fn delivery_is_any_table() {
        let c = ServerConfig::from_toml_str(
            "[delivery]\nkind = \"pipe\"\n[delivery.pipe]\ncommand = [\"/bin/true\"]\nretries = 3\n",
        )
        .unwrap();
        assert_eq!(c.delivery["kind"].as_str(), Some("pipe"));
        assert!(c.delivery["pipe"].is_table());
    }

    #[test]
    fn print_config_round_trips() {
        let mut c = ServerConfig {
            hostname: Some("mail.example.net".into()),
            access: AccessConfig {
                rules: Some(PathBuf::from("/etc/qmqp.cdb")),
            },
            ..Default::default()
        };
        c.delivery
            .insert("kind".into(), toml::Value::String("maildir".into()));
        let text = c.to_toml_string();
        assert_eq!(ServerConfig::from_toml_str(&text).unwrap(), c);
        // The defaults print every key that has a value.
        let text = ServerConfig::default().to_toml_string();
        for key in [
            "listen",
            "data_dir",
            "databytes",
            "error_delay_secs",
            "format",
            "shutdown_timeout_secs",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
    }

    #[test]
    fn local_name() {
        let mut c = ServerConfig::default();
        assert!(!c.local_name().is_empty());
        if let Some(h) = machine_hostname() {
            assert_eq!(c.local_name(), h);
        }
        c.hostname = Some("qmqp.example.net".into());
        assert_eq!(c.local_name(), "qmqp.example.net");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
