//! `[delivery]`: how messages leave the spool. Its own keys are the target, the per-domain
//! routes, retries, lifetime and bounces; each backend's settings are a table of their own
//! (`[delivery.smtp]`, `[delivery.cgp]`, `[delivery.program]`). The delivery runner applies
//! them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cgp::CgpConfig;
use super::error::{invalid, ConfigError};
use super::smtp::SmtpConfig;
use super::target::Target;

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
    /// Messages being delivered at once, all targets together. Default 400 (a Maildir or CGP
    /// delivery waits for about three of the spool's flushes, so many must be in flight for
    /// delivery to keep up with receiving: BENCHMARKS.md). Each target also
    /// has a limit of its own ([`DeliveryConfig::per_target`]); this one bounds the whole (and
    /// the descriptors the deliveries hold). qmail's `concurrencylocal` + `concurrencyremote`.
    pub concurrency: usize,
    /// Deliveries at once to one target, by its kind: `[delivery.per_target]`.
    pub per_target: PerTarget,
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
            concurrency: 400,
            per_target: PerTarget::default(),
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

/// `[delivery.per_target]`: how many deliveries one target takes at once, by its kind. A
/// Maildir or a CommuniGate Pro folder is a local directory whose writer batches what waits
/// (one fsync of the directory for the batch), so many at once cost little more than one; a
/// smarthost is another server with limits of its own (Postfix's
/// `default_destination_concurrency_limit` is 20); a program is a process each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerTarget {
    /// Each `maildir:` target. Default 400.
    pub maildir: usize,
    /// Each `cgp:` folder. Default 400.
    pub cgp: usize,
    /// Each `smtp://` or `smtps://` smarthost: its connections at once. Default 20.
    pub smtp: usize,
    /// Each `pipe:` or `qmail-queue:` command: its children at once. Default 10.
    pub program: usize,
}

impl Default for PerTarget {
    fn default() -> PerTarget {
        PerTarget {
            maildir: 400,
            cgp: 400,
            smtp: 20,
            program: 10,
        }
    }
}

impl PerTarget {
    /// The limit for `target`'s kind (`none` holds, it has no deliveries: unlimited).
    pub fn limit(&self, target: &Target) -> usize {
        match target {
            Target::Maildir(_) => self.maildir,
            Target::Cgp(_) => self.cgp,
            Target::Smtp { .. } => self.smtp,
            Target::Pipe(_) | Target::QmailQueue(_) => self.program,
            Target::Hold => usize::MAX,
        }
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

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("delivery.concurrency", self.concurrency as u64),
            (
                "delivery.per_target.maildir",
                self.per_target.maildir as u64,
            ),
            ("delivery.per_target.cgp", self.per_target.cgp as u64),
            ("delivery.per_target.smtp", self.per_target.smtp as u64),
            (
                "delivery.per_target.program",
                self.per_target.program as u64,
            ),
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
