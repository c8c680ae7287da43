//! qmail-queue's exit codes (qmail-queue(8)): the error protocol between a program that queues
//! mail and whoever ran it.
//!
//! One table, used both ways: the client's `qmail-queue`/`qmail-qmqpc` exits with these codes, and
//! the server's qmail-queue delivery backend reads them from a child. Codes 11–40 are permanent;
//! every other non-zero code is temporary, so an unknown code means "retry", never "lost".

use std::fmt;

/// A qmail-queue failure (success is exit 0 and has no variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueExit {
    /// 11: address too long.
    AddressTooLong,
    /// 31: the mail server permanently refuses the message (QMQP `D`).
    PermanentRefusal,
    /// 51: out of memory.
    NoMemory,
    /// 52: timeout.
    Timeout,
    /// 53: write error, e.g. disk full.
    WriteError,
    /// 54: unable to read the message or envelope.
    ReadError,
    /// 55: unable to read a configuration file (e.g. no qmqpservers).
    ConfigError,
    /// 56: problem making a network connection from this host.
    NetworkError,
    /// 61: problem with the qmail home directory.
    HomeDir,
    /// 71: the mail server temporarily refuses the message (QMQP `Z`).
    TempRefusal,
    /// 72: connection to the mail server timed out.
    ConnectTimeout,
    /// 73: connection to the mail server rejected.
    ConnectRejected,
    /// 74: connection succeeded but communication failed.
    CommFailed,
    /// 81: internal bug.
    Bug,
    /// 91: envelope format error.
    EnvelopeFormat,
    /// Any other code: permanent if in 11–40, else temporary.
    Other(u8),
}

impl QueueExit {
    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            QueueExit::AddressTooLong => 11,
            QueueExit::PermanentRefusal => 31,
            QueueExit::NoMemory => 51,
            QueueExit::Timeout => 52,
            QueueExit::WriteError => 53,
            QueueExit::ReadError => 54,
            QueueExit::ConfigError => 55,
            QueueExit::NetworkError => 56,
            QueueExit::HomeDir => 61,
            QueueExit::TempRefusal => 71,
            QueueExit::ConnectTimeout => 72,
            QueueExit::ConnectRejected => 73,
            QueueExit::CommFailed => 74,
            QueueExit::Bug => 81,
            QueueExit::EnvelopeFormat => 91,
            QueueExit::Other(code) => code,
        }
    }

    /// The failure for a child's exit code; `None` for 0 (success).
    pub fn from_code(code: i32) -> Option<QueueExit> {
        let Ok(code) = u8::try_from(code) else {
            // Out of range (a signal, a negative status): treat as a temporary problem.
            return Some(QueueExit::Bug);
        };
        Some(match code {
            0 => return None,
            11 => QueueExit::AddressTooLong,
            31 => QueueExit::PermanentRefusal,
            51 => QueueExit::NoMemory,
            52 => QueueExit::Timeout,
            53 => QueueExit::WriteError,
            54 => QueueExit::ReadError,
            55 => QueueExit::ConfigError,
            56 => QueueExit::NetworkError,
            61 => QueueExit::HomeDir,
            71 => QueueExit::TempRefusal,
            72 => QueueExit::ConnectTimeout,
            73 => QueueExit::ConnectRejected,
            74 => QueueExit::CommFailed,
            81 => QueueExit::Bug,
            91 => QueueExit::EnvelopeFormat,
            other => QueueExit::Other(other),
        })
    }

    /// Whether the failure is permanent (11–40): give up rather than retry.
    pub fn is_permanent(self) -> bool {
        (11..=40).contains(&self.code())
    }

    /// The enhanced status code qmail appends, as `qmail.c` maps these exits.
    pub fn status_code(self) -> &'static str {
        match self {
            QueueExit::AddressTooLong => "5.1.3",
            QueueExit::NoMemory => "4.3.0",
            QueueExit::Timeout | QueueExit::ConnectTimeout => "4.3.0",
            QueueExit::WriteError => "4.3.0",
            QueueExit::EnvelopeFormat => "4.3.0",
            _ if self.is_permanent() => "5.3.0",
            _ => "4.3.0",
        }
    }
}

impl fmt::Display for QueueExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            QueueExit::AddressTooLong => "address too long",
            QueueExit::PermanentRefusal => "mail server permanently rejected message",
            QueueExit::NoMemory => "out of memory",
            QueueExit::Timeout => "timeout",
            QueueExit::WriteError => "unable to write (disk full?)",
            QueueExit::ReadError => "unable to read message or envelope",
            QueueExit::ConfigError => "unable to read configuration",
            QueueExit::NetworkError => "unable to make network connection",
            QueueExit::HomeDir => "unable to cd to qmail home directory",
            QueueExit::TempRefusal => "mail server temporarily rejected message",
            QueueExit::ConnectTimeout => "connection to mail server timed out",
            QueueExit::ConnectRejected => "connection to mail server rejected",
            QueueExit::CommFailed => "communication with mail server failed",
            QueueExit::Bug => "internal bug",
            QueueExit::EnvelopeFormat => "envelope format error",
            QueueExit::Other(code) if (11..=40).contains(code) => "permanent problem",
            QueueExit::Other(_) => "temporary problem",
        };
        write!(f, "{text} (#{})", self.status_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classify() {
        for code in 1..=255 {
            let exit = QueueExit::from_code(code);
            let Some(exit) = exit else {
                panic!("{code} is not success");
            };
            assert_eq!(i32::from(exit.code()), code);
            assert_eq!(exit.is_permanent(), (11..=40).contains(&code), "{code}");
        }
        assert_eq!(QueueExit::from_code(0), None);
        assert_eq!(QueueExit::from_code(-1), Some(QueueExit::Bug));
        assert_eq!(
            QueueExit::PermanentRefusal.to_string(),
            "mail server permanently rejected message (#5.3.0)"
        );
    }
}
