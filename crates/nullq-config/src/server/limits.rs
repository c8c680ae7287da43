//! `[limits]`: sizes, counts and times a QMQP session is held to. Several can be overridden
//! by `nullq serve` flags, so their checks run on the finished configuration.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

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

impl Limits {
    /// No limit may be 0, and a per-client or per-read limit not above the whole's.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
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
        Ok(())
    }
}
