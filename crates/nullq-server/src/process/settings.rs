//! The settings a server program runs with: the flags every subcommand shares
//! ([`CommonArgs`]), and the configuration they make: the embedded defaults, then the TOML file
//! (`--config`), then the flags (the flag wins), validated once it is finished.

use std::path::PathBuf;

use clap::Args;
use nullq_config::server::ServerConfig;

use crate::process::logging::{self, check_log_level, LogLevelError};
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
    /// How a batch of received messages is made durable: auto, files or filesystem
    /// [default: auto].
    #[arg(long, value_name = "MODE")]
    pub(crate) spool_flush: Option<nullq_config::server::SpoolFlush>,
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
    /// Worker threads for the sessions (`serve`) and the attempts (`deliver`); 0: half the
    /// cores, at least one [default: 0]. `qmqpd` runs one session on one thread.
    #[arg(long, value_name = "N")]
    pub(crate) runtime_threads: Option<usize>,
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
    if let Some(f) = common.spool_flush {
        config.spool_flush = f;
    }
    if let Some(n) = common.runtime_threads {
        config.runtime_threads = n;
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

/// `--log-level`: see [`logging::check_log_level`]; a bad value is a usage error.
pub(crate) fn parse_log_level(text: &str) -> Result<String, LogLevelError> {
    check_log_level(text).map(|()| text.to_owned())
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
