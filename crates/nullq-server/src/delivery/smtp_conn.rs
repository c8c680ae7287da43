//! One SMTP client connection of the `smtp://` backend: replies and their codes, EHLO
//! capabilities, STARTTLS, AUTH PLAIN and LOGIN, pipelined MAIL and RCPT, and DATA through
//! [`DotStuffer`], which dot-stuffs and turns line ends into CRLF a chunk at a time. The pure
//! parts (replies, capabilities, base64, dot-stuffing) are `nullq_proto::smtp`, shared with the
//! null client's `smtp://` relay; this file owns the async socket.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use nullq_proto::smtp::{base64, Caps, DotStuffer, Reply, ReplyParser};

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection, greeted and (if so configured) encrypted and authenticated.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) buf: Vec<u8>,
    /// The reply being read: each byte looked at once, its size capped (`nullq_proto::smtp`).
    pub(crate) parser: ReplyParser,
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

    /// Read one (possibly multi-line) reply, complete within the timeout (`timeout_secs`): a
    /// server dripping a byte at a time is cut there, not only when one read waits that long.
    pub(crate) async fn reply(&mut self) -> Result<Reply> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_reply()).await {
            Ok(reply) => reply,
            Err(_) => {
                self.parser.reset();
                Err(ConnError(format!(
                    "timeout after {}s waiting for a complete reply",
                    timeout.as_secs()
                )))
            }
        }
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        loop {
            match self.parser.parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => self.read_some().await?,
                Err(e) => {
                    self.parser.reset();
                    return Err(ConnError(e.to_string()));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A smarthost whose reply never ends (`250-` forever) is cut at the reply cap, not read
    /// until memory runs out.
    #[tokio::test]
    async fn an_endless_reply_is_refused_at_the_cap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let lines = b"250-again\r\n".repeat(100);
            // Until the client hangs up.
            while s.write_all(&lines).await.is_ok() {}
        });
        let mut conn = Conn {
            stream: Stream::Plain(TcpStream::connect(addr).await.unwrap()),
            buf: Vec::new(),
            parser: ReplyParser::new(),
            caps: Caps::default(),
            tls: false,
            messages: 0,
            last_used: Instant::now(),
            timeout: Duration::from_secs(30),
        };
        let got = tokio::time::timeout(Duration::from_secs(30), conn.reply()).await;
        let Ok(Err(ConnError(why))) = got else {
            panic!(
                "a refused reply, in time: {:?}",
                got.map(|r| r.map(|r| r.line()))
            );
        };
        assert!(why.contains("reply too long"), "{why}");
        assert!(
            conn.buf.len() < 2 * nullq_proto::smtp::MAX_REPLY,
            "{}",
            conn.buf.len()
        );
        drop(conn);
        let _ = server.await;
    }
}
