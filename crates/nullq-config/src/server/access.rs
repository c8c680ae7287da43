//! `[access]`: which clients may connect, as a tcprules file that `nullq-tcprules` reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Access control: which clients may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// A rules file in ucspi-tcp's format: rules text (`/etc/qmqp.tcp`) or the cdb `tcprules`
    /// compiles from it (`/etc/qmqp.cdb`); see `nullq_tcprules::Rules::load` for how the
    /// two are told apart. Default: unset, meaning allow 127.0.0.0/8 and `::1` and deny the
    /// rest (`nullq_tcprules::Rules::loopback_only`). Mirrors `tcpserver -x
    /// /etc/qmqp.cdb` and Postfix's `qmqpd_authorized_clients`.
    pub rules: Option<PathBuf>,
}
