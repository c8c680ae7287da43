//! `smtp://HOST:PORT` and `smtps://HOST:PORT`: delivery to a smarthost (CommuniGate Pro's SMTP
//! module, Postfix, ...) with one answer per recipient.
//!
//! Why our own client: lettre's `Transport::send` and mail-send's `SmtpClient::send` both turn
//! the first refused `RCPT TO` into an error for the whole message, so "5xx for one recipient of
//! three" cannot be told from "the message failed". RFC 5321 gives each recipient its own reply
//! (section 4.1.1.3) and that is the granularity the queue keeps; so this module is the small
//! client that keeps it: EHLO (HELO if refused), STARTTLS (RFC 3207) with rustls, AUTH PLAIN and
//! LOGIN (RFC 4954), PIPELINING of MAIL and RCPT (RFC 2920) when offered, DATA with
//! dot-stuffing and CRLF line ends (streamed from the spool file through [`crate::delivery::smtp_conn::DotStuffer`]), and
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
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::delivery::backend::{Backend, BackendError, Delivery};
use crate::delivery::cgp_header::{header_address, AddressError};
use crate::delivery::job::smtp_sender;
use crate::delivery::job::{Answer, Job};
use crate::delivery::smtp_conn::{
    base64, Caps, Conn, ConnError, DotStuffer, Reply, ReplyParser, Result, Stream,
};

/// The longest one message's SMTP conversation may take, from the connect (or the reuse of an
/// idle connection) to the reply after the data, whatever each reply and write did within
/// `timeout_secs` (QMQP's session limit, the client's for its `smtp://` lines): then every
/// recipient still open is retried.
pub const SESSION_LIMIT: Duration = Duration::from_secs(3600);

/// The system's CA bundle (Debian's ca-certificates), used when `ca_file` is not set.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

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
) -> std::result::Result<(rustls::ClientConfig, rustls::ClientConfig), BackendError> {
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
                let cert = cert.map_err(|source| BackendError::Certificate {
                    path: path.clone(),
                    source,
                })?;
                // A certificate the parser cannot use is skipped, as a browser would.
                let _ = roots.add(cert);
            }
        }
        Err(source) if must => return Err(BackendError::CaFile { path, source }),
        Err(_) => {}
    }
    let verified = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(BackendError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let unverified = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(BackendError::Tls)?
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
    ) -> std::result::Result<Smtp, BackendError> {
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
            parser: ReplyParser::new(),
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

impl Smtp {
    /// [`Smtp::send`] within `limit`: past it the conversation is dropped (the server gets no
    /// final dot, so it delivers nothing) and every recipient is retried.
    async fn send_within(&self, job: &Job, limit: Duration) -> Vec<Answer> {
        match tokio::time::timeout(limit, self.send(job)).await {
            Ok(answers) => answers,
            Err(_) => {
                let text = format!(
                    "the SMTP session with {}:{} took longer than {}s",
                    self.host,
                    self.port,
                    limit.as_secs()
                );
                vec![Answer::retry(text); job.recipients.len()]
            }
        }
    }
}

impl Backend for Smtp {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        // Every address goes into its command as qmail-remote writes it (`quote2`): a local part
        // that is not a dot-atom as a quoted string, so that a blank or `>` in it cannot end
        // the path (a QMQP client's recipient `victim@x> NOTIFY=SUCCESS;y@z` must not become
        // DSN parameters of ours, nor a sender `a> AUTH=<x@y>` an AUTH). An address that cannot
        // be written so (a control byte; a domain that is neither a dot-atom nor a literal, as
        // in `a@x> NOTIFY=SUCCESS`) is bounced with the reason and never written at all.
        let refused = move |what: &str, address: &[u8]| {
            smtp_path(address).err().map(|why| {
                Answer::bounce(format!(
                    "SMTP to {}:{}: {what} <{}> cannot be written as an SMTP path ({why}): not sent",
                    self.host,
                    self.port,
                    crate::process::logging::escape(address)
                ))
            })
        };
        Box::pin(crate::delivery::job::deliver_refusing(
            job,
            refused,
            move |job| async move {
                // Every address passed `refused`, so each has its path (were one to fail, the
                // empty path would be refused by the server, never the raw bytes sent).
                let path = |a: &[u8]| smtp_path(a).unwrap_or_default();
                let written = Job {
                    sender: if smtp_sender(&job.sender).is_empty() {
                        Vec::new()
                    } else {
                        path(&job.sender)
                    },
                    recipients: job.recipients.iter().map(|r| path(r)).collect(),
                    ..job
                };
                self.send_within(&written, SESSION_LIMIT).await
            },
        ))
    }
}

/// `address` as it goes between `<` and `>` (see [`Smtp::deliver`]): the null sender as it is,
/// any other through [`header_address`], whose quoting and domain rule are RFC 5321's too.
fn smtp_path(address: &[u8]) -> std::result::Result<Vec<u8>, AddressError> {
    if address.is_empty() {
        Ok(Vec::new())
    } else {
        header_address(address)
    }
}
