//! One blocking SMTP connection of the client's relay: a TCP stream, later maybe TLS (rustls's
//! `StreamOwned`, after STARTTLS), and the reply buffer; replies are parsed by
//! `nullq_proto::smtp`. Three bounds, checked before every read and write (the socket's
//! timeouts set to what is left of the nearest): each read or write gets the remote timeout
//! (`timeoutremote`), each reply must be complete within it (a server dripping a byte at a time
//! is cut there, not let on forever), and the whole conversation, from the connect to the
//! reply after the data, STARTTLS's handshake included, ends at the session deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullq_proto::smtp::{Reply, ReplyParser};
use rustls::pki_types::{CertificateDer, ServerName};

/// Why a connection failed.
#[derive(Debug)]
pub enum ConnError {
    /// No address answered in time (qmail-queue's 72).
    ConnectTimeout,
    /// No address took the connection (73).
    ConnectRejected(String),
    /// Connected, then the conversation or the TLS handshake broke (74).
    Broken(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::ConnectTimeout => write!(f, "connection timed out"),
            ConnError::ConnectRejected(why) => write!(f, "connection failed: {why}"),
            ConnError::Broken(why) => write!(f, "conversation failed: {why}"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A connected SMTP client.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// The reply being read (each byte looked at once, its size capped).
    parser: ReplyParser,
    /// Each read and write, and each whole reply.
    remote: Duration,
    /// The end of the whole conversation.
    deadline: Instant,
    /// How long the conversation may take (for the error's text).
    session: Duration,
}

/// Connect to the first address that answers (the last error decides timeout or refusal), with
/// `remote` as the bound of every later read and write and of each reply, and `session` that of
/// the whole conversation from now on.
pub fn connect(
    addrs: &[SocketAddr],
    connect: Duration,
    remote: Duration,
    session: Duration,
) -> Result<Conn, ConnError> {
    let deadline = Instant::now() + session;
    let mut last = ConnError::ConnectRejected("the host name has no address".to_owned());
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::ConnectTimeout);
        }
        match TcpStream::connect_timeout(addr, connect.min(left)) {
            Ok(tcp) => {
                return Ok(Conn {
                    stream: Stream::Plain(tcp),
                    buf: Vec::new(),
                    parser: ReplyParser::new(),
                    remote,
                    deadline,
                    session,
                });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = ConnError::ConnectTimeout
            }
            Err(e) => last = ConnError::ConnectRejected(e.to_string()),
        }
    }
    Err(last)
}

fn io_broken(what: &str, e: &io::Error) -> ConnError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        ConnError::Broken(format!("timed out in {what}"))
    } else {
        ConnError::Broken(format!("{what}: {e}"))
    }
}

/// Set `tcp`'s timeouts to the remote timeout or what is left until `until`, whichever is less;
/// an error once `until` has passed (`what` says which bound it was).
fn arm(tcp: &TcpStream, remote: Duration, until: Instant, what: &str) -> Result<(), ConnError> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ConnError::Broken(what.to_owned()));
    }
    let t = remote.min(left);
    let broken = |e: io::Error| ConnError::Broken(format!("setting timeouts: {e}"));
    tcp.set_read_timeout(Some(t)).map_err(broken)?;
    tcp.set_write_timeout(Some(t)).map_err(broken)
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    fn session_over(&self) -> String {
        format!(
            "the SMTP session took longer than {}s",
            self.session.as_secs()
        )
    }

    /// Arm the socket for one more read or write of the conversation.
    fn arm(&self) -> Result<(), ConnError> {
        arm(self.tcp(), self.remote, self.deadline, &self.session_over())
    }

    /// Whether STARTTLS succeeded on this connection.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Send bytes as they are: a write at a time, each armed anew (a server that takes a
    /// byte at a time meets the session deadline).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let mut at = 0;
        while at < bytes.len() {
            self.arm()?;
            let n = match &mut self.stream {
                Stream::Plain(s) => s.write(&bytes[at..]),
                Stream::Tls(s) => s.write(&bytes[at..]),
            };
            match n {
                Ok(0) => return Err(ConnError::Broken("write: connection closed".into())),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.late(io_broken("write", &e), None)),
            }
        }
        self.arm()?;
        let done = match &mut self.stream {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        };
        done.map_err(|e| self.late(io_broken("write", &e), None))
    }

    /// The error of a failed read or write: the bound that ran out, if one did (the socket's
    /// timeout was what was left of it), else `error`.
    fn late(&self, error: ConnError, reply: Option<(Instant, &str)>) -> ConnError {
        let now = Instant::now();
        if now >= self.deadline {
            return ConnError::Broken(self.session_over());
        }
        match reply {
            Some((by, late)) if now >= by => ConnError::Broken(late.to_owned()),
            _ => error,
        }
    }

    /// Read one (possibly multi-line) reply, complete within the remote timeout.
    pub fn reply(&mut self) -> Result<Reply, ConnError> {
        let mut chunk = [0u8; 4096];
        let by = Instant::now() + self.remote;
        let late = format!(
            "timed out in read: no complete reply within {}s",
            self.remote.as_secs()
        );
        loop {
            match self.parser.parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => {
                    self.parser.reset();
                    return Err(ConnError::Broken(e.to_string()));
                }
            }
            if Instant::now() >= self.deadline {
                return Err(ConnError::Broken(self.session_over()));
            }
            arm(self.tcp(), self.remote, by.min(self.deadline), &late)?;
            let n = match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk),
                Stream::Tls(s) => s.read(&mut chunk),
            };
            match n {
                Ok(0) => return Err(ConnError::Broken("connection closed by the server".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.late(io_broken("read", &e), Some((by, &late)))),
            }
        }
    }

    /// Send one command line (CRLF added) and read its reply.
    pub fn command(&mut self, line: &[u8]) -> Result<Reply, ConnError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes)?;
        self.reply()
    }

    /// The TLS handshake after the server's 220 to STARTTLS, finished before anything else is
    /// said (so a handshake failure is reported as one).
    pub fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), ConnError> {
        // Bytes after the 220 would be read as if they came through TLS (CVE-2011-0411's
        // command injection): refuse them.
        if !self.buf.is_empty() {
            return Err(ConnError::Broken(
                "the server sent data after its STARTTLS reply".into(),
            ));
        }
        let Stream::Plain(plain) = &self.stream else {
            return Err(ConnError::Broken("STARTTLS on a TLS connection".into()));
        };
        // The same socket under a second descriptor, owned by the TLS stream; the first closes
        // when the plain stream is replaced.
        let mut tcp = plain
            .try_clone()
            .map_err(|e| ConnError::Broken(format!("TLS: {e}")))?;
        let mut tls = rustls::ClientConnection::new(config, name)
            .map_err(|e| ConnError::Broken(format!("TLS: {e}")))?;
        while tls.is_handshaking() {
            arm(&tcp, self.remote, self.deadline, &self.session_over())?;
            if let Err(e) = tls.complete_io(&mut tcp) {
                return Err(ConnError::Broken(format!("TLS handshake failed: {e}")));
            }
        }
        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)));
        Ok(())
    }
}

/// Why no TLS configuration could be made.
#[derive(Debug)]
pub struct TlsSetupError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration of `starttls=required`: the certificate must verify against the CA
/// certificates `control/tlscafile` names (or the system's) for the line's host.
pub fn verified_config(control_file: &Path) -> Result<rustls::ClientConfig, TlsSetupError> {
    let (_, roots) =
        crate::tls::ca_roots(control_file).map_err(|e| TlsSetupError(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The configuration of opportunistic STARTTLS (Postfix's `may`): encrypted against passive
/// listeners, the certificate not verified (its signatures still are).
pub fn unverified_config() -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any certificate (the same as the server's `smtp://` backend has for its
/// opportunistic level; rustls types, so it cannot live in `nullq-proto`).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
