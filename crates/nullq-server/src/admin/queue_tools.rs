//! `nullq queue list|show|retry|delete|stats`: looking at and changing the queue, also while a
//! server runs on it. The tools attach to the spool without its lock (the server holds that)
//! and change a message only under the message's own lock ([`crate::delivery::lock`]), the one
//! the delivery runner takes for an attempt, so neither overwrites the other's state. After
//! `retry` they wake the runner through the spool's trigger socket (`DATA/trigger`, see
//! [`nullq_spool::pull_trigger`]) to rescan the queue; without a runner, or should the wake-up
//! be lost, its periodic rescan (`delivery.rescan_secs`) or its next start picks it up.
//!
//! Started as root on a spool that belongs to another user (the server's `--user`), they
//! first become that user (its uid and gid, no supplementary groups; see
//! [`crate::process::privilege::spool_owner`]): every file they write belongs to the spool's owner.
//! As any other user they refuse, naming the owner.
//!
//! Output is aligned text for people, or JSON with `--json` for scripts.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use nullq_config::server::{ConfigError, ServerConfig};
use nullq_spool::{BadQueueId, QueueId, QueuedMessage, Spool, SpoolError, Status};
use serde_json::{json, Value};

use crate::admin::queue_scan::{cgp_bad_files, human, load_all_with, QueueSummary};
use crate::delivery::lock::{LockError, MessageLock};
use crate::delivery::stats::Stats;
use crate::process::logging::escape;
use crate::process::privilege::PrivilegeError;

/// Why a queue tool could not do its job (`nullq: fatal: ...`, exit 111). A message that is
/// not there is no error: the tools say so and exit 1.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueToolError {
    /// `--config` could not be read or used.
    Config(ConfigError),
    /// The spool's owner could not be become (or this process may not act for it).
    Privilege(PrivilegeError),
    /// The spool could not be attached.
    Attach {
        /// What the caller wanted of it (`open`, `read`).
        verb: &'static str,
        /// The spool directory.
        dir: PathBuf,
        /// The spool's error.
        source: SpoolError,
    },
    /// An ID argument that is not a queue id.
    BadId {
        /// The argument.
        text: String,
        /// Why it is not one.
        source: BadQueueId,
    },
    /// `queue retry` with neither an ID nor `--all`, or both.
    RetryWhat,
    /// The queue could not be listed, or a message loaded or opened.
    Spool(SpoolError),
    /// A message's header could not be read.
    Read(io::Error),
    /// A message could not be locked for a change.
    Lock {
        /// The message.
        id: QueueId,
        /// Why.
        source: LockError,
    },
    /// A message could not be loaded, changed or removed under its lock.
    Change {
        /// The message.
        id: QueueId,
        /// The spool's error.
        source: SpoolError,
    },
}

impl fmt::Display for QueueToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueToolError::Config(e) => e.fmt(f),
            QueueToolError::Privilege(e) => e.fmt(f),
            QueueToolError::Attach { verb, dir, source } => {
                write!(f, "cannot {verb} the spool in {}: {source}", dir.display())
            }
            QueueToolError::BadId { text, source } => write!(f, "{text:?}: {source}"),
            QueueToolError::RetryWhat => write!(f, "queue retry: give an ID or --all"),
            QueueToolError::Spool(e) => e.fmt(f),
            QueueToolError::Read(e) => e.fmt(f),
            QueueToolError::Lock { id, source } => write!(f, "{id}: {source}"),
            QueueToolError::Change { id, source } => write!(f, "{id}: {source}"),
        }
    }
}

impl std::error::Error for QueueToolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // These show the inner error's text as their own: what lies under it is its source.
            QueueToolError::Config(e) => std::error::Error::source(e),
            QueueToolError::Privilege(e) => std::error::Error::source(e),
            QueueToolError::Spool(e) => std::error::Error::source(e),
            QueueToolError::Read(e) => std::error::Error::source(e),
            QueueToolError::Attach { source, .. } | QueueToolError::Change { source, .. } => {
                Some(source)
            }
            QueueToolError::BadId { source, .. } => Some(source),
            QueueToolError::Lock { source, .. } => Some(source),
            QueueToolError::RetryWhat => None,
        }
    }
}

impl QueueToolError {
    /// The exit code: 111, qmail's "temporary trouble", for every error.
    pub fn exit_code(&self) -> i32 {
        match self {
            QueueToolError::Config(_)
            | QueueToolError::Privilege(_)
            | QueueToolError::Attach { .. }
            | QueueToolError::BadId { .. }
            | QueueToolError::RetryWhat
            | QueueToolError::Spool(_)
            | QueueToolError::Read(_)
            | QueueToolError::Lock { .. }
            | QueueToolError::Change { .. } => 111,
        }
    }
}

impl From<PrivilegeError> for QueueToolError {
    fn from(e: PrivilegeError) -> QueueToolError {
        QueueToolError::Privilege(e)
    }
}

impl From<SpoolError> for QueueToolError {
    fn from(e: SpoolError) -> QueueToolError {
        QueueToolError::Spool(e)
    }
}

/// How long a change waits for a delivery in progress to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// `nullq queue`'s flags.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// TOML configuration file (for the spool directory and the CommuniGate Pro folders).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Spool directory [default: ./nullq-data].
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// JSON output for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Every queued message: id, age, size, sender, recipients with state and next attempt.
    List,
    /// One message: envelope, delivery state and header.
    Show {
        /// The queue id.
        id: String,
    },
    /// Try a message (or all) again now.
    Retry {
        /// The queue id.
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Remove a message from the queue; no bounce is sent.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Counts by state, the oldest message, and the runner's counters since it started.
    Stats,
}

/// The configuration (`--config`, `--data`) and its spool, attached as the spool's owner: as
/// root, the tools become that user before touching anything, so that a state file written by
/// `retry` is one the server can read, and `health` judges "writable" as the server would
/// (no runtime yet, one thread). `verb` says, in the error, what the caller wanted of it.
pub fn attach_as_owner(
    config: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
    verb: &'static str,
) -> Result<(ServerConfig, Spool), QueueToolError> {
    let mut config = match config {
        Some(p) => ServerConfig::load(p).map_err(QueueToolError::Config)?,
        None => ServerConfig::default(),
    };
    if let Some(d) = data {
        config.data_dir = d.to_path_buf();
    }
    if let Some(owner) = crate::process::privilege::spool_owner(&config.data_dir)? {
        crate::process::privilege::drop_to(&owner)?;
    }
    let spool = Spool::attach(&config.data_dir).map_err(|source| QueueToolError::Attach {
        verb,
        dir: config.data_dir.clone(),
        source,
    })?;
    Ok((config, spool))
}

/// Run `nullq queue ...`; returns the exit code (0 done, 1 no such message, 111 trouble).
pub fn run(args: QueueArgs) -> Result<i32, QueueToolError> {
    let (config, spool) = attach_as_owner(args.config.as_deref(), args.data.as_deref(), "open")?;
    match &args.action {
        Action::List => list(&spool, args.json),
        Action::Show { id } => show(&spool, &parse_id(id)?, args.json),
        Action::Retry { id, all } => {
            let ids = match (id, all) {
                (Some(id), false) => vec![parse_id(id)?],
                (None, true) => spool.list()?,
                _ => return Err(QueueToolError::RetryWhat),
            };
            retry(&spool, &ids, args.json)
        }
        Action::Delete { id } => delete(&spool, &parse_id(id)?, args.json),
        Action::Stats => stats(&spool, &config, args.json),
    }
}

fn parse_id(text: &str) -> Result<QueueId, QueueToolError> {
    text.parse().map_err(|source| QueueToolError::BadId {
        text: text.to_owned(),
        source,
    })
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Delivered => "delivered",
        Status::Failed => "failed",
    }
}

fn message_json(q: &QueuedMessage, now: SystemTime) -> Value {
    let rcpts: Vec<Value> = q
        .envelope
        .recipients
        .iter()
        .zip(&q.state.recipients)
        .map(|(addr, r)| {
            json!({
                "address": String::from_utf8_lossy(addr),
                "status": status_word(r.status),
                "attempts": r.attempts,
                "next_attempt": r.next_attempt.map(unix),
                "last_result": r.last_result,
                "warned": r.warned,
            })
        })
        .collect();
    json!({
        "id": q.id.to_string(),
        "arrival": unix(q.envelope.arrival),
        "age_secs": now.duration_since(q.envelope.arrival).map_or(0, |d| d.as_secs()),
        "size": q.message_len,
        "sender": String::from_utf8_lossy(&q.envelope.sender),
        "client": q.envelope.client_addr,
        "recipients": rcpts,
    })
}

fn recipient_lines(q: &QueuedMessage, now: SystemTime) -> String {
    let mut out = String::new();
    for (addr, r) in q.envelope.recipients.iter().zip(&q.state.recipients) {
        let next = match (r.status, r.next_attempt) {
            (Status::Pending, Some(t)) => match t.duration_since(now) {
                Ok(d) => format!("next in {}", human(d)),
                Err(_) => "next now".into(),
            },
            (Status::Pending, None) => "next now".into(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "    {:<9} {:>3} tries  {:<14} <{}>{}{}\n",
            status_word(r.status),
            r.attempts,
            next,
            escape(addr),
            if r.last_result.is_empty() {
                String::new()
            } else {
                format!("  {}", shown(&r.last_result))
            },
            if r.warned {
                "  (delay warning sent)"
            } else {
                ""
            }
        ));
    }
    out
}

fn load_all(spool: &Spool) -> Result<Vec<QueuedMessage>, QueueToolError> {
    Ok(load_all_with(spool, |id, e| {
        eprintln!("nullq queue: {id}: {e}")
    })?)
}

fn list(spool: &Spool, as_json: bool) -> Result<i32, QueueToolError> {
    let now = SystemTime::now();
    let all = load_all(spool)?;
    if as_json {
        let v: Vec<Value> = all.iter().map(|q| message_json(q, now)).collect();
        println!("{}", Value::Array(v));
        return Ok(0);
    }
    println!("{:<35} {:>7} {:>9}  SENDER", "ID", "AGE", "SIZE");
    for q in &all {
        let age = now.duration_since(q.envelope.arrival).unwrap_or_default();
        println!(
            "{:<35} {:>7} {:>9}  <{}>",
            q.id,
            human(age),
            q.message_len,
            escape(&q.envelope.sender)
        );
        print!("{}", recipient_lines(q, now));
    }
    println!("{} messages", all.len());
    Ok(0)
}

fn show(spool: &Spool, id: &QueueId, as_json: bool) -> Result<i32, QueueToolError> {
    let q = match spool.load(id) {
        Ok(q) => q,
        Err(e) if e.is_not_found() => {
            eprintln!("nullq queue: {id}: no such message");
            return Ok(1);
        }
        Err(e) => return Err(QueueToolError::Spool(e)),
    };
    let mut head = Vec::new();
    spool
        .message(id)?
        .take(256 * 1024)
        .read_to_end(&mut head)
        .map_err(QueueToolError::Read)?;
    let end = head
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(head.len(), |p| p + 1);
    let header = String::from_utf8_lossy(&head[..end]).into_owned();
    // What the listing prints of the message itself is the sender's, not ours.
    let printed_header: String = header
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect();
    let now = SystemTime::now();
    if as_json {
        let mut v = message_json(&q, now);
        v["header"] = Value::String(header);
        v["client_host"] = Value::String(q.envelope.client_host.clone());
        println!("{v}");
        return Ok(0);
    }
    println!("id:       {}", q.id);
    println!(
        "arrival:  {} ({} ago)",
        nullq_mail::date::date822(q.envelope.arrival),
        human(now.duration_since(q.envelope.arrival).unwrap_or_default())
    );
    println!(
        "client:   {} {}",
        q.envelope.client_addr,
        shown(&q.envelope.client_host)
    );
    println!("size:     {}", q.message_len);
    println!("sender:   <{}>", escape(&q.envelope.sender));
    println!("recipients:");
    print!("{}", recipient_lines(&q, now));
    println!();
    print!("{printed_header}");
    Ok(0)
}

/// `text` for a terminal, its control characters as `?`: a delivery's result (a smarthost's
/// reply, a pipe's error output), a client's host name or a file name planted in a folder is
/// not ours, and an escape sequence must not reach the operator's terminal, nor a newline
/// forge a line of the listing.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn retry(spool: &Spool, ids: &[QueueId], as_json: bool) -> Result<i32, QueueToolError> {
    let mut done = Vec::new();
    let mut missing = 0;
    for id in ids {
        let _lock = match MessageLock::lock_within(spool.root(), id, LOCK_WAIT) {
            Ok(l) => l,
            Err(crate::delivery::lock::LockError::Gone) => {
                missing += 1;
                continue;
            }
            Err(source) => return Err(QueueToolError::Lock { id: *id, source }),
        };
        let q = match spool.load(id) {
            Ok(q) => q,
            Err(e) if e.is_not_found() => {
                missing += 1;
                continue;
            }
            Err(source) => return Err(QueueToolError::Change { id: *id, source }),
        };
        let mut state = q.state.clone();
        for r in state
            .recipients
            .iter_mut()
            .filter(|r| r.status == Status::Pending)
        {
            r.next_attempt = None;
        }
        if state != q.state {
            spool
                .save_state(id, &state)
                .map_err(|source| QueueToolError::Change { id: *id, source })?;
        }
        done.push(id.to_string());
    }
    let woke = nullq_spool::pull_trigger(spool.root());
    if as_json {
        println!(
            "{}",
            json!({ "retried": done, "missing": missing, "runner_woken": woke })
        );
    } else {
        println!(
            "{} messages scheduled for now{}{}",
            done.len(),
            if missing > 0 {
                format!(", {missing} already gone")
            } else {
                String::new()
            },
            if woke {
                "; runner woken"
            } else {
                "; no runner running (they go at its next start)"
            }
        );
    }
    Ok(if ids.len() == 1 && missing == 1 { 1 } else { 0 })
}

fn delete(spool: &Spool, id: &QueueId, as_json: bool) -> Result<i32, QueueToolError> {
    let lock = match MessageLock::lock_within(spool.root(), id, LOCK_WAIT) {
        Ok(l) => l,
        Err(crate::delivery::lock::LockError::Gone) => {
            eprintln!("nullq queue: {id}: no such message");
            return Ok(1);
        }
        Err(source) => return Err(QueueToolError::Lock { id: *id, source }),
    };
    spool
        .remove(id)
        .map_err(|source| QueueToolError::Change { id: *id, source })?;
    drop(lock);
    if as_json {
        println!("{}", json!({ "deleted": id.to_string() }));
    } else {
        println!("{id}: deleted (no bounce sent)");
    }
    Ok(0)
}

fn stats(spool: &Spool, config: &ServerConfig, as_json: bool) -> Result<i32, QueueToolError> {
    let now = SystemTime::now();
    let all = load_all(spool)?;
    let (mut pending, mut delivered, mut failed) = (0u64, 0u64, 0u64);
    for q in &all {
        for r in &q.state.recipients {
            match r.status {
                Status::Pending => pending += 1,
                Status::Delivered => delivered += 1,
                Status::Failed => failed += 1,
            }
        }
    }
    let summary = QueueSummary::of(&all);
    let oldest = summary.oldest;
    let bad_files = cgp_bad_files(config);
    // Files set aside (at start-up or when the runner found them bad), each logged once at
    // the time: counted here so that they are not forgotten.
    let corrupt_dir = spool.root().join("corrupt");
    let corrupt = std::fs::read_dir(&corrupt_dir).map_or(0, |rd| rd.count());
    let runner = Stats::read(spool.root());
    if as_json {
        println!(
            "{}",
            json!({
                "messages": all.len(),
                "recipients": { "pending": pending, "delivered": delivered, "failed": failed },
                "oldest": oldest.map(|(id, _)| json!({
                    "id": id.to_string(),
                    "age_secs": summary.oldest_age(now).as_secs(),
                })),
                "cgp_bad_files": bad_files,
                "corrupt_files": corrupt,
                "runner": runner,
            })
        );
        return Ok(0);
    }
    println!("messages:   {}", all.len());
    println!("recipients: {pending} pending, {delivered} delivered, {failed} failed (of queued messages)");
    match oldest {
        Some((id, _)) => println!("oldest:     {id} ({} old)", human(summary.oldest_age(now))),
        None => println!("oldest:     -"),
    }
    println!(
        "corrupt:    {corrupt} files in {} (set aside, never delivered; the log says why)",
        corrupt_dir.display()
    );
    if !bad_files.is_empty() {
        println!("CommuniGate Pro .bad files: {}", bad_files.len());
        for f in &bad_files {
            println!("    {}", shown(f));
        }
    }
    match runner {
        None => println!("runner:     no counters yet (no runner has run on this spool)"),
        Some(s) => {
            let since = UNIX_EPOCH + Duration::from_secs(s.started);
            println!(
                "runner:     pid {}, counting since {} ({} ago)",
                s.pid,
                nullq_mail::date::date822(since),
                human(now.duration_since(since).unwrap_or_default())
            );
            println!(
                "    {:<40} {:>10} {:>10} {:>10}",
                "BACKEND", "DELIVERED", "DEFERRED", "FAILED"
            );
            for (b, c) in &s.backends {
                println!(
                    "    {:<40} {:>10} {:>10} {:>10}",
                    b, c.delivered, c.deferred, c.failed
                );
            }
            println!(
                "    bounces queued {}, delay warnings {}, double bounces {}",
                s.bounces_queued, s.warnings_queued, s.double_bounces
            );
        }
    }
    Ok(0)
}
