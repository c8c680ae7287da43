//! `[delivery.smtp]`: the `smtp://` and `smtps://` client: TLS, authentication, the EHLO
//! name, timeouts and connection reuse.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Only deliver over TLS, with a verified certificate (Postfix `secure`).
    Required,
    /// Use TLS when offered, without verifying the certificate (Postfix `may`).
    #[default]
    Opportunistic,
    /// Never (Postfix `none`).
    Off,
}

/// `[delivery.smtp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// STARTTLS: `required`, `opportunistic` or `off`. Default `opportunistic`.
    pub starttls: StartTls,
    /// Verify the server's certificate when TLS is required or implicit (`smtps://`).
    /// Default true.
    pub tls_verify: bool,
    /// Trusted certificates (PEM) for verification. Default: the system's
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<PathBuf>,
    /// AUTH user name; with `password`, AUTH PLAIN (or LOGIN if that is all the server offers).
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// Allow AUTH over a connection without TLS. Default false.
    pub auth_without_tls: bool,
    /// The name in EHLO. Default: the server's `hostname`.
    pub helo: Option<String>,
    /// Seconds to wait for a connection. Default 30.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for each reply, as a whole (and for the final reply after the
    /// message), and for each write. Default 300. One message's conversation takes an hour at
    /// most (the backend's `SESSION_LIMIT`).
    pub timeout_secs: u64,
    /// Messages sent over one connection before it is closed. Default 100.
    pub max_messages_per_connection: u32,
    /// Seconds an idle connection is kept for the next message. Default 10.
    pub idle_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            starttls: StartTls::Opportunistic,
            tls_verify: true,
            ca_file: None,
            username: None,
            password: None,
            auth_without_tls: false,
            helo: None,
            connect_timeout_secs: 30,
            timeout_secs: 300,
            max_messages_per_connection: 100,
            idle_secs: 10,
        }
    }
}
