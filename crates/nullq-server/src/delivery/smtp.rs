//! `smtp://HOST:PORT` and `smtps://HOST:PORT`: delivery to a smarthost (CommuniGate Pro's SMTP
//! module, Postfix, ...) with one answer per recipient.
//!
//! Why our own client: lettre's `Transport::send` and mail-send's `SmtpClient::send` both turn
//! the first refused `RCPT TO` into an error for the whole message, so "5xx for one recipient of
//! three" cannot be told from "the message failed". RFC 5321 gives each recipient its own reply
//! (section 4.1.1.3) and that is the granularity the queue keeps; so this module is the small
//! client that keeps it: EHLO (HELO if refused), STARTTLS (RFC 3207) with rustls, AUTH PLAIN and
//! LOGIN (RFC 4954), PIPELINING of MAIL and RCPT (RFC 2920) when offered, DATA with
//! dot-stuffing and CRLF line ends (streamed from the spool file through [`DotStuffer`]), and
//! connections kept for the next message.
//!
//! Answers: MAIL refused → every recipient gets that answer; each RCPT reply decides its
//! recipient (2xx on, 4xx retry, 5xx bounce); the reply after the data decides every recipient
//! whose RCPT was accepted. A connection or TLS problem, or a refused AUTH, is "retry" for all
//! (as Postfix's `smtp_sasl_auth_soft_bounce`): a wrong password must not bounce the queue.
//!
//! TLS: `smtps://` and `starttls = "required"` verify the certificate against `ca_file` or the
//! system's bundle (unless `tls_verify = false`); `opportunistic` encrypts without verifying,
//! as Postfix's `may` level.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nullq_config::server::{SmtpConfig, StartTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::delivery::backend::{Backend, Delivery};
use crate::delivery::handover::smtp_sender;
use crate::delivery::job::{Answer, Job};

/// The system's CA bundle (Debian's ca-certificates), used when `ca_file` is not set.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Longest reply line we accept (RFC 5321 says 512; servers write longer ones).
const MAX_LINE: usize = 8192;

/// An SMTP smarthost target and its idle connections.
pub struct Smtp {
    host: String,
    port: u16,
    implicit_tls: bool,
    starttls: StartTls,
    verified: Arc<rustls::ClientConfig>,
    unverified: Arc<rustls::ClientConfig>,
    verify: bool,
    auth: Option<(String, String)>,
    auth_without_tls: bool,
    helo: String,
    connect_timeout: Duration,
    timeout: Duration,
    max_per_connection: u32,
    idle: Duration,
    pool: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("implicit_tls", &self.implicit_tls)
            .field("starttls", &self.starttls)
            .finish_non_exhaustive()
    }
}

/// One SMTP reply: the code and its lines' text joined by blanks.
#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }
    fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// What the server said it can do (EHLO keywords).
#[derive(Debug, Default, Clone)]
struct Caps {
    starttls: bool,
    pipelining: bool,
    eightbit: bool,
    auth_plain: bool,
    auth_login: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection, greeted and (if so configured) encrypted and authenticated.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    caps: Caps,
    tls: bool,
    messages: u32,
    last_used: Instant,
    timeout: Duration,
}

/// A connection-level failure: the text for every recipient still open.
#[derive(Debug)]
struct ConnError(String);

type Result<T> = std::result::Result<T, ConnError>;

impl Conn {
    async fn read_some(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
            }
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(0)) => Err(ConnError("connection closed by the server".into())),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError(format!("read error: {e}"))),
            Err(_) => Err(ConnError(format!(
                "timeout after {}s waiting for the server",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
            }
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnError(format!("write error: {e}"))),
            Err(_) => Err(ConnError(format!(
                "timeout after {}s sending",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Read one (possibly multi-line) reply.
    async fn reply(&mut self) -> Result<Reply> {
        let mut code: Option<u16> = None;
        let mut text = String::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Err(ConnError("reply line too long".into()));
                }
                self.read_some().await?;
                continue;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let digits = line.get(..3).and_then(|d| d.parse::<u16>().ok());
            let Some(this) = digits.filter(|c| (200..600).contains(c)) else {
                return Err(ConnError(format!("not an SMTP reply: {line:?}")));
            };
            if code.is_some_and(|c| c != this) {
                return Err(ConnError(format!("reply code changed mid-reply: {line:?}")));
            }
            code = Some(this);
            let rest = line.get(4..).unwrap_or("");
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(rest);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code: this, text });
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply> {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.reply().await
    }

    async fn ehlo(&mut self, helo: &str) -> Result<()> {
        let r = self.command(format!("EHLO {helo}").as_bytes()).await?;
        self.caps = Caps::default();
        if r.class() != 2 {
            let r = self.command(format!("HELO {helo}").as_bytes()).await?;
            if r.class() != 2 {
                return Err(ConnError(format!("{} (in reply to HELO)", r.line())));
            }
            return Ok(());
        }
        // The keywords are the words that start each line after the first; `reply` joined the
        // lines with blanks, so look at every word (a false positive needs a hostile greeting).
        let words: Vec<String> = r
            .text
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let mut in_auth = false;
        for w in &words {
            match w.as_str() {
                "STARTTLS" => self.caps.starttls = true,
                "PIPELINING" => self.caps.pipelining = true,
                "8BITMIME" => self.caps.eightbit = true,
                "AUTH" => in_auth = true,
                "PLAIN" if in_auth => self.caps.auth_plain = true,
                "LOGIN" if in_auth => self.caps.auth_login = true,
                _ => {}
            }
            if w.starts_with("AUTH=") {
                self.caps.auth_login |= w.contains("LOGIN");
                self.caps.auth_plain |= w.contains("PLAIN");
            }
        }
        Ok(())
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The message as SMTP DATA, a chunk at a time: CRLF line ends (a CR before an LF is dropped,
/// so CRLF stays CRLF), a line starting with `.` gets another `.` (RFC 5321 section 4.5.2), a
/// last line without a newline gets one, then `.` ends it. It keeps the little it needs between
/// chunks (at a line start? a CR held back?), so a chunk may end anywhere: inside a CRLF, just
/// before a line's first `.`.
#[derive(Debug)]
struct DotStuffer {
    /// The next byte starts a line.
    line_start: bool,
    /// A CR was read and not written yet: it is dropped if an LF follows.
    cr: bool,
    /// Any byte at all was read (an empty message is just the final dot).
    any: bool,
}

impl DotStuffer {
    fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            cr: false,
            any: false,
        }
    }

    /// Append the encoding of `chunk` to `out`.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        self.any |= !chunk.is_empty();
        for &b in chunk {
            match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.cr = false;
                    self.line_start = true;
                }
                b'\r' => {
                    if self.cr {
                        out.push(b'\r');
                    }
                    self.cr = true;
                    self.line_start = false;
                }
                _ => {
                    if self.cr {
                        out.push(b'\r');
                        self.cr = false;
                    }
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    self.line_start = false;
                    out.push(b);
                }
            }
        }
    }

    /// Append the end: a newline if the last line had none (a CR held back there is dropped,
    /// as the whole-message rule strips one from every line), then `.`.
    fn finish(self, out: &mut Vec<u8>) {
        if self.any && !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Accepts any certificate: for opportunistic STARTTLS, which encrypts against passive
/// listeners and does not claim more (the signatures are still checked).
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
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

fn tls_configs(
    config: &SmtpConfig,
) -> std::result::Result<(rustls::ClientConfig, rustls::ClientConfig), String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let (path, must) = match &config.ca_file {
        Some(p) => (p.clone(), true),
        None => (std::path::PathBuf::from(SYSTEM_CA_FILE), false),
    };
    match std::fs::read(&path) {
        Ok(pem) => {
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                // A certificate the parser cannot use is skipped, as a browser would.
                let _ = roots.add(cert);
            }
        }
        Err(e) if must => return Err(format!("cannot read ca_file {}: {e}", path.display())),
        Err(_) => {}
    }
    let verified = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let unverified = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok((verified, unverified))
}

impl Smtp {
    /// A smarthost at `host:port`; `implicit_tls` for `smtps://`. `local_name` is the EHLO
    /// name unless the configuration gives one.
    pub fn new(
        host: String,
        port: u16,
        implicit_tls: bool,
        config: &SmtpConfig,
        local_name: String,
    ) -> std::result::Result<Smtp, String> {
        let (verified, unverified) = tls_configs(config)?;
        Ok(Smtp {
            host,
            port,
            implicit_tls,
            starttls: config.starttls,
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
            verify: config.tls_verify,
            auth: config.username.clone().zip(config.password.clone()),
            auth_without_tls: config.auth_without_tls,
            helo: config.helo.clone().unwrap_or(local_name),
            connect_timeout: Duration::from_secs(config.connect_timeout_secs),
            timeout: Duration::from_secs(config.timeout_secs),
            max_per_connection: config.max_messages_per_connection,
            idle: Duration::from_secs(config.idle_secs),
            pool: Mutex::new(Vec::new()),
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = pool.pop() {
            if conn.last_used.elapsed() < self.idle {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, mut conn: Conn) {
        if conn.messages >= self.max_per_connection || self.idle.is_zero() {
            return;
        }
        conn.last_used = Instant::now();
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    async fn handshake(&self, tcp: TcpStream, verify: bool) -> Result<Stream> {
        let config = if verify && self.verify {
            Arc::clone(&self.verified)
        } else {
            Arc::clone(&self.unverified)
        };
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| ConnError(format!("bad TLS server name {:?}: {e}", self.host)))?;
        let tls = tokio::time::timeout(self.timeout, TlsConnector::from(config).connect(name, tcp))
            .await
            .map_err(|_| ConnError("timeout in the TLS handshake".into()))?
            .map_err(|e| ConnError(format!("TLS handshake failed: {e}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// A new connection, ready for MAIL.
    async fn connect(&self) -> Result<Conn> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnError(format!("cannot connect to {addr}: {e}"))),
            Err(_) => return Err(ConnError(format!("cannot connect to {addr}: timeout"))),
        };
        let _ = tcp.set_nodelay(true);
        let (stream, tls) = if self.implicit_tls {
            (self.handshake(tcp, true).await?, true)
        } else {
            (Stream::Plain(tcp), false)
        };
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            caps: Caps::default(),
            tls,
            messages: 0,
            last_used: Instant::now(),
            timeout: self.timeout,
        };
        let greeting = conn.reply().await?;
        if greeting.class() != 2 {
            return Err(ConnError(format!("{} (greeting)", greeting.line())));
        }
        conn.ehlo(&self.helo).await?;
        if !conn.tls && self.starttls != StartTls::Off && conn.caps.starttls {
            let r = conn.command(b"STARTTLS").await?;
            if r.class() == 2 {
                if !conn.buf.is_empty() {
                    // Bytes sent before the handshake must not be read as if protected.
                    return Err(ConnError(
                        "data after the STARTTLS reply (injection?)".into(),
                    ));
                }
                let Stream::Plain(tcp) = conn.stream else {
                    return Err(ConnError("STARTTLS on a TLS connection".into()));
                };
                conn.stream = self
                    .handshake(tcp, self.starttls == StartTls::Required)
                    .await?;
                conn.tls = true;
                conn.ehlo(&self.helo).await?;
            } else if self.starttls == StartTls::Required {
                return Err(ConnError(format!(
                    "{} (in reply to STARTTLS, which is required)",
                    r.line()
                )));
            }
        }
        if !conn.tls && self.starttls == StartTls::Required {
            return Err(ConnError(format!(
                "{addr} offers no STARTTLS, and TLS is required"
            )));
        }
        if let Some((user, pass)) = &self.auth {
            if !conn.tls && !self.auth_without_tls {
                return Err(ConnError(
                    "AUTH without TLS refused by configuration (auth_without_tls)".into(),
                ));
            }
            self.authenticate(&mut conn, user, pass).await?;
        }
        Ok(conn)
    }

    async fn authenticate(&self, conn: &mut Conn, user: &str, pass: &str) -> Result<()> {
        let r = if conn.caps.auth_plain || !conn.caps.auth_login {
            let token = base64(format!("\0{user}\0{pass}").as_bytes());
            conn.command(format!("AUTH PLAIN {token}").as_bytes())
                .await?
        } else {
            let r = conn.command(b"AUTH LOGIN").await?;
            if r.code != 334 {
                return Err(ConnError(format!("{} (in reply to AUTH LOGIN)", r.line())));
            }
            let r = conn.command(base64(user.as_bytes()).as_bytes()).await?;
            if r.code != 334 {
                return Err(ConnError(format!(
                    "{} (in reply to the AUTH LOGIN user)",
                    r.line()
                )));
            }
            conn.command(base64(pass.as_bytes()).as_bytes()).await?
        };
        if r.class() != 2 {
            return Err(ConnError(format!("{} (in reply to AUTH)", r.line())));
        }
        Ok(())
    }

    /// Deliver `job` over one connection (reused or new); one answer per recipient.
    async fn send(&self, job: &Job) -> Vec<Answer> {
        // A reused connection may have been closed by the server meanwhile: then, and only
        // before anything was accepted, try once more on a fresh one.
        if let Some(mut conn) = self.take_idle() {
            match self.transaction(&mut conn, job).await {
                Ok(answers) => {
                    self.give_back(conn);
                    return answers;
                }
                Err((ConnError(e), false)) => {
                    tracing::debug!(target: "nullq::delivery", "reused connection to {}:{} failed ({e}); reconnecting", self.host, self.port);
                }
                Err((ConnError(e), true)) => return vec![Answer::retry(e); job.recipients.len()],
            }
        }
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(ConnError(e)) => return vec![Answer::retry(e); job.recipients.len()],
        };
        match self.transaction(&mut conn, job).await {
            Ok(answers) => {
                self.give_back(conn);
                answers
            }
            Err((ConnError(e), _)) => vec![Answer::retry(e); job.recipients.len()],
        }
    }

    /// MAIL, RCPT..., DATA on `conn`. A connection error comes with whether the server had
    /// answered anything yet (after which a retry on another connection could duplicate).
    async fn transaction(
        &self,
        conn: &mut Conn,
        job: &Job,
    ) -> std::result::Result<Vec<Answer>, (ConnError, bool)> {
        let from = format!("{}:{}", self.host, self.port);
        // BODY=8BITMIME must be in MAIL, before the data is sent: so when the server offers
        // it, one pass over the spool file (a chunk buffer, no copy) looks for 8-bit bytes.
        // Servers that do not offer it get the message as is, so then there is nothing to scan.
        let eight = if conn.caps.eightbit {
            let message = job.message.clone();
            match tokio::task::spawn_blocking(move || message.has_8bit()).await {
                Ok(Ok(eight)) => eight,
                Ok(Err(e)) => {
                    return Err((ConnError(format!("reading the queued message: {e}")), true))
                }
                Err(e) => return Err((ConnError(format!("internal error: {e}")), true)),
            }
        } else {
            false
        };
        let mut mail = b"MAIL FROM:<".to_vec();
        mail.extend_from_slice(smtp_sender(&job.sender));
        mail.push(b'>');
        if eight && conn.caps.eightbit {
            mail.extend_from_slice(b" BODY=8BITMIME");
        }
        mail.extend_from_slice(b"\r\n");
        let rcpts: Vec<Vec<u8>> = job
            .recipients
            .iter()
            .map(|r| {
                let mut l = b"RCPT TO:<".to_vec();
                l.extend_from_slice(r);
                l.extend_from_slice(b">\r\n");
                l
            })
            .collect();
        let mut replies: Vec<Reply> = Vec::with_capacity(rcpts.len());
        let mail_reply;
        if conn.caps.pipelining {
            let mut batch = mail.clone();
            for r in &rcpts {
                batch.extend_from_slice(r);
            }
            conn.write(&batch).await.map_err(|e| (e, false))?;
            mail_reply = conn.reply().await.map_err(|e| (e, false))?;
            for _ in &rcpts {
                replies.push(conn.reply().await.map_err(|e| (e, true))?);
            }
        } else {
            conn.write(&mail).await.map_err(|e| (e, false))?;
            mail_reply = conn.reply().await.map_err(|e| (e, false))?;
            if mail_reply.class() == 2 {
                for r in &rcpts {
                    conn.write(r).await.map_err(|e| (e, true))?;
                    replies.push(conn.reply().await.map_err(|e| (e, true))?);
                }
            }
        }
        conn.messages += 1;
        let said =
            |r: &Reply, what: &str| format!("{} (from {from}, in reply to {what})", r.line());
        if mail_reply.class() != 2 {
            let text = said(&mail_reply, "MAIL FROM");
            let answer = if mail_reply.class() == 5 {
                Answer::bounce(text)
            } else {
                Answer::retry(text)
            };
            let _ = conn.command(b"RSET").await;
            return Ok(vec![answer; job.recipients.len()]);
        }
        let mut answers: Vec<Option<Answer>> = replies
            .iter()
            .map(|r| match r.class() {
                2 => None,
                5 => Some(Answer::bounce(said(r, "RCPT TO"))),
                _ => Some(Answer::retry(said(r, "RCPT TO"))),
            })
            .collect();
        if answers.iter().all(Option::is_some) {
            let _ = conn.command(b"RSET").await;
            return Ok(answers.into_iter().flatten().collect());
        }
        let fill = |answers: &mut Vec<Option<Answer>>, a: Answer| {
            for slot in answers.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(a.clone());
            }
        };
        let data = conn.command(b"DATA").await.map_err(|e| (e, true))?;
        if data.code != 354 {
            let text = said(&data, "DATA");
            fill(
                &mut answers,
                if data.class() == 5 {
                    Answer::bounce(text)
                } else {
                    Answer::retry(text)
                },
            );
            let _ = conn.command(b"RSET").await;
            return Ok(answers.into_iter().flatten().collect());
        }
        // Streamed: a read error stops here without the final dot, and the connection is
        // dropped, so the server discards what it got instead of delivering a cut message.
        let mut chunks = job.message.chunks();
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::with_capacity(
            crate::delivery::message::CHUNK + crate::delivery::message::CHUNK / 8,
        );
        while let Some(chunk) = chunks.recv().await {
            let chunk =
                chunk.map_err(|e| (ConnError(format!("reading the queued message: {e}")), true))?;
            out.clear();
            stuffer.push(&chunk, &mut out);
            conn.write(&out).await.map_err(|e| (e, true))?;
        }
        out.clear();
        stuffer.finish(&mut out);
        conn.write(&out).await.map_err(|e| (e, true))?;
        let end = conn.reply().await.map_err(|e| (e, true))?;
        let text = said(&end, "end of data");
        fill(
            &mut answers,
            match end.class() {
                2 => Answer::delivered(text),
                5 => Answer::bounce(text),
                _ => Answer::retry(text),
            },
        );
        Ok(answers.into_iter().flatten().collect())
    }
}

impl Backend for Smtp {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        Box::pin(self.send(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    /// The whole-message encoder the streaming one must match byte for byte.
    fn dot_stuff(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 8);
        if !message.is_empty() {
            for line in message
                .strip_suffix(b"\n")
                .unwrap_or(message)
                .split(|&b| b == b'\n')
            {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.first() == Some(&b'.') {
                    out.push(b'.');
                }
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn stream(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn streaming_dot_stuffing_matches_the_whole_message_encoder_at_every_split() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\n",
            b".",
            b"\r",
            b"\r\n",
            b"a\n.b\n..\n",
            b"no newline",
            b"crlf\r\n",
            b".\r\n.\n\r.\r\r\n..\r",
            b"x\r\ry\n.\n\n.end",
            b"H: v\r\n\r\n.body\r\n\xe9t\xe9\n.\n",
            b"\n\n..\r\n.\r",
        ];
        for input in inputs {
            let want = dot_stuff(input);
            assert_eq!(stream(&[input]), want, "{input:?}");
            for i in 0..=input.len() {
                assert_eq!(
                    stream(&[&input[..i], &input[i..]]),
                    want,
                    "{input:?} at {i}"
                );
                for j in i..=input.len() {
                    let got = stream(&[&input[..i], &input[i..j], &[], &input[j..]]);
                    assert_eq!(got, want, "{input:?} at {i}, {j}");
                }
            }
            // One byte at a time: every boundary at once.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(stream(&bytes), want, "{input:?} bytewise");
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\n.b\n..\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"crlf\r\n"), b"crlf\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(stream(&[b"a\n.b\n..\n"]), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(stream(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(stream(&[b"crlf\r\n"]), b"crlf\r\n.\r\n");
        assert_eq!(stream(&[]), b".\r\n");
    }
}
