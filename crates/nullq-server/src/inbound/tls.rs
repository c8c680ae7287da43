//! QMQP over TLS (`[tls]`, `nullq serve --tls-listen`): the server's certificate and key, the
//! CA that client certificates must chain to, swapped atomically on SIGHUP; and what a finished
//! handshake tells about the client ([`TlsInfo`]: version, cipher, the verified name).
//!
//! The listener admits a TLS connection exactly as a plain one (access rules on the address,
//! session limits) before the handshake; the handshake then runs inside the session's slot,
//! bounded by the first-byte timeout, and with `tls.client_ca` a client without a certificate
//! that chains to it fails there, before a QMQP byte is read. rustls with the ring provider,
//! as the SMTP backend's STARTTLS.
//!
//! A client certificate's name is its subject's first CN, else its first DNS name (a
//! certificate that has neither has no name, and matches no `tls_names`): the CA vouched for
//! both, and it is what Postfix shows as the client's CN.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nullq_config::server::TlsConfig;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::inbound::peer::TlsInfo;

/// Why the TLS settings could not be loaded (at start, the server does not start; on SIGHUP,
/// the old ones stay).
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// `tls.cert`, `tls.key` or `tls.client_ca`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A file is not PEM, or has nothing of what it should hold.
    Pem {
        /// `tls.cert`, `tls.key` or `tls.client_ca`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// The client CA file holds no certificate rustls can use as a trust anchor.
    NoCa(PathBuf),
    /// The client certificate verifier could not be built.
    Verifier(rustls::server::VerifierBuilderError),
    /// rustls refused the certificate and key (a key that does not belong to the certificate).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { key, path, source } => {
                write!(f, "{key}: cannot read {}: {source}", path.display())
            }
            TlsError::Pem { key, path, source } => {
                write!(f, "{key}: {}: not usable PEM: {source}", path.display())
            }
            TlsError::NoCa(path) => write!(
                f,
                "tls.client_ca: {}: no CA certificate in it",
                path.display()
            ),
            TlsError::Verifier(e) => write!(f, "tls.client_ca: {e}"),
            TlsError::Rustls(e) => write!(f, "tls.cert and tls.key: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Pem { source, .. } => Some(source),
            TlsError::Verifier(e) => Some(e),
            TlsError::Rustls(e) => Some(e),
            TlsError::NoCa(_) => None,
        }
    }
}

/// The server's TLS settings: the files they come from and the configuration built from them.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Read the files `[tls]` names (`None` when it has no listener).
    pub fn load(config: &TlsConfig) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key), true) = (&config.cert, &config.key, config.enabled()) else {
            return Ok(None);
        };
        let built = build(cert, key, config.client_ca.as_deref())?;
        Ok(Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca.clone(),
            current: RwLock::new(Arc::new(built)),
        }))
    }

    /// Read the files again; on error the old settings stay (new connections keep working).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(build(&self.cert, &self.key, self.client_ca.as_deref())?);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// The acceptor for a new connection, with the settings of this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A panic while holding the lock cannot leave the Arc half-written: use it.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }

    /// The files, for the log.
    pub fn describe(&self) -> String {
        let mut text = format!("cert={} key={}", self.cert.display(), self.key.display());
        match &self.client_ca {
            Some(ca) => text.push_str(&format!(" client_ca={} (required)", ca.display())),
            None => text.push_str(" client_ca=- (no client certificate asked for)"),
        }
        text
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn build(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let pem_error = |key: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { key, path, source }
    };
    let chain = CertificateDer::pem_slice_iter(&read("tls.cert", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("tls.cert", cert))?;
    if chain.is_empty() {
        return Err(pem_error("tls.cert", cert)(
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&read("tls.key", key)?).map_err(pem_error("tls.key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&read("tls.client_ca", path)?) {
                let ca = ca.map_err(pem_error("tls.client_ca", path))?;
                // A certificate that cannot be a trust anchor is skipped, as in a CA bundle.
                let _ = roots.add(ca);
            }
            if roots.is_empty() {
                return Err(TlsError::NoCa(path.to_path_buf()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, private)
        .map_err(TlsError::Rustls)
}

/// What a finished handshake says: the version, the cipher suite, and the verified client
/// certificate's name (rustls only completes a handshake whose certificate verified).
pub fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    let client = conn
        .peer_certificates()
        .and_then(<[CertificateDer<'_>]>::first)
        .and_then(certificate_name);
    TlsInfo {
        version,
        cipher,
        client,
    }
}

/// A certificate's name: its subject's first CN, else its first DNS subject alternative name.
pub fn certificate_name(der: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    common_name(cert.subject())
        .or_else(|| cert.valid_dns_names().next().map(str::to_owned))
        .filter(|n| !n.is_empty())
}

/// One DER element of `input`: (tag, contents, the rest). Definite lengths only (DER).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The first commonName (2.5.4.3) of a Name's contents (the RDNSequence inside its SEQUENCE),
/// if it is a string type that is text.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !rdns.is_empty() {
        let (tag, mut set, rest) = element(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, pair, rest) = element(set)?;
            set = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(pair)?;
            if tag != OID || oid != CN {
                continue;
            }
            // UTF8String, PrintableString, T61String (Latin-1 in practice, ASCII here), IA5String.
            let (tag, text, _) = element(value)?;
            return match tag {
                0x0c | 0x13 | 0x14 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contents of a Name for `C=NL, O=Example, CN=<cn>` (CN as UTF8String).
    fn name(cn: &str) -> Vec<u8> {
        let atv = |oid: &[u8], tag: u8, value: &[u8]| {
            let mut pair = vec![0x06, oid.len() as u8];
            pair.extend_from_slice(oid);
            pair.extend_from_slice(&[tag, value.len() as u8]);
            pair.extend_from_slice(value);
            let mut seq = vec![0x30, pair.len() as u8];
            seq.extend(pair);
            let mut set = vec![0x31, seq.len() as u8];
            set.extend(seq);
            set
        };
        let mut out = atv(&[0x55, 0x04, 0x06], 0x13, b"NL");
        out.extend(atv(&[0x55, 0x04, 0x0a], 0x0c, b"Example"));
        out.extend(atv(&[0x55, 0x04, 0x03], 0x0c, cn.as_bytes()));
        out
    }

    #[test]
    fn finds_the_common_name() {
        assert_eq!(
            common_name(&name("host1.example.net")).as_deref(),
            Some("host1.example.net")
        );
        // The last 12 bytes are the CN's SET.
        let whole = name("x");
        assert_eq!(common_name(&whole[..whole.len() - 12]), None);
    }

    #[test]
    fn garbage_is_no_name() {
        for bad in [
            &b""[..],
            &[0x31],
            &[0x31, 0x05, 0x30],
            &[0x31, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x00],
            &[0x31, 0x80],
        ] {
            assert_eq!(common_name(bad), None, "{bad:?}");
        }
        let good = name("h");
        for cut in 0..good.len() {
            // Never panics on any prefix; only the whole says "h".
            let _ = common_name(&good[..cut]);
        }
        assert_eq!(
            certificate_name(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn missing_files_name_the_key() {
        let config = TlsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            client_ca: None,
        };
        let e = ServerTls::load(&config).unwrap_err().to_string();
        assert!(
            e.starts_with("tls.cert: cannot read /nonexistent/cert.pem"),
            "{e}"
        );
        assert!(ServerTls::load(&TlsConfig::default()).unwrap().is_none());
    }
}
