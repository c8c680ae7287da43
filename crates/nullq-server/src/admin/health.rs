//! `nullq health`: the queue and the spool checked like a Nagios plugin, from the spool itself
//! (no server, no HTTP port needed): one line of text with performance data, and the exit code
//! Nagios, Icinga and their kin read.
//!
//! | exit | when |
//! |---|---|
//! | 0 OK | nothing below |
//! | 1 WARNING | the oldest message is older than `--warn-age`, or more messages than `--warn-depth` are queued, or CommuniGate Pro `.bad` files wait in a Submitted folder, or a queued message cannot be read |
//! | 2 CRITICAL | the oldest message is older than `--crit-age`, or more than `--crit-depth` are queued, or the spool's directories are not writable (by its owner: as root the check becomes that user first, as `nullq queue` does) |
//! | 3 UNKNOWN | the configuration or the spool cannot be read at all, or the flags are wrong |
//!
//! The queue is read with the scan `nullq queue stats` and the metrics use
//! ([`QueueSummary`]): depth is the messages in `queue/`, age is the oldest envelope's
//! arrival time, which a message keeps however often it is retried.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;
use nullq_spool::SpoolError;
use serde_json::{json, Value};

use crate::admin::queue_scan::{cgp_bad_files, human, QueueSummary};
use crate::admin::queue_tools::QueueToolError;

/// Exit code: all is well.
pub const OK: i32 = 0;
/// Exit code: look soon.
pub const WARNING: i32 = 1;
/// Exit code: look now.
pub const CRITICAL: i32 = 2;
/// Exit code: the check itself could not be made.
pub const UNKNOWN: i32 = 3;

/// `nullq health`'s flags. Ages are in seconds; a value above a threshold (not equal to it)
/// raises the state, as a Nagios range `0:N` does.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (spool unreadable, \
                        bad flags). Output: one line, 'NULLQ STATE - text | perfdata'."
)]
pub struct HealthArgs {
    /// TOML configuration file (for the spool directory and the CommuniGate Pro folders).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Spool directory [default: ./nullq-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// WARNING when the oldest message has waited more than this many seconds [default: 3600,
    /// or --crit-age if that is less].
    #[arg(long, value_name = "SECS")]
    warn_age: Option<u64>,
    /// CRITICAL when the oldest message has waited more than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86400)]
    crit_age: u64,
    /// WARNING when more than this many messages are queued [default: 1000, or --crit-depth if
    /// that is less].
    #[arg(long, value_name = "N")]
    warn_depth: Option<u64>,
    /// CRITICAL when more than this many messages are queued.
    #[arg(long, value_name = "N", default_value_t = 10000)]
    crit_depth: u64,
    /// One JSON object instead of the line, for scripts (same exit code).
    #[arg(long)]
    json: bool,
}

/// The default warning thresholds (the critical ones are clap's defaults).
const WARN_AGE: u64 = 3600;
const WARN_DEPTH: u64 = 1000;

/// Why the check could not be made: the UNKNOWN line's text.
#[derive(Debug)]
enum HealthError {
    /// A warning threshold above its critical one (`--warn-age`, `--crit-age`, values).
    Thresholds {
        warn: (&'static str, u64),
        crit: (&'static str, u64),
    },
    /// The configuration or the spool could not be had (as `nullq queue` says it).
    Attach(QueueToolError),
    /// The queue could not be listed.
    Queue(SpoolError),
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::Thresholds { warn, crit } => write!(
                f,
                "{} {} is more than {} {}",
                warn.0, warn.1, crit.0, crit.1
            ),
            HealthError::Attach(e) => e.fmt(f),
            HealthError::Queue(e) => write!(f, "cannot read the queue: {e}"),
        }
    }
}

impl std::error::Error for HealthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HealthError::Thresholds { .. } => None,
            // Its text is the tool's error's own: what lies under it is that one's source.
            HealthError::Attach(e) => std::error::Error::source(e),
            HealthError::Queue(e) => Some(e),
        }
    }
}

/// The thresholds in force: a warning one left out is its default, lowered to the critical one
/// so that `--crit-age 60` alone works; one given above its critical one is an error.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    warn_age: u64,
    crit_age: u64,
    warn_depth: u64,
    crit_depth: u64,
}

impl Thresholds {
    fn of(args: &HealthArgs) -> Result<Thresholds, HealthError> {
        let t = Thresholds {
            warn_age: args.warn_age.unwrap_or(WARN_AGE.min(args.crit_age)),
            crit_age: args.crit_age,
            warn_depth: args.warn_depth.unwrap_or(WARN_DEPTH.min(args.crit_depth)),
            crit_depth: args.crit_depth,
        };
        if t.warn_age > t.crit_age {
            return Err(HealthError::Thresholds {
                warn: ("--warn-age", t.warn_age),
                crit: ("--crit-age", t.crit_age),
            });
        }
        if t.warn_depth > t.crit_depth {
            return Err(HealthError::Thresholds {
                warn: ("--warn-depth", t.warn_depth),
                crit: ("--crit-depth", t.crit_depth),
            });
        }
        Ok(t)
    }
}

/// What was found, before it is judged.
#[derive(Debug, Default)]
struct Findings {
    queue: QueueSummary,
    unreadable: usize,
    bad_files: Vec<String>,
    /// Spool directories the spool's owner cannot write, each with why.
    not_writable: Vec<String>,
}

/// Run `nullq health`; returns the exit code.
pub fn run(args: &HealthArgs) -> i32 {
    let verdict = match Thresholds::of(args).and_then(|t| Ok((t, check(args)?))) {
        Ok((t, findings)) => judge(&t, &findings),
        Err(problem) => Verdict::unknown(&problem),
    };
    if args.json {
        println!("{}", verdict.json);
    } else {
        println!("{}", verdict.line);
    }
    verdict.code
}

fn check(args: &HealthArgs) -> Result<Findings, HealthError> {
    let (config, spool) = crate::admin::queue_tools::attach_as_owner(
        args.config.as_deref(),
        args.data.as_deref(),
        "read",
    )
    .map_err(HealthError::Attach)?;
    let mut unreadable = 0;
    let queue = QueueSummary::scan(&spool, |_, _| unreadable += 1).map_err(HealthError::Queue)?;
    Ok(Findings {
        queue,
        unreadable,
        bad_files: cgp_bad_files(&config),
        not_writable: not_writable(spool.root()),
    })
}

/// The spool directories a message passes through that this process cannot write (and
/// search): `tmp/`, `queue/`, `state/`. `access(2)` sees permissions and a read-only mount.
fn not_writable(root: &Path) -> Vec<String> {
    use rustix::fs::Access;
    ["tmp", "queue", "state"]
        .iter()
        .filter_map(|d| {
            let dir = root.join(d);
            rustix::fs::access(&dir, Access::WRITE_OK | Access::EXEC_OK)
                .err()
                .map(|e| format!("{}: {e}", dir.display()))
        })
        .collect()
}

/// The result: exit code, the line, the JSON.
struct Verdict {
    code: i32,
    line: String,
    json: Value,
}

impl Verdict {
    fn unknown(problem: &HealthError) -> Verdict {
        let problem = problem.to_string();
        Verdict {
            code: UNKNOWN,
            line: format!("NULLQ UNKNOWN - {}", problem.replace('\n', " ")),
            json: json!({ "status": "UNKNOWN", "code": UNKNOWN, "problems": [problem] }),
        }
    }
}

fn state_word(code: i32) -> &'static str {
    match code {
        OK => "OK",
        WARNING => "WARNING",
        CRITICAL => "CRITICAL",
        _ => "UNKNOWN",
    }
}

fn judge(args: &Thresholds, f: &Findings) -> Verdict {
    let now = SystemTime::now();
    let age = f.queue.oldest_age(now).as_secs();
    let depth = f.queue.messages as u64;
    let mut code = OK;
    let mut problems = Vec::new();
    let mut raise = |level: i32, text: String| {
        code = code.max(level);
        problems.push(text);
    };
    if age > args.crit_age {
        raise(
            CRITICAL,
            format!(
                "oldest message waited {age}s (critical over {}s)",
                args.crit_age
            ),
        );
    } else if age > args.warn_age {
        raise(
            WARNING,
            format!(
                "oldest message waited {age}s (warning over {}s)",
                args.warn_age
            ),
        );
    }
    if depth > args.crit_depth {
        raise(
            CRITICAL,
            format!(
                "{depth} messages queued (critical over {})",
                args.crit_depth
            ),
        );
    } else if depth > args.warn_depth {
        raise(
            WARNING,
            format!("{depth} messages queued (warning over {})", args.warn_depth),
        );
    }
    if !f.not_writable.is_empty() {
        raise(
            CRITICAL,
            format!("spool not writable: {}", f.not_writable.join(", ")),
        );
    }
    if !f.bad_files.is_empty() {
        raise(
            WARNING,
            format!(
                "{} CommuniGate Pro .bad files: {}",
                f.bad_files.len(),
                f.bad_files.join(", ")
            ),
        );
    }
    if f.unreadable > 0 {
        raise(
            WARNING,
            format!("{} queued messages cannot be read", f.unreadable),
        );
    }
    let summary = match f.queue.oldest {
        Some(_) => format!(
            "{depth} messages queued, oldest {}",
            human(f.queue.oldest_age(now))
        ),
        None => "0 messages queued".to_owned(),
    };
    let text = if problems.is_empty() {
        summary
    } else {
        format!("{}; {summary}", problems.join("; "))
    };
    let perfdata = format!(
        "messages={depth};{};{};0 age={age}s;{};{};0 bad_files={};;;0",
        args.warn_depth,
        args.crit_depth,
        args.warn_age,
        args.crit_age,
        f.bad_files.len()
    );
    Verdict {
        code,
        line: format!("NULLQ {} - {text} | {perfdata}", state_word(code)),
        json: json!({
            "status": state_word(code),
            "code": code,
            "messages": depth,
            "oldest_id": f.queue.oldest.map(|(id, _)| id.to_string()),
            "oldest_age_secs": age,
            "bad_files": f.bad_files,
            "unreadable": f.unreadable,
            "writable": f.not_writable.is_empty(),
            "problems": problems,
            "thresholds": {
                "warn_age": args.warn_age,
                "crit_age": args.crit_age,
                "warn_depth": args.warn_depth,
                "crit_depth": args.crit_depth,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args() -> HealthArgs {
        HealthArgs {
            config: None,
            data: None,
            warn_age: Some(60),
            crit_age: 600,
            warn_depth: Some(10),
            crit_depth: 100,
            json: false,
        }
    }

    fn queued(messages: usize, age: u64) -> QueueSummary {
        QueueSummary {
            messages,
            oldest: (messages > 0).then(|| {
                (
                    "00061a8f3c2b7d10.00003039.00000007".parse().unwrap(),
                    SystemTime::now() - Duration::from_secs(age),
                )
            }),
        }
    }

    #[test]
    fn thresholds_raise_the_state() {
        let a = Thresholds::of(&args()).unwrap();
        let cases = [
            (queued(0, 0), OK),
            (queued(3, 12), OK),
            (queued(3, 61), WARNING),
            (queued(3, 601), CRITICAL),
            (queued(11, 1), WARNING),
            (queued(101, 1), CRITICAL),
        ];
        for (queue, want) in cases {
            let f = Findings {
                queue,
                ..Findings::default()
            };
            let v = judge(&a, &f);
            assert_eq!(v.code, want, "{}", v.line);
            assert!(
                v.line
                    .starts_with(&format!("NULLQ {} - ", state_word(want))),
                "{}",
                v.line
            );
            assert_eq!(v.json["code"], want);
        }
        let v = judge(
            &a,
            &Findings {
                queue: queued(3, 12),
                ..Findings::default()
            },
        );
        assert!(
            v.line
                .ends_with(" | messages=3;10;100;0 age=12s;60;600;0 bad_files=0;;;0"),
            "{}",
            v.line
        );
        assert!(
            v.line.contains("3 messages queued, oldest 12s"),
            "{}",
            v.line
        );
    }

    #[test]
    fn bad_files_warn_and_an_unwritable_spool_is_critical() {
        let a = Thresholds::of(&args()).unwrap();
        let f = Findings {
            bad_files: vec!["/cgp/x.bad".into()],
            ..Findings::default()
        };
        assert_eq!(judge(&a, &f).code, WARNING);
        let f = Findings {
            bad_files: vec!["/cgp/x.bad".into()],
            not_writable: vec!["/d/tmp: Permission denied".into()],
            ..Findings::default()
        };
        let v = judge(&a, &f);
        assert_eq!(v.code, CRITICAL);
        assert_eq!(v.json["writable"], false);
        assert!(v.line.contains("spool not writable"), "{}", v.line);
    }

    #[test]
    fn warn_over_crit_is_unknown_and_a_default_warn_follows_crit_down() {
        let mut a = args();
        a.warn_age = Some(700);
        let e = Thresholds::of(&a).unwrap_err();
        assert_eq!(e.to_string(), "--warn-age 700 is more than --crit-age 600");
        a.warn_age = None;
        a.crit_age = 60;
        a.warn_depth = None;
        let t = Thresholds::of(&a).unwrap();
        assert_eq!((t.warn_age, t.warn_depth), (60, WARN_DEPTH.min(100)));
    }
}
