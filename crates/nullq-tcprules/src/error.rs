//! What can be wrong with rules: [`RulesError`] for a file or text as a whole, naming the file
//! and line, and [`LineProblem`] for one line of rules text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::cdb::CdbError;

/// What is wrong with one line of a rules text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineProblem {
    /// The line has no `:` between address and instructions.
    NoColon,
    /// No `:` in the line is followed by `allow` or `deny`.
    NoAction,
    /// Something other than `,VAR=...` follows the action or a setting.
    ExpectedComma {
        /// What was found instead.
        found: String,
    },
    /// A `,VAR` setting with no `=`.
    MissingEquals,
    /// A setting `,=...` with no variable name.
    EmptyName,
    /// A setting `,VAR=` with nothing after the `=`.
    MissingValue,
    /// The value's quote (the first character after `=`) is never closed.
    Unterminated {
        /// The quote character.
        quote: char,
    },
    /// The line contains a carriage return (a CRLF file).
    CarriageReturn,
    /// The address starts or ends with a blank.
    BlankInAddress,
    /// An address with no `=`, `@` or `:` that is not made of digits and dots (and a range's
    /// `-`): `localhost:allow` where `=localhost:allow` was meant.
    BadIpv4,
    /// A range bound is not a decimal number.
    BadRangeNumber,
    /// A range that covers no number (`low > high`, or `low > 255`).
    EmptyRange,
    /// An IPv6 address or prefix that tcpserver would never print.
    BadIpv6 {
        /// The form to write instead, when there is one.
        canonical: Option<String>,
    },
    /// An IPv4-mapped IPv6 address: such clients are checked as IPv4.
    Ipv4Mapped {
        /// The IPv4 form to write instead.
        ipv4: String,
    },
    /// A host rule with upper case letters: tcpserver's names are lower case.
    UppercaseHost,
    /// A variable's name or value is not UTF-8 (the quote split a character).
    NotUtf8,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::NoColon => write!(f, "no ':' between address and instructions"),
            LineProblem::NoAction => write!(f, "expected 'allow' or 'deny' after the ':'"),
            LineProblem::ExpectedComma { found } => {
                write!(
                    f,
                    "expected ',VAR=\"value\"' or the end of the line, found {found:?}"
                )
            }
            LineProblem::MissingEquals => write!(f, "a setting has no '=' (write ,VAR=\"value\")"),
            LineProblem::EmptyName => write!(f, "a setting has no variable name before '='"),
            LineProblem::MissingValue => {
                write!(
                    f,
                    "a setting has nothing after '=' (write ,VAR=\"\" for an empty value)"
                )
            }
            LineProblem::Unterminated { quote } => {
                write!(f, "the value's quote {quote:?} is never closed")?;
                if *quote != '"' && *quote != '\'' {
                    write!(
                        f,
                        " (the first character after '=' is the quote: write ,VAR=\"value\")"
                    )?;
                }
                Ok(())
            }
            LineProblem::CarriageReturn => {
                write!(
                    f,
                    "carriage return in the line (convert the file to LF line ends)"
                )
            }
            LineProblem::BlankInAddress => write!(f, "blank at the start or end of the address"),
            LineProblem::BadIpv4 => write!(
                f,
                "not an IPv4 address or prefix (digits and dots; host rules start with '=')"
            ),
            LineProblem::BadRangeNumber => write!(f, "a range bound is not a decimal number"),
            LineProblem::EmptyRange => write!(f, "the range covers no number from 0 to 255"),
            LineProblem::BadIpv6 { canonical: Some(c) } => write!(
                f,
                "tcpserver writes this IPv6 address as {c}, so the rule would never match"
            ),
            LineProblem::BadIpv6 { canonical: None } => write!(
                f,
                "not an IPv6 address, nor a prefix of one in lower case ending in ':'"
            ),
            LineProblem::Ipv4Mapped { ipv4 } => {
                write!(f, "IPv4-mapped clients are checked as IPv4: write {ipv4}")
            }
            LineProblem::UppercaseHost => write!(
                f,
                "host names are looked up in lower case, so this rule would never match"
            ),
            LineProblem::NotUtf8 => write!(f, "a variable's name or value is not UTF-8"),
        }
    }
}

/// Why rules could not be read. Each names the file (when there is one) and what is wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum RulesError {
    /// The rules file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A line of a rules text is wrong.
    Line {
        /// The file, when read by [`Rules::load`](crate::Rules::load).
        path: Option<PathBuf>,
        /// The line number, from 1.
        line: usize,
        /// The line as written.
        text: String,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// A text rules file is not UTF-8.
    NotUtf8 {
        /// The file.
        path: Option<PathBuf>,
        /// The line holding the first bad byte, from 1.
        line: usize,
    },
    /// The cdb is corrupt.
    Cdb {
        /// The file, when read by [`Rules::load`](crate::Rules::load).
        path: Option<PathBuf>,
        /// What is wrong.
        source: CdbError,
    },
    /// A cdb rule sets a variable whose name or value is not UTF-8.
    CdbValue {
        /// The file, when read by [`Rules::load`](crate::Rules::load).
        path: Option<PathBuf>,
        /// The rule's key, with bad bytes replaced.
        key: String,
    },
}

impl RulesError {
    pub(crate) fn with_path(mut self, p: &Path) -> RulesError {
        match &mut self {
            RulesError::Read { .. } => {}
            RulesError::Line { path, .. }
            | RulesError::NotUtf8 { path, .. }
            | RulesError::Cdb { path, .. }
            | RulesError::CdbValue { path, .. } => *path = Some(p.to_path_buf()),
        }
        self
    }
}

/// Writes `path: ` or, without a path, `what: `.
fn prefix(f: &mut fmt::Formatter<'_>, path: &Option<PathBuf>, what: &str) -> fmt::Result {
    match path {
        Some(p) => write!(f, "{}: ", p.display()),
        None => write!(f, "{what}: "),
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesError::Read { path, source } => {
                write!(f, "{}: cannot read rules: {source}", path.display())
            }
            RulesError::Line {
                path,
                line,
                text,
                problem,
            } => {
                prefix(f, path, "rules")?;
                write!(f, "line {line}: {problem}: {text:?}")
            }
            RulesError::NotUtf8 { path, line } => {
                prefix(f, path, "rules")?;
                write!(f, "line {line}: not UTF-8")
            }
            RulesError::Cdb { path, source } => {
                prefix(f, path, "rules cdb")?;
                write!(f, "{source}")
            }
            RulesError::CdbValue { path, key } => {
                prefix(f, path, "rules cdb")?;
                write!(f, "the rule for {key:?} sets a variable that is not UTF-8")
            }
        }
    }
}

impl std::error::Error for RulesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RulesError::Read { source, .. } => Some(source),
            RulesError::Cdb { source, .. } => Some(source),
            _ => None,
        }
    }
}
