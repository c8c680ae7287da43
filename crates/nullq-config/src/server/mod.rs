//! The QMQP server's TOML configuration (`nullq serve --config nullq.toml`): its keys, their
//! defaults, and the checks a loaded file must pass.
//!
//! This module owns the file's shape only. The access rules a file names are read by
//! `nullq-tcprules`; `[delivery]` ([`DeliveryConfig`]: targets, routes, retries, bounces)
//! and `[policy]` ([`PolicyConfig`]: senders, relaying, rewriting) are typed here and applied by
//! the server's delivery runner and policy. Every key is optional: an empty file is the default
//! configuration, and `docs/nullq.toml.example` lists every key with its default. Unknown keys
//! are refused, so a misspelt key is an error instead of a setting silently not applied.

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
    /// Supplementary groups to keep after dropping root (names or numbers), e.g. the group of
    /// a CommuniGate Pro Submitted folder. Default: none (`setgroups` to the empty list).
    /// Needs `user`.
    pub groups: Vec<String>,
    /// Who may connect. Default: loopback clients only.
    pub access: AccessConfig,
    /// Size and time limits.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Seconds to let open connections finish after a shutdown signal before closing them.
    /// Default 30. Mirrors the grace svc/systemd give a service before `SIGKILL`.
    pub shutdown_timeout_secs: u64,
    /// How messages leave the spool: target, per-domain routes, retries, bounces. Mirrors
    /// qmail's `qmail-queue` hand-off (the seed's `cgp-submit`) and Postfix's transports.
    pub delivery: DeliveryConfig,
    /// What each client may send (senders, relaying) and how addresses are rewritten.
    pub policy: PolicyConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: `nullq serve`'s Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `nullq serve` answers `GET /metrics` in the Prometheus text format, `IP:PORT`
    /// (`--metrics-listen`). Default: unset, meaning no metrics endpoint. It has no access
    /// rules of its own: give a loopback or management address. Mirrors Postfix's (none) and
    /// the usual exporters' `--web.listen-address`.
    pub listen: Option<String>,
}

/// Access control: which clients may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// A rules file in ucspi-tcp's format: rules text (`/etc/qmqp.tcp`) or the cdb `tcprules`
    /// compiles from it (`/etc/qmqp.cdb`); see `nullq_tcprules::Rules::load` for how the
    /// two are told apart. Default: unset, meaning allow 127.0.0.0/8 and `::1` and deny the
    /// rest (`nullq_tcprules::Rules::loopback_only`). Mirrors `tcpserver -x
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
    /// The most bytes of a refused request (over `databytes` or another limit) read and thrown
    /// away so that the client, still sending, can read its `D`; past it the `D` is answered at
    /// once and the connection closed. Default 104 857 600 (100 MiB): ten times the default
    /// `databytes`, so a message a few times too big is refused politely, while a client that
    /// announces a terabyte costs at most this much bandwidth (no memory, no disk), and no more
    /// time than the read and session timeouts. Never less, in effect, than the largest request
    /// the limits allow (`databytes` plus the largest envelope), which is always read.
    pub drain_bytes: u64,
    /// Seconds a read may wait for the client before the connection is dropped. Default 300,
    /// Postfix's `qmqpd_timeout`.
    pub read_timeout_secs: u64,
    /// Seconds a whole session may last. Default 3600, qmail-qmqpd's `alarm(3600)`.
    pub session_timeout_secs: u64,
    /// Seconds a new connection may take to send its first byte, and the start of the time
    /// `min_data_rate` allows. Default 10: a QMQP client sends its request as soon as it is
    /// connected, so a connection that says nothing for this long is only holding a slot.
    /// Separate from `read_timeout_secs`, which bounds a pause in a transfer under way; never
    /// more, in effect, than `session_timeout_secs`.
    pub first_byte_timeout_secs: u64,
    /// The least average rate, in bytes a second, at which a request must arrive: a session
    /// may take `first_byte_timeout_secs` plus one second for every `min_data_rate` bytes
    /// received so far (never more than `session_timeout_secs`), and when every slot is taken,
    /// the session furthest below this rate gives its slot to a new connection (it is answered
    /// `Z`). Default 500, Postfix's `smtpd_min_data_rate`. So a client sending a byte every two
    /// seconds holds a slot for about `first_byte_timeout_secs`, not for the session's hour.
    pub min_data_rate: u64,
    /// The most sessions at once; a connection over it is refused with `Z`, unless a session
    /// below `min_data_rate` can give up its slot. Default 1000. Mirrors `tcpserver -c` (40
    /// by default there) and Postfix's `default_process_limit`. Lowered at start, with a
    /// warning, when the file descriptor limit (raised to its hard limit) cannot serve it.
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
            drain_bytes: 104_857_600,
            read_timeout_secs: 300,
            session_timeout_secs: 3600,
            first_byte_timeout_secs: 10,
            min_data_rate: 500,
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

/// Where messages go: one delivery target, written as `--deliver` takes it.
///
/// - `maildir:DIR`: a Maildir (the embedded default, `DATA_DIR/delivered`);
/// - `cgp:DIR`: CommuniGate Pro's Submitted folder (`ID.tmp` renamed to `ID.sub`);
/// - `smtp://HOST:PORT`, `smtps://HOST:PORT`: a smarthost (port default 25 and 465);
/// - `pipe:COMMAND ARGS`: a command per message (`%s` sender, `%r` recipients);
/// - `qmail-queue:PATH`: a qmail-queue-compatible program;
/// - `none`: keep messages in the queue (no delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// Deliver into this Maildir.
    Maildir(PathBuf),
    /// Write into this CommuniGate Pro Submitted folder.
    Cgp(PathBuf),
    /// Send to an SMTP smarthost.
    Smtp {
        /// `smtps://`: TLS from the first byte (else plain, with STARTTLS per the config).
        implicit_tls: bool,
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// Run this command (program and arguments, split as a shell would on blanks and quotes,
    /// without running a shell).
    Pipe(Vec<String>),
    /// Run this qmail-queue-compatible program.
    QmailQueue(PathBuf),
    /// Keep messages queued.
    Hold,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let path = |rest: &str, what: &str| {
            if rest.is_empty() {
                Err(format!("{what}: needs a path, e.g. {what}:/var/spool/x"))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        if s == "none" {
            return Ok(Target::Hold);
        }
        if let Some(rest) = s.strip_prefix("maildir:") {
            return path(rest, "maildir").map(Target::Maildir);
        }
        if let Some(rest) = s.strip_prefix("cgp:") {
            return path(rest, "cgp").map(Target::Cgp);
        }
        if let Some(rest) = s.strip_prefix("qmail-queue:") {
            return path(rest, "qmail-queue").map(Target::QmailQueue);
        }
        if let Some(rest) = s.strip_prefix("pipe:") {
            let argv = split_command(rest)?;
            if argv.is_empty() {
                return Err(
                    "pipe: needs a command, e.g. pipe:'/usr/sbin/sendmail -f %s %r'".into(),
                );
            }
            // One argument per recipient is the only unambiguous form: a recipient may hold a
            // comma or a blank, so a list joined inside a word could not be split back.
            if let Some(word) = argv.iter().find(|w| *w != "%r" && w.contains("%r")) {
                return Err(format!(
                    "pipe: {word:?}: %r must be an argument of its own (it becomes one argument per recipient)"
                ));
            }
            return Ok(Target::Pipe(argv));
        }
        for (scheme, implicit_tls, default_port) in
            [("smtp://", false, 25), ("smtps://", true, 465)]
        {
            if let Some(rest) = s.strip_prefix(scheme) {
                let rest = rest.trim_end_matches('/');
                let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                    let (host, after) = v6
                        .split_once(']')
                        .ok_or_else(|| format!("{s:?}: no closing ] after the IPv6 address"))?;
                    (host, after.strip_prefix(':'))
                } else {
                    match rest.rsplit_once(':') {
                        Some((h, p)) => (h, Some(p)),
                        None => (rest, None),
                    }
                };
                if host.is_empty() || host.contains(['/', ' ', '@']) {
                    return Err(format!("{s:?}: bad host"));
                }
                let port = match port {
                    None => default_port,
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| format!("{s:?}: bad port {p:?}"))?,
                };
                return Ok(Target::Smtp {
                    implicit_tls,
                    host: host.to_owned(),
                    port,
                });
            }
        }
        Err(format!(
            "{s:?} is not a delivery target (maildir:DIR, cgp:DIR, smtp://HOST:PORT, smtps://HOST:PORT, pipe:COMMAND, qmail-queue:PATH, none)"
        ))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Maildir(p) => write!(f, "maildir:{}", p.display()),
            Target::Cgp(p) => write!(f, "cgp:{}", p.display()),
            Target::QmailQueue(p) => write!(f, "qmail-queue:{}", p.display()),
            Target::Hold => f.write_str("none"),
            Target::Smtp {
                implicit_tls,
                host,
                port,
            } => {
                let scheme = if *implicit_tls { "smtps" } else { "smtp" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}")
                } else {
                    write!(f, "{scheme}://{host}:{port}")
                }
            }
            Target::Pipe(argv) => {
                f.write_str("pipe:")?;
                for (n, arg) in argv.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" ")?;
                    }
                    if arg.is_empty()
                        || arg.contains(|c: char| {
                            c.is_whitespace() || c == '\'' || c == '"' || c == '\\'
                        })
                    {
                        write!(f, "'{}'", arg.replace('\'', "'\\''"))?;
                    } else {
                        f.write_str(arg)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Target, String> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl Target {
    /// The backend's name in logs and statistics (`maildir`, `cgp`, `smtp`, `pipe`,
    /// `qmail-queue`, `none`).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Maildir(_) => "maildir",
            Target::Cgp(_) => "cgp",
            Target::Smtp { .. } => "smtp",
            Target::Pipe(_) => "pipe",
            Target::QmailQueue(_) => "qmail-queue",
            Target::Hold => "none",
        }
    }
}

/// What [`ServerConfig::to_toml_masked`] shows in place of a secret.
pub const HIDDEN: &str = "(hidden)";

/// Splits a command line as a shell would split words: blanks separate, `'...'` and `"..."`
/// quote, `\` escapes the next character (outside single quotes). Nothing is expanded.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("{s:?}: unclosed '")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err(format!("{s:?}: \\ at the end")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("{s:?}: unclosed \"")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("{s:?}: \\ at the end")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// `[delivery]`: how messages leave the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Where messages go unless a route says otherwise. Default: unset, meaning
    /// `maildir:DATA_DIR/delivered` (so the first `nullq serve` shows mail arriving). The
    /// `--deliver` flag sets it. qmail's `qmail-queue` hand-off; Postfix's `default_transport`.
    pub target: Option<Target>,
    /// Per recipient domain: `"example.net" = "cgp:/var/CommuniGate/Submitted"`. A key
    /// `example.net` matches that domain only; `.example.net` any domain below it. Letters match
    /// without regard to case; the most specific key wins. Postfix's `transport_maps`,
    /// qmail's `smtproutes`.
    pub routes: std::collections::BTreeMap<String, Target>,
    /// Messages delivered at once. Default 20. qmail's `concurrencyremote`, Postfix's
    /// `default_destination_concurrency_limit`.
    pub concurrency: usize,
    /// Seconds a recipient may stay undelivered before it bounces. Default 604800 (7 days,
    /// qmail's `queuelifetime`, Postfix's `maximal_queue_lifetime` is 5 days).
    pub queue_lifetime_secs: u64,
    /// First retry delay in seconds. Default 60. Postfix's `minimal_backoff_time`.
    pub retry_min_secs: u64,
    /// Longest retry delay in seconds. Default 3600. Postfix's `maximal_backoff_time`.
    pub retry_max_secs: u64,
    /// Seconds after arrival to warn the sender of a delay (once). Default 0: never, as
    /// Postfix's `delay_warning_time`.
    pub delay_warning_secs: u64,
    /// Where a bounce that cannot be delivered goes (a double bounce). Default: unset, meaning
    /// logged and dropped. qmail's `doublebounceto`.
    pub postmaster: Option<String>,
    /// For `nullq deliver` beside `nullq qmqpd`: how often to look for new messages, in
    /// milliseconds. Default 500. (`nullq serve` is told at once.)
    pub poll_interval_ms: u64,
    /// How often the runner rescans the whole queue in seconds, the safety net for a message
    /// whose announcement was lost (a missed trigger, a commit by another process). Default 60.
    pub rescan_secs: u64,
    /// Test knob: queue time runs this many times faster than real time (retry delays, queue
    /// lifetime, warnings). Default 1. Only for tests; never set it in production.
    pub time_scale: u32,
    /// The `smtp://` and `smtps://` client.
    pub smtp: SmtpConfig,
    /// The `cgp:` Submitted folder writer.
    pub cgp: CgpConfig,
    /// The `pipe:` and `qmail-queue:` programs.
    pub program: ProgramConfig,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            target: None,
            routes: std::collections::BTreeMap::new(),
            concurrency: 20,
            queue_lifetime_secs: 7 * 24 * 3600,
            retry_min_secs: 60,
            retry_max_secs: 3600,
            delay_warning_secs: 0,
            postmaster: None,
            poll_interval_ms: 500,
            rescan_secs: 60,
            time_scale: 1,
            smtp: SmtpConfig::default(),
            cgp: CgpConfig::default(),
            program: ProgramConfig::default(),
        }
    }
}

/// When the SMTP client uses STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Only deliver over TLS, with a verified certificate (Postfix `secure`).
    Required,
    /// Use TLS when offered, without verifying the certificate (Postfix `may`).
    #[default]
    Opportunistic,
    /// Never (Postfix `none`).
    Off,
}

/// `[delivery.smtp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// STARTTLS: `required`, `opportunistic` or `off`. Default `opportunistic`.
    pub starttls: StartTls,
    /// Verify the server's certificate when TLS is required or implicit (`smtps://`).
    /// Default true.
    pub tls_verify: bool,
    /// Trusted certificates (PEM) for verification. Default: the system's
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<PathBuf>,
    /// AUTH user name; with `password`, AUTH PLAIN (or LOGIN if that is all the server offers).
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// Allow AUTH over a connection without TLS. Default false.
    pub auth_without_tls: bool,
    /// The name in EHLO. Default: the server's `hostname`.
    pub helo: Option<String>,
    /// Seconds to wait for a connection. Default 30.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for each reply (and for the final reply after the message). Default 300.
    pub timeout_secs: u64,
    /// Messages sent over one connection before it is closed. Default 100.
    pub max_messages_per_connection: u32,
    /// Seconds an idle connection is kept for the next message. Default 10.
    pub idle_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            starttls: StartTls::Opportunistic,
            tls_verify: true,
            ca_file: None,
            username: None,
            password: None,
            auth_without_tls: false,
            helo: None,
            connect_timeout_secs: 30,
            timeout_secs: 300,
            max_messages_per_connection: 100,
            idle_secs: 10,
        }
    }
}

/// `[delivery.cgp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgpConfig {
    /// Mode of the `.sub` files, octal. Default `"0640"` (CommuniGate Pro's group reads).
    pub mode: String,
    /// Group of the `.sub` files (name or number), so CommuniGate Pro's user can read and
    /// remove them. Default: unset (the process's group).
    pub group: Option<String>,
    /// What to do with an `ID.bad` file (a submission CommuniGate Pro could not process).
    /// Default `"bounce"`.
    pub on_bad: OnBad,
}

/// `[delivery.cgp] on_bad`: what becomes of a submission CommuniGate Pro renamed to `.bad`
/// (by then it has left nullq's queue). Each is logged at ERROR and counted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBad {
    /// Bounce it to its sender (from the file's `Return-Path:` and `Envelope-To:` fields;
    /// the null sender gets none), then rename the file to `ID.bad.done`.
    #[default]
    Bounce,
    /// Leave the file for the operator (it is logged and listed by `nullq queue stats`).
    Keep,
}

impl Default for CgpConfig {
    fn default() -> CgpConfig {
        CgpConfig {
            mode: "0640".to_owned(),
            group: None,
            on_bad: OnBad::Bounce,
        }
    }
}

impl CgpConfig {
    /// The file mode as a number (validated by [`ServerConfig::validate`]).
    pub fn mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
    }
}

/// `[delivery.program]`: the `pipe:` and `qmail-queue:` children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramConfig {
    /// Seconds a child may run before it is killed and the delivery retried. Default 300.
    pub timeout_secs: u64,
}

impl Default for ProgramConfig {
    fn default() -> ProgramConfig {
        ProgramConfig { timeout_secs: 300 }
    }
}

impl DeliveryConfig {
    /// The default target for a spool in `data_dir`.
    pub fn effective_target(&self, data_dir: &Path) -> Target {
        self.target
            .clone()
            .unwrap_or_else(|| Target::Maildir(data_dir.join("delivered")))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("delivery.concurrency", self.concurrency as u64),
            ("delivery.queue_lifetime_secs", self.queue_lifetime_secs),
            ("delivery.retry_min_secs", self.retry_min_secs),
            ("delivery.poll_interval_ms", self.poll_interval_ms),
            ("delivery.rescan_secs", self.rescan_secs),
            ("delivery.time_scale", u64::from(self.time_scale)),
            ("delivery.smtp.timeout_secs", self.smtp.timeout_secs),
            (
                "delivery.smtp.connect_timeout_secs",
                self.smtp.connect_timeout_secs,
            ),
            (
                "delivery.smtp.max_messages_per_connection",
                u64::from(self.smtp.max_messages_per_connection),
            ),
            ("delivery.program.timeout_secs", self.program.timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if self.retry_max_secs < self.retry_min_secs {
            return Err(invalid(
                "delivery.retry_max_secs",
                format!(
                    "{} is less than delivery.retry_min_secs ({})",
                    self.retry_max_secs, self.retry_min_secs
                ),
            ));
        }
        for domain in self.routes.keys() {
            let d = domain.strip_prefix('.').unwrap_or(domain);
            if d.is_empty() || d.contains(['@', ' ', '*']) {
                return Err(invalid(
                    "delivery.routes",
                    format!(
                        "{domain:?} is not a domain (write \"example.net\" or \".example.net\")"
                    ),
                ));
            }
        }
        if self.smtp.username.is_some() != self.smtp.password.is_some() {
            return Err(invalid(
                "delivery.smtp.username",
                "username and password go together",
            ));
        }
        if self.cgp.mode_bits().is_none() {
            return Err(invalid(
                "delivery.cgp.mode",
                format!(
                    "{:?} is not an octal file mode such as \"0640\"",
                    self.cgp.mode
                ),
            ));
        }
        if self
            .postmaster
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "delivery.postmaster",
                "empty: leave the key out to drop double bounces",
            ));
        }
        Ok(())
    }
}

/// `[policy]`: what clients may send and how addresses are rewritten, checked before `K`.
///
/// A client gets the first `[[policy.clients]]` entry that names it (by `NULLQ_POLICY=name` in
/// its tcprules variables, else by network), or the defaults at this level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Address rewriting records in CommuniGate Pro Router syntax, one per string:
    /// `"<*@host1.example.net> = *@example.net"`. Applied before `rewrite_file`'s.
    pub rewrite: Vec<String>,
    /// A file of Router records, one a line (a site's Router table moved over unchanged).
    pub rewrite_file: Option<PathBuf>,
    /// The domains this site delivers for. Empty (the default): every client may send
    /// anywhere, as the seed's setup did. When set, only clients with `relay = true` may send
    /// to other domains. qmail's `rcpthosts`, Postfix's `relay_domains`.
    pub local_domains: Vec<String>,
    /// Allowed envelope senders for clients no entry names: patterns with `*`
    /// (`*@example.net`), `%h` for the client's host name, `<>` for the null sender. Empty:
    /// any sender.
    pub senders: Vec<String>,
    /// Check the header `From:` addresses against `senders` too. Default false.
    pub header_from: bool,
    /// May these clients send to domains outside `local_domains`? Default: yes when
    /// `local_domains` is empty, else no.
    pub relay: Option<bool>,
    /// Client classes, first match wins.
    pub clients: Vec<ClientPolicy>,
}

/// `[[policy.clients]]`: one class of clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientPolicy {
    /// The class's name, chosen by `NULLQ_POLICY=name` in a tcprules rule.
    pub name: Option<String>,
    /// Networks (`128.164.26.0/24`, `2001:db8::/32`, or one address) whose clients are in
    /// this class.
    pub networks: Vec<String>,
    /// Allowed envelope senders, as `[policy] senders`. Empty: any.
    pub senders: Vec<String>,
    /// Check the header `From:` too.
    pub header_from: bool,
    /// May relay (send outside `local_domains`)? Default as `[policy] relay`.
    pub relay: Option<bool>,
}

/// Parses `ADDRESS/PREFIX` or a single address into (network address, prefix length).
pub fn parse_network(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or ADDRESS/PREFIX"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
    };
    Ok((ip, prefix))
}

impl PolicyConfig {
    /// The rewriting rules: `rewrite`, then `rewrite_file` (read now).
    pub fn rewrite_rules(&self) -> Result<nullq_mail::rewrite::RewriteRules, ConfigError> {
        let mut text = self.rewrite.join("\n");
        if let Some(path) = &self.rewrite_file {
            let file = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            text.push('\n');
            text.push_str(&file);
        }
        nullq_mail::rewrite::parse_rules(&text)
            .map_err(|e| invalid("policy.rewrite", e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        nullq_mail::rewrite::parse_rules(&self.rewrite.join("\n"))
            .map_err(|e| invalid("policy.rewrite", format!("record {}: {}", e.line, e.reason)))?;
        for d in &self.local_domains {
            if d.trim().is_empty() || d.contains(['@', ' ', '*']) {
                return Err(invalid(
                    "policy.local_domains",
                    format!("{d:?} is not a domain"),
                ));
            }
        }
        let check_senders = |key: &str, senders: &[String]| {
            for s in senders {
                if s.trim().is_empty() || s.contains(char::is_whitespace) {
                    return Err(invalid(key, format!("{s:?} is not a sender pattern")));
                }
            }
            Ok(())
        };
        check_senders("policy.senders", &self.senders)?;
        for (n, c) in self.clients.iter().enumerate() {
            let key = format!("policy.clients[{n}]");
            if c.name.is_none() && c.networks.is_empty() {
                return Err(invalid(&key, "needs a name or networks"));
            }
            for net in &c.networks {
                parse_network(net).map_err(|e| invalid(&format!("{key}.networks"), e))?;
            }
            check_senders(&format!("{key}.senders"), &c.senders)?;
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec!["127.0.0.1:6628".to_owned()],
            data_dir: PathBuf::from("./nullq-data"),
            hostname: None,
            user: None,
            group: None,
            groups: Vec::new(),
            access: AccessConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            shutdown_timeout_secs: 30,
            delivery: DeliveryConfig::default(),
            policy: PolicyConfig::default(),
            metrics: MetricsConfig::default(),
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

    /// The configuration as [`to_toml_string`](Self::to_toml_string) shows it, with secrets
    /// (the SMTP password) replaced by `(hidden)`: what `--print-config` prints.
    pub fn to_toml_masked(&self) -> String {
        let mut shown = self.clone();
        if shown.delivery.smtp.password.is_some() {
            shown.delivery.smtp.password = Some(HIDDEN.to_owned());
        }
        shown.to_toml_string()
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
        if let Some(addr) = &self.metrics.listen {
            if addr.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics.listen",
                    format!("{addr:?} is not IP:PORT (write \"127.0.0.1:9628\" or \"[::1]:9628\")"),
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
        if self.groups.iter().any(|g| g.trim().is_empty()) {
            return Err(invalid("groups", "an empty group name"));
        }
        if self.user.is_none() && (self.group.is_some() || !self.groups.is_empty()) {
            return Err(invalid(
                if self.group.is_some() {
                    "group"
                } else {
                    "groups"
                },
                "needs user: the groups are set when root is dropped",
            ));
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
            ("limits.drain_bytes", l.drain_bytes),
            ("limits.read_timeout_secs", l.read_timeout_secs),
            ("limits.session_timeout_secs", l.session_timeout_secs),
            ("limits.first_byte_timeout_secs", l.first_byte_timeout_secs),
            ("limits.min_data_rate", l.min_data_rate),
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
        self.delivery.validate()?;
        self.policy.validate()?;
        Ok(())
    }

    /// The name for `Received:` headers: `hostname` when set, else the machine's host name
    /// (`gethostname(2)`), else `localhost` when even that cannot be had.
    pub fn local_name(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => nullq_fs::host::machine_hostname().unwrap_or_else(|| "localhost".to_owned()),
        }
    }
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
        assert_eq!(c.delivery, DeliveryConfig::default());
        assert_eq!(c.policy, PolicyConfig::default());
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
            ("[limits]\ndrain_bytes = 0", "limits.drain_bytes"),
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
            ("[metrics]\nlisten = \"localhost:9628\"", "metrics.listen"),
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
    fn delivery_and_policy_tables() {
        let c = ServerConfig::from_toml_str(
            "[delivery]\ntarget = \"pipe:/bin/cat -f %s %r\"\nconcurrency = 3\n\
             [delivery.routes]\n\"example.net\" = \"cgp:/var/CommuniGate/Submitted\"\n\
             \".example.org\" = \"smtp://[::1]:2525\"\n\
             [policy]\nrewrite = [\"<*@host1.example.net> = *@example.net\"]\n\
             [[policy.clients]]\nnetworks = [\"128.164.26.0/24\"]\nsenders = [\"*@example.net\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.delivery.target,
            Some(Target::Pipe(vec![
                "/bin/cat".into(),
                "-f".into(),
                "%s".into(),
                "%r".into()
            ]))
        );
        assert_eq!(c.delivery.concurrency, 3);
        assert_eq!(
            c.delivery.routes[".example.org"],
            Target::Smtp {
                implicit_tls: false,
                host: "::1".into(),
                port: 2525
            }
        );
        assert_eq!(c.policy.clients[0].senders, ["*@example.net"]);
        assert_eq!(ServerConfig::from_toml_str(&c.to_toml_string()).unwrap(), c);
        assert_eq!(c.delivery.cgp.on_bad, OnBad::Bounce);
        let keep = ServerConfig::from_toml_str("[delivery.cgp]\non_bad = \"keep\"").unwrap();
        assert_eq!(keep.delivery.cgp.on_bad, OnBad::Keep);
        for bad in [
            "[delivery]\ntarget = \"pipe:/bin/deliver to=%r\"",
            "[delivery]\ntarget = \"ftp://x\"",
            "[delivery]\ntarget = \"smtp://h:0\"",
            "[delivery]\ntarget = \"pipe:'unclosed\"",
            "[delivery.cgp]\non_bad = \"ignore\"",
        ] {
            assert!(
                matches!(
                    ServerConfig::from_toml_str(bad),
                    Err(ConfigError::Parse { .. })
                ),
                "{bad}"
            );
        }
        for (bad, key) in [
            ("[delivery]\nconcurrency = 0", "delivery.concurrency"),
            ("[delivery]\nretry_max_secs = 1", "delivery.retry_max_secs"),
            ("[delivery.cgp]\nmode = \"rw\"", "delivery.cgp.mode"),
            ("[policy]\nrewrite = [\"<a@b> = \"]", "policy.rewrite"),
            (
                "[[policy.clients]]\nnetworks = [\"1.2.3.4/33\"]",
                "policy.clients[0].networks",
            ),
        ] {
            match ServerConfig::from_toml_str(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn targets_parse_and_print() {
        for (text, kind) in [
            ("maildir:./nullq-data/delivered", "maildir"),
            ("cgp:/var/CommuniGate/Submitted", "cgp"),
            ("smtp://127.0.0.1:2525", "smtp"),
            ("smtps://mail.example.net:465", "smtp"),
            ("pipe:/usr/bin/env 'a b' %s", "pipe"),
            ("qmail-queue:/var/qmail/bin/qmail-queue", "qmail-queue"),
            ("none", "none"),
        ] {
            let t: Target = text.parse().unwrap();
            assert_eq!(t.kind(), kind);
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(
            "smtp://mx".parse::<Target>().unwrap(),
            Target::Smtp {
                implicit_tls: false,
                host: "mx".into(),
                port: 25
            }
        );
        assert_eq!(
            split_command(r#"a "b c" 'd\' e\ f"#).unwrap(),
            ["a", "b c", "d\\", "e f"]
        );
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
        c.delivery.target = Some(Target::Maildir(PathBuf::from("/var/mail/x")));
        c.metrics.listen = Some("127.0.0.1:9628".into());
        let text = c.to_toml_string();
        assert!(
            text.contains("[metrics]\nlisten = \"127.0.0.1:9628\""),
            "{text}"
        );
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
    fn print_config_masks_the_smtp_password() {
        let mut c = ServerConfig::default();
        c.delivery.smtp.username = Some("nullq".into());
        c.delivery.smtp.password = Some("s3cret-pass".into());
        let shown = c.to_toml_masked();
        assert!(!shown.contains("s3cret-pass"), "{shown}");
        assert!(
            shown.contains(&format!("password = \"{HIDDEN}\"")),
            "{shown}"
        );
        assert!(shown.contains("username = \"nullq\""), "{shown}");
        // Without a password there is nothing to hide and nothing is invented.
        assert!(!ServerConfig::default()
            .to_toml_masked()
            .contains("password"));
    }

    #[test]
    fn local_name() {
        let mut c = ServerConfig::default();
        assert!(!c.local_name().is_empty());
        if let Some(h) = nullq_fs::host::machine_hostname() {
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
