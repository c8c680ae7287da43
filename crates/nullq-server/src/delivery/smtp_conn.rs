//! One SMTP client connection of the `smtp://` backend: replies and their codes, EHLO
//! capabilities, STARTTLS, AUTH PLAIN and LOGIN, pipelined MAIL and RCPT, and DATA through
//! [`DotStuffer`], which dot-stuffs and turns line ends into CRLF a chunk at a time. The pure
//! parts (replies, capabilities, base64, dot-stuffing) are `nullq_proto::smtp`, shared with the
//! null client's `smtp://` relay; this file owns the async socket.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use nullq_proto::smtp::parse_reply;
pub(crate) use nullq_proto::smtp::{base64, Caps, DotStuffer, Reply};

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection, greeted and (if so configured) encrypted and authenticated.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) buf: Vec<u8>,
    pub(crate) caps: Caps,
    pub(crate) tls: bool,
    pub(crate) messages: u32,
    pub(crate) last_used: Instant,
    pub(crate) timeout: Duration,
}

/// A connection-level failure: the text for every recipient still open.
#[derive(Debug)]
pub(crate) struct ConnError(pub(crate) String);

pub(crate) type Result<T> = std::result::Result<T, ConnError>;

impl Conn {
    pub(crate) async fn read_some(&mut self) -> Result<()> {
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

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<()> {
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
    pub(crate) async fn reply(&mut self) -> Result<Reply> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => self.read_some().await?,
                Err(e) => return Err(ConnError(e.to_string())),
            }
        }
    }

    pub(crate) async fn command(&mut self, line: &[u8]) -> Result<Reply> {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.reply().await
    }

    pub(crate) async fn ehlo(&mut self, helo: &str) -> Result<()> {
        let r = self.command(format!("EHLO {helo}").as_bytes()).await?;
        self.caps = Caps::default();
        if r.class() != 2 {
            let r = self.command(format!("HELO {helo}").as_bytes()).await?;
            if r.class() != 2 {
                return Err(ConnError(format!("{} (in reply to HELO)", r.line())));
            }
            return Ok(());
        }
        self.caps = Caps::from_ehlo(&r);
        Ok(())
    }
}
