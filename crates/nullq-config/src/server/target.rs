//! [`Target`]: one delivery target as `--deliver` and `[delivery] target` or `routes` write it
//! (`maildir:DIR`, `smtp://HOST:PORT`, `pipe:COMMAND`, ...), parsed when it is read, printed
//! back the same way; and [`split_command`], the shell-like word splitting of `pipe:`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
