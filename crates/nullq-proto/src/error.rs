//! The decoding error: what was wrong with the peer's bytes, and where.
//!
//! One type serves netstrings, QMQP requests and responses, because a QMQP request *is* nested
//! netstrings and a server answers every one of these problems the same way: a permanent `D`
//! naming the problem. (Server-side trouble — a full disk — is not a decoding error and never
//! appears here; that is a `Z`.) "Need more bytes" is not an error either: decoders return it as
//! a value.

use std::fmt;

/// What was wrong. `Display` gives the reason a person reads in the `D` answer and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A length with a leading zero, such as `01:`.
    LeadingZero,
    /// A `:` with no digits before it.
    MissingLength,
    /// Something other than a digit where a length should start.
    MissingLengthDigit(u8),
    /// Something other than a digit or `:` after the length digits.
    MissingColon(u8),
    /// Something other than `,` after the announced number of bytes.
    MissingComma(u8),
    /// An announced length over the limit (`length` is as far as it was read).
    LengthOverLimit {
        /// The announced length, or at least the part of it read before the cap was passed.
        length: u64,
        /// The cap.
        limit: u64,
    },
    /// The input ended before the request did (the client stopped halfway).
    Truncated,
    /// A netstring inside the request claims more bytes than the request has left.
    InnerOverrunsOuter,
    /// The request holds a message but no envelope sender.
    NoSender,
    /// The request holds no recipient.
    NoRecipient,
    /// Bytes after the end of the request.
    TrailingData,
    /// The message is larger than the size limit.
    MessageTooBig {
        /// The message's length.
        length: u64,
        /// The size limit (databytes).
        limit: u64,
    },
    /// The request announces more bytes than the limits allow in all (the message's size limit
    /// plus the largest envelope): the reason given until the limit it breaks is read.
    RequestTooBig {
        /// The announced length of the whole request.
        length: u64,
        /// The largest request the limits allow.
        limit: u64,
    },
    /// More recipients than allowed.
    TooManyRecipients {
        /// The limit.
        limit: usize,
    },
    /// An address longer than allowed.
    AddressTooLong {
        /// The address's length.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// A response that is not `K`, `Z` or `D` followed by text.
    BadResponse,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::LeadingZero => write!(f, "netstring length has a leading zero"),
            ErrorKind::MissingLength => write!(f, "netstring has no length before ':'"),
            ErrorKind::MissingLengthDigit(b) => {
                write!(f, "netstring length expected, got {}", show(*b))
            }
            ErrorKind::MissingColon(b) => {
                write!(f, "':' expected after netstring length, got {}", show(*b))
            }
            ErrorKind::MissingComma(b) => {
                write!(f, "',' expected after netstring data, got {}", show(*b))
            }
            ErrorKind::LengthOverLimit { length, limit } => write!(
                f,
                "announced length {length}{} is over the limit of {limit} bytes",
                if *length == u64::MAX { "+" } else { "" }
            ),
            ErrorKind::Truncated => write!(f, "connection ended before the request was complete"),
            ErrorKind::InnerOverrunsOuter => {
                write!(f, "a field is longer than the request that contains it")
            }
            ErrorKind::NoSender => write!(f, "request has no envelope sender"),
            ErrorKind::NoRecipient => write!(f, "request has no recipient"),
            ErrorKind::TrailingData => write!(f, "data after the end of the request"),
            ErrorKind::MessageTooBig { length, limit } => write!(
                f,
                "message is {length} bytes, over the size limit of {limit} bytes"
            ),
            ErrorKind::RequestTooBig { length, limit } => write!(
                f,
                "request is {length} bytes, over the size limit of {limit} bytes for a request"
            ),
            ErrorKind::TooManyRecipients { limit } => {
                write!(f, "too many recipients (the limit is {limit})")
            }
            ErrorKind::AddressTooLong { length, limit } => write!(
                f,
                "address of {length} bytes is over the limit of {limit} bytes"
            ),
            ErrorKind::BadResponse => write!(f, "response is not K, Z or D followed by text"),
        }
    }
}

/// Show a byte in an error message: printable ASCII as itself, the rest in hex.
fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// A decoding error: its kind and the byte offset in the stream where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: ErrorKind,
    offset: u64,
}

impl DecodeError {
    /// An error of `kind` at byte `offset`.
    pub fn new(kind: ErrorKind, offset: u64) -> DecodeError {
        DecodeError { kind, offset }
    }

    /// What was wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where in the stream (bytes from its start).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the stream is still in step after this error: true for a limit broken by a
    /// well-formed request (the rest of it can be read and thrown away before answering), false
    /// for a format error (nothing after it can be trusted; answer and close).
    pub fn is_resumable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::MessageTooBig { .. }
                | ErrorKind::RequestTooBig { .. }
                | ErrorKind::TooManyRecipients { .. }
                | ErrorKind::AddressTooLong { .. }
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.kind, self.offset)
    }
}

impl std::error::Error for DecodeError {}
