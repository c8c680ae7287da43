//! The QMQP server's TOML configuration (`nullq serve --config nullq.toml`): its keys, their
//! defaults, and the checks a loaded file must pass.
//!
//! This module owns the file's shape only. The access rules a file names are read by
//! `nullq-tcprules`; `[delivery]` ([`DeliveryConfig`]: targets, routes, retries, bounces)
//! and `[policy]` ([`PolicyConfig`]: senders, relaying, rewriting) are typed here and applied by
//! the server's delivery runner and policy. Every key is optional: an empty file is the default
//! configuration, and `docs/nullq.toml.example` lists every key with its default. Unknown keys
//! are refused, so a misspelt key is an error instead of a setting silently not applied.
//!
//! One module per section, each owning its keys' types, defaults and checks: `limits`, `log`,
//! `access`, `metrics`, `tls`, `delivery` (with `target`, and `smtp` and `cgp` for `[delivery.smtp]`
//! and `[delivery.cgp]`), `policy` (with `cidr` for its networks); `error` is
//! [`ConfigError`]. Their types are this module's. A value that has a type of its own (an address, a network, a
//! file mode, a target, a log format) is parsed when the file is read, and an error names the
//! key; [`ServerConfig::validate`] is left with the checks on the finished configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod access;
mod cgp;
mod cidr;
mod delivery;
mod error;
mod limits;
mod log;
mod metrics;
mod policy;
mod smtp;
mod spool;
mod target;
mod tls;

pub use access::AccessConfig;
pub use cgp::{CgpConfig, OnBad};
pub use cidr::Cidr;
pub use delivery::{DeliveryConfig, PerTarget, ProgramConfig};
pub use error::ConfigError;
pub use limits::Limits;
pub use log::{LogConfig, LogFormat};
pub use metrics::{parse_metrics_listen, MetricsConfig};
pub use policy::{ClientPolicy, PolicyConfig};
pub use smtp::{SmtpConfig, StartTls};
pub use spool::SpoolFlush;
pub use target::{split_command, Target};
pub use tls::{parse_tls_listen, TlsConfig};

use error::{invalid, keyed};

/// The whole server configuration. Every field has a default (see each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on, `IP:PORT` each. Default `["127.0.0.1:6628"]` (QMQP's port is
    /// 628, which needs root to bind; the default is unprivileged and local). Mirrors the
    /// address and port arguments of `tcpserver` (`tcpserver ... 0 628`) and Postfix's
    /// `master.cf` service address for `qmqpd`.
    #[serde(deserialize_with = "listen")]
    pub listen: Vec<SocketAddr>,
    /// The spool directory. Default `./nullq-data`. Mirrors qmail's queue directory
    /// (`/var/qmail/queue`) and Postfix's `queue_directory`.
    pub data_dir: PathBuf,
    /// How the spool makes a batch of received messages durable before `K`: `auto` (the
    /// default: `filesystem` when the data directory is an ext4, xfs or btrfs mount of its own,
    /// else `files`),
    /// `files` (an `fsync` of each message file, issued together, then one `fsync` of
    /// `queue/`) or `filesystem` (one `syncfs` of the spool's filesystem per batch). See
    /// docs/spool.md. Mirrors nothing in qmail or Postfix, which fsync each queue file alone.
    pub spool_flush: SpoolFlush,
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
    /// The threads that run the sessions (and `nullq deliver`'s attempts): tokio's worker
    /// threads. Default 0: half the machine's cores, at least one, because the other half is
    /// what the spool's committer thread, the kernel's filesystem and TCP work and the
    /// delivery threads need (measured on 2 cores, BENCHMARKS.md: one worker took 5-15 % less
    /// CPU a message than two, and received more a second, at 10, 50 and 200 sessions).
    /// Mirrors Postfix's `default_process_limit` in spirit only: it bounds CPU, not sessions.
    pub runtime_threads: usize,
    /// How messages leave the spool: target, per-domain routes, retries, bounces. Mirrors
    /// qmail's `qmail-queue` hand-off (the seed's `cgp-submit`) and Postfix's transports.
    pub delivery: DeliveryConfig,
    /// What each client may send (senders, relaying) and how addresses are rewritten.
    pub policy: PolicyConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// QMQP over TLS beside the plain listener.
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6628))],
            data_dir: PathBuf::from("./nullq-data"),
            spool_flush: SpoolFlush::default(),
            hostname: None,
            user: None,
            group: None,
            groups: Vec::new(),
            access: AccessConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            shutdown_timeout_secs: 30,
            runtime_threads: 0,
            delivery: DeliveryConfig::default(),
            policy: PolicyConfig::default(),
            metrics: MetricsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// The most `runtime_threads` may ask for (tokio takes more, but a number this large is a
/// typing mistake, and each thread holds a stack).
pub const MAX_RUNTIME_THREADS: usize = 1024;

impl ServerConfig {
    /// How many worker threads the runtime gets: `runtime_threads`, or for 0 half of
    /// `cores` (at least one).
    pub fn worker_threads(&self, cores: usize) -> usize {
        match self.runtime_threads {
            0 => (cores / 2).max(1),
            n => n,
        }
    }
}

/// What [`ServerConfig::to_toml_masked`] shows in place of a secret.
pub const HIDDEN: &str = "(hidden)";

/// What `listen` (and `--listen`) must be.
fn listen_problem(text: &str) -> String {
    format!("{text:?} is not IP:PORT (write \"0.0.0.0:628\" or \"[::]:628\")")
}

/// `--listen ADDR`: the address, or the error the same text in the file gives.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid("listen", listen_problem(text)))
}

fn listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| keyed("listen", listen_problem(text)))
        })
        .collect()
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
        let config: ServerConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &e))?;
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

    /// Checks the finished configuration (the file's values with the flags applied): values
    /// that parse but cannot work (an empty `listen`, `data_dir`, `hostname`, `user` or
    /// `group`, a zero limit) and those that contradict another (`max_sessions_per_ip` above
    /// `max_sessions`, `group` without `user`). Addresses, networks, modes and targets were
    /// parsed when read.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "no address to listen on"));
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
        self.limits.validate()?;
        if self.runtime_threads > MAX_RUNTIME_THREADS {
            return Err(invalid(
                "runtime_threads",
                format!(
                    "{} is more than {MAX_RUNTIME_THREADS}",
                    self.runtime_threads
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
        self.tls.validate()?;
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
    use super::error::line_col;
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = ServerConfig::from_toml_str("").unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.listen, ["127.0.0.1:6628".parse().unwrap()]);
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
    fn typed_values_are_refused_with_the_key_and_text_of_before() {
        // These were checked after reading, by key; parsed while reading now, they say the same.
        for (text, want) in [
            (
                "listen = [\"127.0.0.1:628\", \"localhost:628\"]",
                "configuration: listen: \"localhost:628\" is not IP:PORT (write \"0.0.0.0:628\" or \"[::]:628\")",
            ),
            (
                "[metrics]\nlisten = \"localhost:9628\"",
                "configuration: metrics.listen: \"localhost:9628\" is not IP:PORT (write \"127.0.0.1:9628\" or \"[::1]:9628\")",
            ),
            (
                "[delivery.cgp]\nmode = \"rw\"",
                "configuration: delivery.cgp.mode: \"rw\" is not an octal file mode such as \"0640\"",
            ),
            (
                "[delivery.cgp]\nmode = \"17777\"",
                "configuration: delivery.cgp.mode: \"17777\" is not an octal file mode such as \"0640\"",
            ),
            (
                "[[policy.clients]]\nname = \"a\"\n[[policy.clients]]\nnetworks = [\"10.0.0.0/8\", \"1.2.3.4/33\"]",
                "configuration: policy.clients[1].networks: \"1.2.3.4/33\": bad prefix length",
            ),
            (
                "[policy]\nclients = [{ networks = [\"example.net\"] }]",
                "configuration: policy.clients[0].networks: \"example.net\" is not an IP address or ADDRESS/PREFIX",
            ),
        ] {
            let e = ServerConfig::from_toml_str(text).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{text}: {e:?}");
            assert_eq!(e.to_string(), want, "{text}");
        }
        assert_eq!(
            parse_listen("[::1]").unwrap_err().to_string(),
            "configuration: listen: \"[::1]\" is not IP:PORT (write \"0.0.0.0:628\" or \"[::]:628\")"
        );
        assert_eq!(
            parse_metrics_listen("[::1]:9628").unwrap(),
            "[::1]:9628".parse::<SocketAddr>().unwrap()
        );
        // A value of the wrong TOML type is still the parser's error, with its place.
        for text in [
            "listen = [628]",
            "[delivery.cgp]\nmode = 416",
            "[[policy.clients]]\nnetworks = [10]",
        ] {
            assert!(
                matches!(
                    ServerConfig::from_toml_str(text),
                    Err(ConfigError::Parse { line: Some(_), .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn modes_are_numbers() {
        for (text, mode) in [
            ("0640", 0o640),
            ("640", 0o640),
            ("0o600", 0o600),
            ("7777", 0o7777),
            ("0", 0),
        ] {
            let c =
                ServerConfig::from_toml_str(&format!("[delivery.cgp]\nmode = \"{text}\"")).unwrap();
            assert_eq!(c.delivery.cgp.mode, mode, "{text}");
        }
        assert_eq!(ServerConfig::default().delivery.cgp.mode, 0o640);
        let c = ServerConfig::from_toml_str("[delivery.cgp]\nmode = \"0o600\"").unwrap();
        let text = c.to_toml_string();
        assert!(text.contains("mode = \"0600\""), "{text}");
        assert_eq!(ServerConfig::from_toml_str(&text).unwrap(), c);
        for bad in ["", "0o", "8", "-1", "rw-r-----"] {
            let text = format!("[delivery.cgp]\nmode = \"{bad}\"");
            assert!(
                matches!(
                    ServerConfig::from_toml_str(&text),
                    Err(ConfigError::Invalid { ref key, .. }) if key == "delivery.cgp.mode"
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn addresses_and_networks_are_typed() {
        let c = ServerConfig::from_toml_str(
            "listen = [\"0.0.0.0:628\", \"[::]:628\"]\n[metrics]\nlisten = \"127.0.0.1:9628\"\n\
             [[policy.clients]]\nnetworks = [\"128.164.26.0/24\", \"2001:db8::1\"]\n",
        )
        .unwrap();
        assert_eq!(c.listen[1], "[::]:628".parse::<SocketAddr>().unwrap());
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9628));
        let nets = &c.policy.clients[0].networks;
        assert!(nets[0].contains("128.164.26.7".parse().unwrap()));
        assert!(nets[1].contains("2001:db8::1".parse().unwrap()));
        let text = c.to_toml_string();
        assert!(
            text.contains("listen = [\"0.0.0.0:628\", \"[::]:628\"]"),
            "{text}"
        );
        assert!(text.contains("\"2001:db8::1\""), "{text}");
        assert_eq!(ServerConfig::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn log_formats_as_the_flag_writes_them() {
        assert_eq!("journald".parse::<LogFormat>(), Ok(LogFormat::Journald));
        assert_eq!(
            "file".parse::<LogFormat>(),
            Err("unknown log format \"file\" (stderr, syslog, journald)".to_owned())
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
        assert_eq!(c.delivery.per_target, PerTarget::default());
        let limits =
            ServerConfig::from_toml_str("[delivery.per_target]\nsmtp = 5\nmaildir = 300\n")
                .unwrap()
                .delivery
                .per_target;
        assert_eq!((limits.smtp, limits.maildir, limits.cgp), (5, 300, 400));
        let smarthost = Target::Smtp {
            implicit_tls: false,
            host: "h".into(),
            port: 25,
        };
        assert_eq!(limits.limit(&smarthost), 5);
        assert_eq!(limits.limit(&Target::Hold), usize::MAX);
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
            ("[delivery.per_target]\ncgp = 0", "delivery.per_target.cgp"),
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
    fn runtime_threads_default_to_half_the_cores() {
        let mut c = ServerConfig::default();
        let auto: Vec<usize> = [1, 2, 3, 4, 8, 64]
            .map(|cores| c.worker_threads(cores))
            .to_vec();
        assert_eq!(auto, [1, 1, 1, 2, 4, 32]);
        c.runtime_threads = 3;
        assert_eq!(c.worker_threads(64), 3);
        c.validate().unwrap();
        c.runtime_threads = MAX_RUNTIME_THREADS + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("runtime_threads"));
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
        c.metrics.listen = Some("127.0.0.1:9628".parse().unwrap());
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
            "spool_flush",
            "databytes",
            "error_delay_secs",
            "format",
            "shutdown_timeout_secs",
            "runtime_threads",
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
