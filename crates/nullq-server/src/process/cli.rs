//! The server's command line: `nullq serve`, `nullq qmqpd`, `nullq deliver`, `nullq queue` and
//! `nullq health`.
//!
//! Settings come from the embedded defaults, then the TOML file (`--config`), then flags: the
//! flag wins. Every subcommand returns an exit code; errors are one line on stderr saying what
//! failed and why.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use nullq_config::server::ServerConfig;
use nullq_spool::Spool;

use crate::delivery;
use crate::inbound::access::Access;
use crate::inbound::context::Context;
use crate::inbound::listener::{self, ConnectionLimits};
use crate::inbound::peer::Peer;
use crate::inbound::policy::Policy;
use crate::inbound::session;
use crate::metrics::Metrics;
use crate::process::{logging, privilege, shutdown};
use crate::rewriting::Rewriting;

#[derive(Debug, Parser)]
#[command(
    name = "nullq",
    version,
    about = "nullq: a QMQP mail server and mini-qmail-compatible null client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the QMQP server: listen, receive into the spool.
    Serve(ServeArgs),
    /// Serve one QMQP session on stdin/stdout (under tcpserver or inetd), like qmail-qmqpd.
    Qmqpd(CommonArgs),
    /// Deliver the queue (for sites that receive with `nullq qmqpd`); `serve` delivers itself.
    Deliver(DeliverArgs),
    /// Look at or change the queue: list, show, retry, delete, stats.
    Queue(crate::admin::queue_tools::QueueArgs),
    /// Check the queue and the spool like a Nagios plugin: one line, exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    Health(crate::admin::health::HealthArgs),
}

/// `nullq deliver`'s flags.
#[derive(Debug, Args)]
struct DeliverArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where messages go: maildir:DIR, cgp:DIR, smtp://HOST:PORT, smtps://HOST:PORT,
    /// pipe:'COMMAND ARGS', qmail-queue:PATH or none [default: maildir:DATA/delivered].
    #[arg(long, value_name = "TARGET")]
    deliver: Option<String>,
}

/// Settings shared by `serve` and `qmqpd`; each overrides the config file.
#[derive(Debug, Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Spool and state directory [default: ./nullq-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Access rules: a tcprules text file or a tcprules-compiled cdb.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// The server's name in Received lines [default: the host name].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Largest message in bytes [default: 10240000].
    #[arg(long, value_name = "BYTES")]
    databytes: Option<u64>,
    /// Most recipients per message [default: 1000].
    #[arg(long, value_name = "N")]
    max_recipients: Option<usize>,
    /// Most bytes of a refused request read before its D is answered [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    drain_bytes: Option<u64>,
    /// Seconds to wait for the client's next bytes [default: 300].
    #[arg(long, value_name = "SECS")]
    read_timeout: Option<u64>,
    /// Seconds a whole session may take [default: 3600].
    #[arg(long, value_name = "SECS")]
    session_timeout: Option<u64>,
    /// Seconds a new connection may take to send its first byte [default: 10].
    #[arg(long, value_name = "SECS")]
    first_byte_timeout: Option<u64>,
    /// Least average rate of a request, in bytes a second, after the first-byte timeout
    /// [default: 500].
    #[arg(long, value_name = "BYTES")]
    min_data_rate: Option<u64>,
    /// Seconds to pause before a permanent refusal [default: 1].
    #[arg(long, value_name = "SECS")]
    error_delay: Option<u64>,
    /// Log destination: stderr, syslog or journald [default: stderr].
    #[arg(long, value_name = "FORMAT")]
    log: Option<String>,
    /// What is logged, overriding log.level: a level (error, warn, info, debug, trace) or a
    /// tracing filter such as info,nullq::session=debug [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    log_level: Option<String>,
    /// Run as this user (name or uid), set before the runtime starts and before the spool or
    /// any client byte is touched (for `serve`, after binding).
    #[arg(long)]
    user: Option<String>,
    /// Run as this group (name or gid) [default: the user's group].
    #[arg(long)]
    group: Option<String>,
    /// Supplementary groups to keep, comma-separated names or gids (e.g. the group of a
    /// CommuniGate Pro Submitted folder) [default: none].
    #[arg(long, value_name = "GROUP,...", value_delimiter = ',')]
    groups: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on, IPv4 or [IPv6] with a port; repeat for more [default: 127.0.0.1:6628].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// Most sessions at once [default: 1000].
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Most sessions at once from one address [default: 100].
    #[arg(long, value_name = "N")]
    max_sessions_per_ip: Option<usize>,
    /// Where messages go: maildir:DIR, cgp:DIR, smtp://HOST:PORT, smtps://HOST:PORT,
    /// pipe:'COMMAND ARGS', qmail-queue:PATH or none [default: maildir:DATA/delivered].
    #[arg(long, value_name = "TARGET")]
    deliver: Option<String>,
    /// Serve GET /metrics (Prometheus text format) on this address, e.g. 127.0.0.1:9628;
    /// overrides metrics.listen [default: none, no metrics endpoint].
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
}

/// Run the server CLI on `args` (argv\[0\] included); returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    main_with(args, &[], "")
}

/// [`main`], with `nullq --help` also listing `others`, the subcommands the caller runs itself
/// before this CLI sees them (the client's `install` and `flush`: name, one line), and ending
/// with `after_help`.
pub fn main_with(
    args: &[OsString],
    others: &[(&'static str, &'static str)],
    after_help: &str,
) -> i32 {
    let mut command = Cli::command();
    for (name, about) in others {
        command = command.subcommand(clap::Command::new(*name).about(*about));
    }
    if !after_help.is_empty() {
        command = command.after_help(after_help.to_owned());
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A monitoring system reads a plugin's bad flags as UNKNOWN (3), not as a state.
            let health = args.get(1).and_then(|a| a.to_str()) == Some("health");
            return match (e.use_stderr(), health) {
                (false, _) => 0,
                (true, true) => crate::admin::health::UNKNOWN,
                (true, false) => 100,
            };
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Qmqpd(args) => qmqpd(args),
        Command::Deliver(args) => deliver(args),
        Command::Queue(args) => crate::admin::queue_tools::run(args),
        Command::Health(args) => return crate::admin::health::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nullq: fatal: {e}");
            111
        }
    }
}

/// The configuration: defaults, then the file, then the flags.
fn configure(common: &CommonArgs) -> Result<ServerConfig, String> {
    let mut config = match &common.config {
        Some(path) => ServerConfig::load(path).map_err(|e| e.to_string())?,
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
        config.log.format = format.parse()?;
    }
    Ok(config)
}

/// `--log-level`: see [`check_log_level`]; a bad value is a usage error.
fn parse_log_level(text: &str) -> Result<String, String> {
    check_log_level(text).map(|()| text.to_owned())
}

/// A log filter the logger will take as meant: not empty, a filter that tracing-subscriber
/// parses, and no bare word that is not a level. tracing-subscriber reads a bare word such as
/// `verbose` as a target name (everything from a module called `verbose`, nothing else), so a
/// typo would silently log nothing; a target is written `TARGET=LEVEL`. Used for `--log-level`
/// and for the file's `log.level`.
pub fn check_log_level(text: &str) -> Result<(), String> {
    const HOW: &str = "write a level (error, warn, info, debug, trace, off) or directives such \
                       as \"info,nullq::session=debug\"";
    if text.trim().is_empty() {
        return Err("empty: write \"info\" for the default".to_owned());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(text) {
        return Err(format!("not a log filter ({e}): {HOW}"));
    }
    // Directives are split at every comma, as tracing-subscriber splits them.
    for directive in text.split(',') {
        let word = directive.trim();
        let bare = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':'));
        if bare && word.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(format!(
                "not a log filter ({word:?} is not a level; a target is written \
                 {word}=LEVEL): {HOW}"
            ));
        }
    }
    Ok(())
}

/// `--deliver TARGET`, when given, replaces the configured delivery target.
fn set_target(config: &mut ServerConfig, deliver: Option<&str>) -> Result<(), String> {
    if let Some(t) = deliver {
        config.delivery.target = Some(t.parse().map_err(|e| format!("--deliver: {e}"))?);
    }
    Ok(())
}

/// Validate the finished configuration; with `--print-config` print it and return `None` (the
/// command is done), else start logging and return it.
fn ready(config: ServerConfig, print_config: bool) -> Result<Option<ServerConfig>, String> {
    config.validate().map_err(|e| e.to_string())?;
    // The file's log.level (a bad --log-level was refused by clap already).
    check_log_level(&config.log.level).map_err(|e| format!("configuration: log.level: {e}"))?;
    if print_config {
        print!("{}", config.to_toml_masked());
        return Ok(None);
    }
    logging::init(&config.log.format, &config.log.level);
    Ok(Some(config))
}

/// The tokio runtime: multi-threaded for the server and the runner, one thread for a `qmqpd`
/// session (one connection per process: more threads would only cost start-up time).
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn serve(args: ServeArgs) -> Result<i32, String> {
    let mut config = configure(&args.common)?;
    set_target(&mut config, args.deliver.as_deref())?;
    if !args.listen.is_empty() {
        config.listen = args
            .listen
            .iter()
            .map(|text| nullq_config::server::parse_listen(text))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    }
    if let Some(v) = args.max_sessions {
        config.limits.max_sessions = v;
    }
    if let Some(v) = args.max_sessions_per_ip {
        config.limits.max_sessions_per_ip = v;
    }
    if let Some(text) = &args.metrics_listen {
        config.metrics.listen =
            Some(nullq_config::server::parse_metrics_listen(text).map_err(|e| e.to_string())?);
    }
    let Some(mut config) = ready(config, args.common.print_config)? else {
        return Ok(0);
    };
    fit_sessions_to_descriptors(&mut config);
    // 1. Bind while we may still be root (port 628), and before any thread exists; or take
    //    the sockets systemd passed (socket activation: then no privilege is needed at all).
    let mut bound = crate::process::systemd::inherited_listeners()?;
    if bound.is_empty() {
        for &addr in &config.listen {
            let listener =
                privilege::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            bound.push(listener);
        }
    } else {
        tracing::info!(
            target: "nullq::server",
            "socket activation: {} listening socket(s) passed by systemd; `listen` is not used",
            bound.len()
        );
    }
    let metrics_bound = match config.metrics.listen {
        Some(addr) => {
            let listener = privilege::bind(addr)
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
            Some(listener)
        }
        None => None,
    };
    // 2. Drop privileges: still one thread, no spool opened, no client byte read.
    drop_privileges(&config)?;
    // 3. Only now the runtime and its threads.
    let runtime = runtime(true)?;
    runtime.block_on(run_server(config, bound, metrics_bound))
}

/// File descriptors kept for everything but sessions: listeners, logs, the spool's
/// directories and lock, the trigger socket, and a few for each delivery at once.
fn reserved_descriptors(config: &ServerConfig) -> u64 {
    64 + 8 * config.delivery.concurrency as u64
}

/// Raise the soft limit on open files to the hard one (the usual soft limit, 1024, is far too
/// few for a thousand sessions), then lower `limits.max_sessions` if even that cannot serve it,
/// saying so: running out of descriptors would fail accepts and spool files at random instead.
fn fit_sessions_to_descriptors(config: &mut ServerConfig) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(
                target: "nullq::server",
                "cannot raise the open file limit (RLIMIT_NOFILE) from {:?} to {:?}: {e}",
                limit.current,
                limit.maximum
            ),
        }
    }
    let Some(nofile) = limit.current else { return };
    let reserved = reserved_descriptors(config);
    let most = listener::sessions_for(nofile, reserved).max(1);
    if config.limits.max_sessions > most {
        tracing::warn!(
            target: "nullq::server",
            "limits.max_sessions lowered from {} to {most}: the open file limit \
             (RLIMIT_NOFILE) is {nofile}, and each session may need {} descriptors beside {reserved} \
             for the rest; raise it (LimitNOFILE= in systemd, ulimit -n) to serve more",
            config.limits.max_sessions,
            listener::FDS_PER_SESSION,
        );
        config.limits.max_sessions = most;
        config.limits.max_sessions_per_ip = config.limits.max_sessions_per_ip.min(most);
    }
}

/// Become the configured user (`user`, `group`, `groups`), if one is: see [`privilege`].
/// Called before the runtime is built, while the process has one thread.
fn drop_privileges(config: &ServerConfig) -> Result<(), String> {
    let id = privilege::configured(
        config.user.as_deref(),
        config.group.as_deref(),
        &config.groups,
    )?;
    match id {
        Some(id) => privilege::drop_to(&id),
        None => Ok(()),
    }
}

async fn run_server(
    config: ServerConfig,
    bound: Vec<std::net::TcpListener>,
    metrics_bound: Option<std::net::TcpListener>,
) -> Result<i32, String> {
    let listeners = bound
        .into_iter()
        .map(tokio::net::TcpListener::from_std)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot listen: {e}"))?;
    let metrics_listener = metrics_bound
        .map(tokio::net::TcpListener::from_std)
        .transpose()
        .map_err(|e| format!("cannot listen for metrics: {e}"))?;
    // 4. Open the spool: this is where crash leftovers are cleaned.
    let spool = open_spool(&config)?;
    let access = Arc::new(
        Access::load(config.access.rules.clone())
            .map_err(|e| format!("cannot load access rules: {e}"))?,
    );
    // 5. The delivery runner, told of every commit through the context.
    let policy = Arc::new(Policy::from_config(&config.policy)?);
    let metrics = Arc::new(Metrics::new());
    let runner = delivery::Runner::new(
        &config,
        spool.clone(),
        Arc::clone(policy.rewriting()),
        Arc::clone(&metrics),
        false,
    )?;
    let runner = (!runner.holds_everything()).then_some(runner);
    let mut context = Context::new(&config, spool);
    context.policy = policy;
    context.metrics = Arc::clone(&metrics);
    context.committed = runner.as_ref().map(delivery::Runner::notifier);
    let ctx = Arc::new(context);
    // Signals are handled before the ready line: whoever waits for it may send SIGTERM at once.
    // A failed commit (the spool's directory fsync) stops the server the same way.
    let (trigger, stop) = shutdown::channel();
    spawn_signal_handlers(trigger, Arc::clone(&access), Arc::clone(&ctx.poisoned))?;
    let watchdog = runner
        .is_none()
        .then(crate::process::systemd::Watchdog::from_env);
    spawn_poison_watch(Arc::clone(&ctx), watchdog);
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    // Serving before the ready line, which names its address (port 0 gets one of its own).
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::metrics::serve(
            l,
            metrics,
            ctx.spool.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        target: "nullq::server",
        listen = %bound.join(","),
        metrics = %crate::metrics::describe(metrics_addr),
        data = %config.data_dir.display(),
        access = %access.describe(),
        databytes = config.limits.databytes,
        "nullq serve ready"
    );
    crate::process::systemd::ready(&format!("accepting QMQP on {}", bound.join(",")));

    let limits = ConnectionLimits {
        max_sessions: config.limits.max_sessions,
        max_sessions_per_ip: config.limits.max_sessions_per_ip,
    };
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    let delivering = runner.map(|r| tokio::spawn(r.run(stop.clone(), grace)));
    let committer = ctx.committer.clone();
    let all_done = listener::serve(listeners, ctx, access, limits, stop, grace).await;
    if let Some(task) = delivering {
        let _ = task.await;
    }
    if !all_done {
        tracing::warn!(target: "nullq::server", "shut down with sessions still open after {}s; they got no answer", grace.as_secs());
    }
    if committer.is_poisoned() {
        // Exit non-zero so that the supervisor sees a failure (and restarts us: Restart=on-failure).
        // The failure itself was the one ERROR line; this says what followed.
        tracing::warn!(target: "nullq::server", "stopped after a failed commit; exit code {POISONED_EXIT}");
        return Ok(POISONED_EXIT);
    }
    if all_done {
        tracing::info!(target: "nullq::server", "shut down cleanly");
    }
    Ok(0)
}

/// `nullq serve`'s exit code after a failed commit (qmail's "temporary failure").
pub const POISONED_EXIT: i32 = 111;

fn open_spool(config: &ServerConfig) -> Result<Spool, String> {
    let (spool, report) = Spool::open(&config.data_dir).map_err(|e| {
        format!(
            "cannot open the spool in {}: {e}",
            config.data_dir.display()
        )
    })?;
    tracing::info!(target: "nullq::spool", "recovery: {report}");
    if let Some(n) = nullq_spool::fault::armed() {
        tracing::warn!(target: "nullq::spool", "fault injection: {}={n}: directory fsync {n} of the queue will fail with EIO (a debug build, for tests)", nullq_spool::fault::DIR_FSYNC);
    }
    for file in &report.corrupt {
        tracing::warn!(target: "nullq::spool", "recovery: {file}");
    }
    for file in &report.unreadable {
        tracing::error!(target: "nullq::spool", "recovery: {file}");
    }
    Ok(spool)
}

/// The spool for one `qmqpd` session. Many of these run at once beside a `nullq deliver`, so it
/// is attached without the lock and without recovery (which would delete the other sessions'
/// files in `tmp/`); only a spool that does not exist yet is created, with `open`.
fn attach_spool(config: &ServerConfig) -> Result<Spool, String> {
    let describe = |e: nullq_spool::SpoolError| {
        format!(
            "cannot open the spool in {}: {e}",
            config.data_dir.display()
        )
    };
    match Spool::attach(&config.data_dir) {
        Ok(spool) => Ok(spool),
        Err(e) if e.is_not_found() => {
            // First use: create it. A concurrent first session may hold the lock; then it has
            // created the directories, and attaching works.
            if let Err(e) = Spool::open(&config.data_dir) {
                tracing::debug!(target: "nullq::spool", "creating the spool: {e}");
            }
            Spool::attach(&config.data_dir).map_err(describe)
        }
        Err(e) => Err(describe(e)),
    }
}

/// A commit that failed outside a session (the runner queueing a bounce or a delay warning)
/// poisons the committer too, with no session to report it: look once a second, and report it
/// as a session would (the ERROR line, then the stop). The spool refuses to receive once
/// poisoned, and that refusal carries the first failure. With no delivery runner (every
/// target `none`), this loop keeps systemd's watchdog alive instead.
fn spawn_poison_watch(ctx: Arc<Context>, mut watchdog: Option<crate::process::systemd::Watchdog>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            if let Some(w) = watchdog.as_mut() {
                w.pet();
            }
            if ctx.committer.is_poisoned() {
                match ctx.spool.receive() {
                    Err(e) => ctx.commit_failed(&e),
                    // Not expected; still stop rather than take mail on a poisoned spool.
                    Ok(_) => ctx.poisoned.notify_one(),
                }
                return;
            }
        }
    });
}

/// SIGTERM and SIGINT start shutdown, and so does `poisoned` (a failed commit, already logged);
/// SIGHUP reloads the access rules.
fn spawn_signal_handlers(
    trigger: shutdown::Trigger,
    access: Arc<Access>,
    poisoned: Arc<tokio::sync::Notify>,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("signals: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("signals: {e}"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("signals: {e}"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(target: "nullq::server", "SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!(target: "nullq::server", "SIGINT: shutting down"),
            _ = poisoned.notified() => tracing::info!(target: "nullq::server", "a commit failed: shutting down"),
        }
        trigger.fire();
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match access.reload() {
                Ok(()) => {
                    tracing::info!(target: "nullq::server", "SIGHUP: access rules reloaded from {}", access.describe())
                }
                Err(e) => {
                    tracing::error!(target: "nullq::server", "SIGHUP: access rules NOT reloaded, keeping the old ones: {e}")
                }
            }
        }
    });
    Ok(())
}

/// `nullq qmqpd`: one session on stdin/stdout, the client described by tcpserver's environment.
fn qmqpd(args: CommonArgs) -> Result<i32, String> {
    let Some(mut config) = ready(configure(&args)?, args.print_config)? else {
        return Ok(0);
    };
    let peer = peer_from_env();
    // tcpserver has applied its own rules (-x); rules in our config are checked as well.
    if config.access.rules.is_some() {
        let access = Access::load(config.access.rules.clone())
            .map_err(|e| format!("cannot load access rules: {e}"))?;
        if let Some(ip) = peer.ip {
            let decision = access.check(ip, Some(&peer.host));
            if !decision.allow {
                tracing::info!(target: "nullq::session", client = %ip, answer = "-", reason = "denied by access rules; connection closed");
                return Ok(0);
            }
        }
    }
    if config.hostname.is_none() {
        // qmail-qmqpd: TCPLOCALHOST, else TCPLOCALIP, else `unknown`.
        config.hostname = Some(
            tcp_env("TCPLOCALHOST")
                .or_else(|| tcp_env("TCPLOCALIP"))
                .unwrap_or_else(|| "unknown".to_owned()),
        );
    }
    // tcpserver -u/-g usually dropped root already; a configured user is applied as well.
    drop_privileges(&config)?;
    let runtime = runtime(false)?;
    runtime.block_on(async {
        let spool = attach_spool(&config)?;
        let mut context = Context::new(&config, spool);
        context.policy = Arc::new(Policy::from_config(&config.policy)?);
        let ctx = Arc::new(context);
        let mut io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        let outcome = session::run(&mut io, &peer, ctx, &session::Progress::new()).await;
        outcome.log(&peer);
        Ok(0)
    })
}

/// The client as tcpserver describes it: TCPREMOTEIP, TCPREMOTEHOST (else `unknown`),
/// TCPREMOTEINFO, and the variables its rule set, which are ordinary environment variables by
/// now.
fn peer_from_env() -> Peer {
    let ip_text = tcp_env("TCPREMOTEIP");
    let ip = ip_text.as_deref().and_then(|s| s.parse().ok());
    let host = tcp_env("TCPREMOTEHOST").unwrap_or_else(|| "unknown".to_owned());
    let info = tcp_env("TCPREMOTEINFO");
    // The variables the policy reads (tcprules set them for this client).
    let env = crate::inbound::policy::ENV_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    Peer {
        ip,
        host,
        ip_text,
        info,
        env,
    }
}

/// A variable tcpserver set, byte by byte: ASCII as it is, every other byte as `?`. qmail-qmqpd
/// takes these values as bytes and writes each unsafe byte as `?`, so a name that is not UTF-8
/// is not lost (as `unknown`) but shows the same `?` qmail's Received line would.
fn tcp_env(name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let value = std::env::var_os(name)?;
    Some(
        value
            .as_bytes()
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect(),
    )
}

/// `nullq deliver`: the delivery runner alone, on a spool that `nullq qmqpd` sessions fill.
/// It opens the spool (lock, recovery) and looks for new messages every `poll_interval_ms`.
fn deliver(args: DeliverArgs) -> Result<i32, String> {
    let mut config = configure(&args.common)?;
    set_target(&mut config, args.deliver.as_deref())?;
    let Some(config) = ready(config, args.common.print_config)? else {
        return Ok(0);
    };
    // The configured user; without one, as root, the spool's owner (so that the pipe: and
    // qmail-queue: targets never run as root by accident, and what it writes the server can
    // read). Before the runtime, while there is one thread.
    if config.user.is_some() {
        drop_privileges(&config)?;
    } else if let Some(owner) = privilege::spool_owner(&config.data_dir)? {
        privilege::drop_to(&owner)?;
    }
    let runtime = runtime(true)?;
    runtime.block_on(async {
        let spool = open_spool(&config)?;
        let rewriting = Arc::new(Rewriting::from_config(&config.policy)?);
        // Counted for nothing: only `nullq serve` has a metrics endpoint.
        let metrics = Arc::new(Metrics::new());
        let runner = delivery::Runner::new(&config, spool, rewriting, metrics, true)?;
        let (trigger, stop) = shutdown::channel();
        // No sessions here, so nothing commits: the notify is never notified.
        let never = Arc::new(tokio::sync::Notify::new());
        spawn_signal_handlers(trigger, Arc::new(Access::allow_all()), never)?;
        runner
            .run(stop, Duration::from_secs(config.shutdown_timeout_secs))
            .await;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nullq").chain(args.iter().copied()))
    }

    fn common(cli: Cli) -> CommonArgs {
        match cli.command {
            Command::Serve(a) => a.common,
            Command::Qmqpd(a) => a,
            Command::Deliver(a) => a.common,
            Command::Queue(_) | Command::Health(_) => panic!("no common options"),
        }
    }

    #[test]
    fn log_level_overrides_the_default_and_the_file() {
        let c = common(parse(&["serve", "--log-level", "info,nullq::session=debug"]).unwrap());
        let config = configure(&c).unwrap();
        assert_eq!(config.log.level, "info,nullq::session=debug");
        config.validate().unwrap();
        assert!(
            config
                .to_toml_string()
                .contains("level = \"info,nullq::session=debug\""),
            "{}",
            config.to_toml_string()
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nullq.toml");
        std::fs::write(&file, "[log]\nlevel = \"warn\"\n").unwrap();
        let file = file.to_str().unwrap();
        let c = common(parse(&["serve", "--config", file]).unwrap());
        assert_eq!(configure(&c).unwrap().log.level, "warn");
        for sub in ["serve", "qmqpd", "deliver"] {
            let c = common(parse(&[sub, "--config", file, "--log-level", "debug"]).unwrap());
            assert_eq!(configure(&c).unwrap().log.level, "debug", "{sub}");
        }
        let c = common(parse(&["serve"]).unwrap());
        assert_eq!(configure(&c).unwrap().log.level, "info");
    }

    #[test]
    fn a_bad_log_level_is_a_usage_error() {
        for bad in ["", " ", "nullq=loud", "info,nullq::session=verbose", "[{"] {
            let e = parse(&["serve", "--log-level", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
            let text = e.to_string();
            assert!(text.contains("--log-level"), "{text}");
            assert!(
                text.contains("not a log filter") || text.contains("empty"),
                "{text}"
            );
        }
        let args: Vec<OsString> = ["nullq", "serve", "--log-level", "nullq=loud"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(main(&args), 100);
    }

    #[test]
    fn a_bare_word_must_be_a_level() {
        for good in [
            "info",
            "WARN",
            "off",
            "trace",
            "nullq=debug",
            "info,nullq::session=debug",
            "warn,[admitted{client}]=debug",
            "[span{a}]=trace",
        ] {
            assert_eq!(check_log_level(good), Ok(()), "{good:?}");
        }
        for bad in [
            "verbose",
            "info,verbose",
            "nullq",
            "nullq::session",
            " loud ",
        ] {
            let e = check_log_level(bad).unwrap_err();
            assert!(e.contains("is not a level"), "{bad:?}: {e}");
        }
        let e = parse(&["serve", "--log-level", "verbose"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn a_bad_log_level_in_the_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nullq.toml");
        std::fs::write(&file, "[log]\nlevel = \"verbose\"\n").unwrap();
        let file = file.to_str().unwrap();
        for sub in ["serve", "qmqpd", "deliver"] {
            let c = common(parse(&[sub, "--config", file]).unwrap());
            let e = ready(configure(&c).unwrap(), true).unwrap_err();
            assert!(
                e.starts_with("configuration: log.level: not a log filter (\"verbose\""),
                "{sub}: {e}"
            );
            // The flag replaces the file's value.
            let c = common(parse(&[sub, "--config", file, "--log-level", "info"]).unwrap());
            assert!(ready(configure(&c).unwrap(), true).is_ok(), "{sub}");
        }
    }

    #[test]
    fn log_level_is_in_the_help() {
        let e = parse(&["serve", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        assert!(help.contains("--log-level <LEVEL>"), "{help}");
        assert!(help.contains("log.level"), "{help}");
    }
}
