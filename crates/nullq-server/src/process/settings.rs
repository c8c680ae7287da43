//! The settings a server program runs with: the flags every subcommand shares
//! ([`CommonArgs`]), and the configuration they make: the embedded defaults, then the TOML file
//! (`--config`), then the flags (the flag wins), validated once it is finished.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use nullq_config::server::ServerConfig;

use crate::process::logging;
use crate::process::StartError;

/// Settings shared by `serve` and `qmqpd`; each overrides the config file.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Spool and state directory [default: ./nullq-data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Access rules: a tcprules text file or a tcprules-compiled cdb.
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// The server's name in Received lines [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Largest message in bytes [default: 10240000].
    #[arg(long, value_name = "BYTES")]
    pub(crate) databytes: Option<u64>,
    /// Most recipients per message [default: 1000].
    #[arg(long, value_name = "N")]
    pub(crate) max_recipients: Option<usize>,
    /// Most bytes of a refused request read before its D is answered [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub(crate) drain_bytes: Option<u64>,
    /// Seconds to wait for the client's next bytes [default: 300].
    #[arg(long, value_name = "SECS")]
    pub(crate) read_timeout: Option<u64>,
    /// Seconds a whole session may take [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub(crate) session_timeout: Option<u64>,
    /// Seconds a new connection may take to send its first byte [default: 10].
    #[arg(long, value_name = "SECS")]
    pub(crate) first_byte_timeout: Option<u64>,
    /// Least average rate of a request, in bytes a second, after the first-byte timeout
    /// [default: 500].
    #[arg(long, value_name = "BYTES")]
    pub(crate) min_data_rate: Option<u64>,
    /// Seconds to pause before a permanent refusal [default: 1].
    #[arg(long, value_name = "SECS")]
    pub(crate) error_delay: Option<u64>,
    /// Log destination: stderr, syslog or journald [default: stderr].
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log: Option<String>,
    /// What is logged, overriding log.level: a level (error, warn, info, debug, trace) or a
    /// tracing filter such as info,nullq::session=debug [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub(crate) log_level: Option<String>,
    /// Run as this user (name or uid), set before the runtime starts and before the spool or
    /// any client byte is touched (for `serve`, after binding).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Run as this group (name or gid) [default: the user's group].
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Supplementary groups to keep, comma-separated names or gids (e.g. the group of a
    /// CommuniGate Pro Submitted folder) [default: none].
    #[arg(long, value_name = "GROUP,...", value_delimiter = ',')]
    pub(crate) groups: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// The configuration: defaults, then the file, then the flags.
pub(crate) fn configure(common: &CommonArgs) -> Result<ServerConfig, StartError> {
    let mut config = match &common.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(d) = &common.data {
        config.data_dir.clone_from(d);
    }
    if let Some(r) = &common.rules {
        config.access.rules = Some(r.clone());
    }
    if let Some(h) = &common.hostname {
        config.hostname = Some(h.clone());
    }
    let limits = &mut config.limits;
    if let Some(v) = common.databytes {
        limits.databytes = v;
    }
    if let Some(v) = common.max_recipients {
        limits.max_recipients = v;
    }
    if let Some(v) = common.drain_bytes {
        limits.drain_bytes = v;
    }
    if let Some(v) = common.read_timeout {
        limits.read_timeout_secs = v;
    }
    if let Some(v) = common.session_timeout {
        limits.session_timeout_secs = v;
    }
    if let Some(v) = common.first_byte_timeout {
        limits.first_byte_timeout_secs = v;
    }
    if let Some(v) = common.min_data_rate {
        limits.min_data_rate = v;
    }
    if let Some(v) = common.error_delay {
        limits.error_delay_secs = v;
    }
    if common.user.is_some() {
        config.user.clone_from(&common.user);
    }
    if common.group.is_some() {
        config.group.clone_from(&common.group);
    }
    if !common.groups.is_empty() {
        config.groups.clone_from(&common.groups);
    }
    if let Some(level) = &common.log_level {
        config.log.level.clone_from(level);
    }
    if let Some(format) = &common.log {
        config.log.format = format.parse().map_err(StartError::LogFormat)?;
    }
    Ok(config)
}

/// `--log-level`: see [`check_log_level`]; a bad value is a usage error.
pub(crate) fn parse_log_level(text: &str) -> Result<String, LogLevelError> {
    check_log_level(text).map(|()| text.to_owned())
}

/// Why a log filter is refused ([`check_log_level`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LogLevelError {
    /// Empty, or only spaces.
    Empty,
    /// tracing-subscriber does not parse it.
    Filter(tracing_subscriber::filter::ParseError),
    /// A bare word (this one) that is not a level: tracing-subscriber would take it for a
    /// target.
    BareWord(String),
}

impl fmt::Display for LogLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HOW: &str = "write a level (error, warn, info, debug, trace, off) or directives \
                           such as \"info,nullq::session=debug\"";
        match self {
            LogLevelError::Empty => write!(f, "empty: write \"info\" for the default"),
            LogLevelError::Filter(e) => write!(f, "not a log filter ({e}): {HOW}"),
            LogLevelError::BareWord(word) => write!(
                f,
                "not a log filter ({word:?} is not a level; a target is written \
                 {word}=LEVEL): {HOW}"
            ),
        }
    }
}

impl std::error::Error for LogLevelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogLevelError::Filter(e) => Some(e),
            LogLevelError::Empty | LogLevelError::BareWord(_) => None,
        }
    }
}

/// A log filter the logger will take as meant: not empty, a filter that tracing-subscriber
/// parses, and no bare word that is not a level. tracing-subscriber reads a bare word such as
/// `verbose` as a target name (everything from a module called `verbose`, nothing else), so a
/// typo would silently log nothing; a target is written `TARGET=LEVEL`. Used for `--log-level`
/// and for the file's `log.level`.
pub fn check_log_level(text: &str) -> Result<(), LogLevelError> {
    if text.trim().is_empty() {
        return Err(LogLevelError::Empty);
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(text) {
        return Err(LogLevelError::Filter(e));
    }
    // Directives are split at every comma, as tracing-subscriber splits them.
    for directive in text.split(',') {
        let word = directive.trim();
        let bare = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':'));
        if bare && word.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(LogLevelError::BareWord(word.to_owned()));
        }
    }
    Ok(())
}

/// `--deliver TARGET`, when given, replaces the configured delivery target.
pub(crate) fn set_target(
    config: &mut ServerConfig,
    deliver: Option<&str>,
) -> Result<(), StartError> {
    if let Some(t) = deliver {
        config.delivery.target = Some(t.parse().map_err(StartError::DeliverTarget)?);
    }
    Ok(())
}

/// Validate the finished configuration; with `--print-config` print it and return `None` (the
/// command is done), else start logging and return it.
pub(crate) fn ready(
    config: ServerConfig,
    print_config: bool,
) -> Result<Option<ServerConfig>, StartError> {
    config.validate()?;
    // The file's log.level (a bad --log-level was refused by clap already).
    check_log_level(&config.log.level).map_err(StartError::LogLevel)?;
    if print_config {
        print!("{}", config.to_toml_masked());
        return Ok(None);
    }
    logging::init(&config.log.format, &config.log.level);
    Ok(Some(config))
}
