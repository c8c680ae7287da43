//! `[tls]`: QMQP over TLS (`qmqps://` on the client), beside the plain listener. The addresses
//! are parsed when the file is read (or the `--tls-listen` flags given); the certificate files
//! are read by the server when it starts and again on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::error::{invalid, keyed, ConfigError};

/// `[tls]`: where `nullq serve` accepts QMQP inside TLS, with which certificate, and whose
/// client certificates it requires.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to accept QMQP over TLS on, `IP:PORT` each (`--tls-listen`, repeatable).
    /// Default: none, no TLS listener. The null client's `qmqps://HOST` means port 7628
    /// (QMQP has no registered TLS port; 7628 needs no root). Mirrors Postfix's `smtps`
    /// service with `smtpd_tls_wrappermode`. The TLS sessions share the plain listener's
    /// access rules and session limits.
    #[serde(deserialize_with = "listen")]
    pub listen: Vec<SocketAddr>,
    /// The server's certificate chain, PEM, leaf first (`--tls-cert`). Needed with `listen`.
    /// Mirrors Postfix's `smtpd_tls_cert_file`.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1) (`--tls-key`). Needed with
    /// `listen`. Read at start and on SIGHUP after root is dropped, so the server's `user`
    /// must be able to read it (mode 0640, group of that user). Mirrors Postfix's
    /// `smtpd_tls_key_file`.
    pub key: Option<PathBuf>,
    /// CA certificates, PEM (`--tls-client-ca`). When set, every TLS client must present a
    /// certificate that one of them signed, or the handshake fails before a QMQP byte is
    /// read; the certificate's name (subject CN, else its first DNS name) is the client's
    /// `tls_name` for `[[policy.clients]] tls_names` and the Received line. Default: unset,
    /// no client certificate asked for. Mirrors Postfix's `smtpd_tls_CAfile` with
    /// `smtpd_tls_req_ccert = yes`.
    pub client_ca: Option<PathBuf>,
}

/// What `tls.listen` (and `--tls-listen`) must be.
fn listen_problem(text: &str) -> String {
    format!("{text:?} is not IP:PORT (write \"0.0.0.0:7628\" or \"[::]:7628\")")
}

/// `--tls-listen ADDR`: the address, or the error the same text in the file gives.
pub fn parse_tls_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid("tls.listen", listen_problem(text)))
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|_| keyed("tls.listen", listen_problem(text)))
        })
        .collect()
}

impl TlsConfig {
    /// Whether a TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// A listener needs a certificate and a key; certificate files without a listener would
    /// do nothing, which is a mistake worth saying; no path may be empty.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
            ("tls.client_ca", &self.client_ca),
        ] {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(key, "empty path"));
            }
        }
        if self.enabled() {
            if self.cert.is_none() {
                return Err(invalid("tls.cert", "needed with tls.listen"));
            }
            if self.key.is_none() {
                return Err(invalid("tls.key", "needed with tls.listen"));
            }
        } else if let Some(key) = [
            ("tls.cert", self.cert.is_some()),
            ("tls.key", self.key.is_some()),
            ("tls.client_ca", self.client_ca.is_some()),
        ]
        .iter()
        .find_map(|(k, set)| set.then_some(*k))
        {
            return Err(invalid(
                key,
                "set without tls.listen: no TLS listener would use it",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ServerConfig;

    #[test]
    fn tls_section() {
        let c = ServerConfig::from_toml_str(
            "[tls]\nlisten = [\"0.0.0.0:7628\"]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.listen, ["0.0.0.0:7628".parse().unwrap()]);
        assert!(c.tls.enabled());
        assert_eq!(c.tls.client_ca.as_deref(), Some("/ca.pem".as_ref()));
        assert!(!ServerConfig::default().tls.enabled());
        let again = ServerConfig::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn tls_errors_name_the_key() {
        for (text, key) in [
            ("[tls]\nlisten = [\"host:7628\"]", "tls.listen"),
            (
                "[tls]\nlisten = [\"127.0.0.1:7628\"]\nkey = \"/k\"",
                "tls.cert",
            ),
            (
                "[tls]\nlisten = [\"127.0.0.1:7628\"]\ncert = \"/c\"",
                "tls.key",
            ),
            ("[tls]\ncert = \"/c\"\nkey = \"/k\"", "tls.cert"),
            ("[tls]\nclient_ca = \"/ca\"", "tls.client_ca"),
            (
                "[tls]\nlisten = [\"127.0.0.1:7628\"]\ncert = \"\"\nkey = \"/k\"",
                "tls.cert",
            ),
        ] {
            let e = ServerConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
        assert!(super::parse_tls_listen("[::]:7628").is_ok());
        assert!(super::parse_tls_listen("7628")
            .unwrap_err()
            .to_string()
            .contains("tls.listen"));
    }
}
