//! Who is on the other end of a session, as far as the front end knows: what the listener
//! (`nullq serve`) or tcpserver's environment (`nullq qmqpd`) says about the client, read by the
//! access rules, the policy and the Received line.

use std::net::IpAddr;

use crate::process::logging::push_escaped_field;

/// Who is on the other end, as far as the front end knows.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's IP address, if known (it is not under tcpserver without TCPREMOTEIP).
    pub ip: Option<IpAddr>,
    /// The client's host name: tcpserver's TCPREMOTEHOST, or `unknown` as in qmail-qmqpd.
    pub host: String,
    /// The client's IP address as tcpserver wrote it in TCPREMOTEIP (qmail-qmqpd puts that text,
    /// not a parsed address, in its Received line); `None` for `nullq serve`, which knows [`ip`].
    ///
    /// [`ip`]: Peer::ip
    pub ip_text: Option<String>,
    /// The remote user name from ident, tcpserver's TCPREMOTEINFO: the `info@` of the Received
    /// line, as in qmail-qmqpd.
    pub info: Option<String>,
    /// Variables set by the access rule that let the client in (`RELAYCLIENT`, ...).
    pub env: Vec<(String, String)>,
    /// The TLS connection, when the client came to a TLS listener (`None`: plain QMQP).
    pub tls: Option<TlsInfo>,
}

/// What the TLS handshake of a session established (see `inbound::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite as rustls names it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The verified client certificate's name (its subject CN, else its first DNS name):
    /// the client's `tls_name` for the policy; `None` without a client certificate.
    pub client: Option<String>,
}

impl Peer {
    /// The client's address as text for logs and the spool (`unknown` when not known).
    pub fn addr_text(&self) -> String {
        self.ip
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    /// The client's address as the Received line gives it: TCPREMOTEIP as it was set, else
    /// [`addr_text`](Peer::addr_text).
    pub fn received_ip(&self) -> String {
        self.ip_text.clone().unwrap_or_else(|| self.addr_text())
    }

    /// The verified TLS client certificate's name, if the client presented one.
    pub fn tls_name(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.client.as_deref())
    }

    /// The session's TLS for its log line: `-` for plain QMQP, else version, cipher and the
    /// client certificate's name (`-` without one), e.g. `TLSv1.3/TLS13_AES_256_GCM_SHA384/h1`.
    pub fn tls_text(&self) -> String {
        let mut out = String::new();
        self.push_tls_text(&mut out);
        out
    }

    /// [`tls_text`](Peer::tls_text) into `out`.
    pub fn push_tls_text(&self, out: &mut String) {
        match &self.tls {
            None => out.push('-'),
            Some(t) => {
                out.push_str(&t.version);
                out.push('/');
                out.push_str(&t.cipher);
                out.push('/');
                match t.client.as_deref() {
                    Some(name) => push_escaped_field(out, name.as_bytes()),
                    None => out.push('-'),
                }
            }
        }
    }
}
