//! Why a configuration could not be used ([`ConfigError`]), and how a value's own parse error
//! keeps the key it names on its way through serde.
//!
//! serde carries a value's error as text only, so a section that parses a value (an address, a
//! mode, a network) while the file is read writes it with [`keyed`], and
//! [`ConfigError::from_toml`] turns that text back into [`ConfigError::Invalid`] naming the key,
//! exactly as a check after reading would have.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

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
        /// The file, when read by [`ServerConfig::load`](super::ServerConfig::load).
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
        /// The file, when read by [`ServerConfig::load`](super::ServerConfig::load).
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
    pub(crate) fn with_path(mut self, p: &Path) -> ConfigError {
        match &mut self {
            ConfigError::Read { .. } => {}
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                *path = Some(p.to_path_buf())
            }
        }
        self
    }
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Starts and separates the key in a [`keyed`] message: a control character no TOML value
/// error from the parser holds.
const KEY_MARK: char = '\u{1}';

/// A serde error for `key`'s value, carrying the key: [`ConfigError::from_toml`] makes it
/// [`ConfigError::Invalid`].
pub(crate) fn keyed<E: serde::de::Error>(key: &str, problem: impl fmt::Display) -> E {
    E::custom(format_args!("{KEY_MARK}{key}{KEY_MARK}{problem}"))
}

/// The key and problem of a [`keyed`] message, or `None` for any other. Only the first line
/// is the problem: the parser's `Display` may add lines of its own before the file's text is
/// known.
pub(crate) fn unkeyed(message: &str) -> Option<(&str, &str)> {
    let (key, rest) = message.strip_prefix(KEY_MARK)?.split_once(KEY_MARK)?;
    Some((key, rest.lines().next().unwrap_or("")))
}

impl ConfigError {
    /// The error for `text` that the TOML parser (or a section's value, through [`keyed`])
    /// refused: the key's problem, or where in the text it is and the parser's message.
    pub(crate) fn from_toml(text: &str, e: &toml::de::Error) -> ConfigError {
        if let Some((key, problem)) = unkeyed(e.message()) {
            return invalid(key, problem);
        }
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
    }
}
