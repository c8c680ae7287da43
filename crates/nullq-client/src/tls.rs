//! QMQP over TLS for `qmqps://HOST[:PORT]` lines of `control/qmqpservers`: blocking rustls
//! (`rustls::StreamOwned` over std's `TcpStream`, ring provider), no runtime, no thread.
//!
//! Paid for only when used: [`ClientTls::new`] reads nothing; the control files and the
//! certificates are read at the first `qmqps://` server a message is offered to, once per
//! process. A plain-only `qmqpservers` never touches them.
//!
//! The control files (under `control/`, each one line, a path):
//! - `tlscafile`: the CAs a server's certificate must chain to (PEM). Default: the system's
//!   store, [`SYSTEM_CA_FILE`] (Debian's `ca-certificates`), as the server's SMTP backend.
//! - `tlsclientcert`, `tlsclientkey`: a client certificate (PEM chain, leaf first) and its key,
//!   for servers that require one (`nullq serve --tls-client-ca`). Both or neither.
//!
//! The key names the host to the server, and the client runs as every local user (cron jobs,
//! mutt), so who can read the key can send as the host from anywhere. nullq therefore refuses a
//! key file that its group or others may read or write, or that belongs to someone other than
//! the user running the client or root: a root-only key (`chmod 600`, owner root) is used by
//! root's mail only; another user's client cannot open it and that server fails over for them
//! like any server failure (next server, fallback queue). A site that wants every user's mail
//! to carry the host's certificate gives those users a server without `--tls-client-ca` on
//! the TLS port (encrypted, server verified) and identifies them by address as for plain QMQP.
//!
//! A server certificate that does not verify, or a handshake the server refuses (no or a
//! wrong client certificate), is a broken conversation with that server (exit 74 if it was
//! the last one), with rustls's reason in the error line; unusable TLS settings fail each
//! `qmqps://` server before it is connected to (73), and plain servers are still tried.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::control::{ControlDir, ServerAddr, ServerHost};

/// The system's CA store, used when `control/tlscafile` is absent (Debian's path).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS control files, in the order `qmail-showctl` shows them.
pub const CONTROL_FILES: &[&str] = &["tlscafile", "tlsclientcert", "tlsclientkey"];

/// Why the TLS settings could not be used (every `qmqps://` server fails with it).
#[derive(Debug)]
pub enum TlsSetupError {
    /// A control file naming a file could not be read.
    Control {
        /// The control file's name.
        name: &'static str,
        /// Why.
        error: io::Error,
    },
    /// A file named by a control file could not be read.
    Read {
        /// The control file that names it (`tlscafile` for the default store too).
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file is not PEM, or has none of what it should hold.
    Pem {
        /// The control file that names it.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no certificate usable as a trust anchor.
    NoCa(PathBuf),
    /// One of `tlsclientcert` and `tlsclientkey` without the other.
    Unpaired(&'static str),
    /// The key file is not private to its owner, or not owned by us or root.
    UnsafeKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the settings (a key that does not match the certificate, ...).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::Control { name, error } => {
                write!(f, "unable to read control/{name}: {error}")
            }
            TlsSetupError::Read { name, path, error } => {
                write!(
                    f,
                    "control/{name}: unable to read {}: {error}",
                    path.display()
                )
            }
            TlsSetupError::Pem { name, path, error } => {
                write!(
                    f,
                    "control/{name}: {}: not usable PEM: {error}",
                    path.display()
                )
            }
            TlsSetupError::NoCa(path) => {
                write!(
                    f,
                    "control/tlscafile: {}: no CA certificate in it",
                    path.display()
                )
            }
            TlsSetupError::Unpaired(missing) => {
                write!(f, "control/{missing} is missing: a client certificate needs both tlsclientcert and tlsclientkey")
            }
            TlsSetupError::UnsafeKey { path, problem } => {
                write!(f, "control/tlsclientkey: {}: {problem}", path.display())
            }
            TlsSetupError::Rustls(e) => write!(f, "TLS settings refused: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The TLS settings of this run: where they come from, and, from the first `qmqps://` server
/// on, what they are.
#[derive(Debug)]
pub struct ClientTls {
    control: ControlDir,
    /// Whether `tlsclientcert` and `tlsclientkey` are used ([`ClientTls::without_client_cert`]).
    client_cert: bool,
    loaded: OnceLock<Result<Arc<ClientConfig>, TlsSetupError>>,
}

impl Clone for ClientTls {
    /// A copy that loads again when used (a loaded configuration holds an error that cannot be
    /// copied; nothing clones a transport after sending).
    fn clone(&self) -> ClientTls {
        ClientTls {
            client_cert: self.client_cert,
            ..ClientTls::new(&self.control)
        }
    }
}

impl ClientTls {
    /// The settings of `control`, not read yet.
    pub fn new(control: &ControlDir) -> ClientTls {
        ClientTls {
            control: control.clone(),
            client_cert: true,
            loaded: OnceLock::new(),
        }
    }

    /// The same settings without the client certificate: for another user's mail, which the
    /// host's certificate must not vouch for (root's flush of the fallback queue).
    pub fn without_client_cert(&self) -> ClientTls {
        ClientTls {
            client_cert: false,
            ..ClientTls::new(&self.control)
        }
    }

    /// The client configuration, read at the first call.
    pub fn config(&self) -> Result<Arc<ClientConfig>, &TlsSetupError> {
        self.loaded
            .get_or_init(|| load(&self.control, self.client_cert).map(Arc::new))
            .as_ref()
            .map(Arc::clone)
    }
}

/// The path a TLS control file names, or `None` when the file is absent or empty.
pub fn control_path(
    control: &ControlDir,
    name: &'static str,
) -> Result<Option<PathBuf>, TlsSetupError> {
    control
        .line(name)
        .map(|l| l.map(PathBuf::from))
        .map_err(|error| TlsSetupError::Control { name, error })
}

fn read(name: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|error| TlsSetupError::Read {
        name,
        path: path.to_path_buf(),
        error,
    })
}

fn pem_error(
    name: &'static str,
    path: &Path,
) -> impl Fn(rustls::pki_types::pem::Error) -> TlsSetupError {
    let path = path.to_path_buf();
    move |error| TlsSetupError::Pem {
        name,
        path: path.clone(),
        error,
    }
}

/// What is wrong with a client key file, judged on the open file (no race with a rename):
/// not a regular file, readable or writable by group or others, or owned by neither the user
/// running the client nor root.
pub fn key_problem(file: &File) -> Option<String> {
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Some(format!("unable to stat: {e}")),
    };
    if !meta.is_file() {
        return Some("not a regular file".to_owned());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Some(format!(
            "mode {mode:04o} lets group or others read or write it: chmod 600 (the key names this host)"
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "owned by uid {}, neither this user ({me}) nor root",
            meta.uid()
        ));
    }
    None
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let read_error = |error| TlsSetupError::Read {
        name: "tlsclientkey",
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(read_error)?;
    if let Some(problem) = key_problem(&file) {
        return Err(TlsSetupError::UnsafeKey {
            path: path.to_path_buf(),
            problem,
        });
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem).map_err(read_error)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(pem_error("tlsclientkey", path))
}

/// The CA certificates `control/tlscafile` (the file at `control_file`) gives, for `qmqps://`
/// lines and `smtp://...?starttls=required`: the certificates themselves (PEM), or the path of
/// a bundle on its first line; without the file, the system's store ([`SYSTEM_CA_FILE`]).
/// Returns the file they were read from, and the store.
pub fn ca_roots(control_file: &Path) -> Result<(PathBuf, rustls::RootCertStore), TlsSetupError> {
    let (path, pem) = match std::fs::read(control_file) {
        Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => {
            (control_file.to_path_buf(), bytes)
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            let Some(first) = first else {
                return Err(TlsSetupError::NoCa(control_file.to_path_buf()));
            };
            let path = PathBuf::from(first);
            let pem = read("tlscafile", &path)?;
            (path, pem)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let path = PathBuf::from(SYSTEM_CA_FILE);
            let pem = read("tlscafile", &path)?;
            (path, pem)
        }
        Err(error) => {
            return Err(TlsSetupError::Control {
                name: "tlscafile",
                error,
            })
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(pem_error("tlscafile", &path))?;
        // A certificate the parser cannot use is skipped, as in any CA bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoCa(path));
    }
    Ok((path, roots))
}

fn load(control: &ControlDir, client_cert: bool) -> Result<ClientConfig, TlsSetupError> {
    let (_, roots) = ca_roots(&control.path("tlscafile"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?
        .with_root_certificates(roots);
    if !client_cert {
        return Ok(builder.with_no_client_auth());
    }
    let cert = control_path(control, "tlsclientcert")?;
    let key = control_path(control, "tlsclientkey")?;
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(TlsSetupError::Unpaired("tlsclientkey")),
        (None, Some(_)) => Err(TlsSetupError::Unpaired("tlsclientcert")),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&read("tlsclientcert", &cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_error("tlsclientcert", &cert))?;
            if chain.is_empty() {
                return Err(pem_error("tlsclientcert", &cert)(
                    rustls::pki_types::pem::Error::NoItemsFound,
                ));
            }
            builder
                .with_client_auth_cert(chain, read_key(&key)?)
                .map_err(TlsSetupError::Rustls)
        }
    }
}

/// A TLS handshake that failed: what rustls or the socket said.
#[derive(Debug)]
pub struct HandshakeError(String);

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake: {}", self.0)
    }
}

impl std::error::Error for HandshakeError {}

/// One connection to a server: plain QMQP, or QMQP inside TLS.
pub enum Conn {
    /// Plain QMQP.
    Plain(TcpStream),
    /// QMQP over TLS, the handshake done.
    Tls(Box<StreamOwned<ClientConnection, Bounded>>),
}

/// The socket under a TLS conversation, each read and write bounded by the smaller of the
/// per-read timeout and the time left to the session's deadline. rustls reads until it has a
/// whole record: with only the socket's per-read timeout a server sending a byte just inside it
/// could stretch one 16 KiB record over days, where plain QMQP checks the deadline between
/// reads.
pub struct Bounded {
    sock: TcpStream,
    each: Duration,
    deadline: std::time::Instant,
}

impl Bounded {
    /// Sets the socket's timeout for the next call; an error once the deadline has passed.
    fn arm(&self, set: fn(&TcpStream, Option<Duration>) -> io::Result<()>) -> io::Result<()> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "session time limit exceeded",
            ));
        }
        set(&self.sock, Some(self.each.min(left)))
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(TcpStream::set_read_timeout)?;
        self.sock.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(TcpStream::set_write_timeout)?;
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Conn {
    /// `stream` as is (`tls` is `None`), or after a TLS handshake that verified `server`'s
    /// certificate against its name or address. Over TLS every read and write, the
    /// handshake's included, waits at most `each`, and none starts after `deadline`.
    pub fn new(
        stream: TcpStream,
        tls: Option<Arc<ClientConfig>>,
        server: &ServerAddr,
        each: Duration,
        deadline: std::time::Instant,
    ) -> Result<Conn, HandshakeError> {
        let Some(config) = tls else {
            return Ok(Conn::Plain(stream));
        };
        let mut stream = Bounded {
            sock: stream,
            each,
            deadline,
        };
        let name = match &server.host {
            ServerHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            ServerHost::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| HandshakeError(format!("{name}: {e}")))?,
        };
        // TLS writes whole records, and the handshake's last flight (Finished) is followed at
        // once by the request: with Nagle's algorithm the request would wait for the server's
        // delayed ACK of Finished (up to 40 ms on Linux). A failure only costs that wait.
        let _ = stream.sock.set_nodelay(true);
        let mut conn =
            ClientConnection::new(config, name).map_err(|e| HandshakeError(e.to_string()))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut stream)
                .map_err(|e| HandshakeError(e.to_string()))?;
        }
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, stream))))
    }

    /// The socket's read timeout (over TLS: the most each read and write waits from now on).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_read_timeout(Some(timeout)),
            Conn::Tls(s) => {
                s.sock.each = timeout;
                Ok(())
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn nothing_is_read_until_asked() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ClientTls::new(&ControlDir::new(dir.path()));
        assert!(tls.loaded.get().is_none());
        std::fs::create_dir(dir.path().join("control")).unwrap();
        std::fs::write(
            dir.path().join("control/tlscafile"),
            "/nonexistent/ca.pem\n",
        )
        .unwrap();
        let e = tls.config().unwrap_err().to_string();
        assert!(
            e.starts_with("control/tlscafile: unable to read /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "x").unwrap();
        for (mode, bad) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o604, true),
            (0o620, true),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let problem = key_problem(&File::open(&path).unwrap());
            assert_eq!(problem.is_some(), bad, "{mode:o}: {problem:?}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&path).unwrap_err().to_string();
        assert!(e.contains("mode 0644"), "{e}");
        assert!(key_problem(&File::open(dir.path()).unwrap()).is_some());
    }
}
