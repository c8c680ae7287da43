//! The client's last resort: a `qmqpservers` line
//! `smtp://HOST[:PORT][?starttls=opportunistic|required]` is an SMTP relay (CommuniGate Pro's
//! SMTP module, Postfix, a submission port 587), tried in its place in the list like any QMQP
//! server, as nullmailer mixes `qmqp` and `smtp` remotes and Postfix has `smtp_fallback_relay`.
//!
//! One blocking conversation per message (RFC 5321): greeting, EHLO with `helohost`/`me` (HELO
//! if EHLO is refused), STARTTLS (RFC 3207) when offered or required, AUTH PLAIN or LOGIN
//! (RFC 4954) from [`auth`]'s `control/smtpauth` over verified TLS only (`?starttls=required`), MAIL FROM, one RCPT TO per
//! recipient, DATA (dot-stuffed, CRLF, streamed in chunks), QUIT.
//!
//! The answers become one qmail-queue exit code per message, as QMQP's `K`/`Z`/`D` do:
//! - all recipients and the data accepted: success;
//! - the greeting, HELO/EHLO, STARTTLS or AUTH refused, or any 4xx: temporary (71), so the next
//!   line and then the fallback queue get the message; TLS failures and broken conversations
//!   are 74, connection failures 72/73, as for QMQP;
//! - 5xx to MAIL, to DATA or after the data: permanent (31), no other line is tried;
//! - an address SMTP cannot carry ([`unsendable`]: a line break, NUL, control character,
//!   blank, `<` or `>`): nothing is sent on this line, the next line is tried, the server is
//!   not remembered as failed; 31 only if no other line was tried;
//! - recipients: all or nothing, like QMQP and msmtp. If any RCPT gets a 5xx, the transaction
//!   is reset before DATA and the exit is permanent (31), naming every refused recipient and
//!   saying that nobody got the message; otherwise, if any gets a 4xx, it is reset and the exit
//!   temporary (71). The caller's one exit code then tells the whole truth: nobody has the
//!   message, so sending it again (corrected) makes no duplicates, and no refused recipient is
//!   lost without a word;
//! - when `control/smtpauth` may hold credentials for the line but cannot be used (unsafe mode,
//!   unreadable by this user, no TLS to send them over, TLS whose certificate was not verified
//!   because the line is not `?starttls=required`, no AUTH offered), the message is sent
//!   without AUTH and every 5xx counts as temporary, since the missing AUTH may be its cause
//!   (as Postfix's `smtp_sasl_auth_soft_bounce`).

pub mod auth;
pub mod conn;

use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nullq_proto::envelope::QmailEnvelope;
use nullq_proto::exit::QueueExit;
use nullq_proto::smtp::{base64, Caps, DotStuffer, Reply};
use rustls::pki_types::ServerName;

use crate::control::{ControlDir, ServerAddr, ServerHost, StartTls};
use auth::{AuthChoice, AuthFile, Credentials, AUTH_FILE};
use conn::{Conn, ConnError};

/// The control file of the CA certificates for `starttls=required`.
pub const CA_FILE: &str = "tlscafile";

/// The chunk in which a message is read from its file and sent.
const CHUNK: usize = 64 * 1024;

/// What the `smtp://` lines need besides the line: read once per run, only when one is listed.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The name in EHLO/HELO: `control/helohost`, else `me`, else `localhost`.
    pub helo: String,
    /// `control/tlscafile`.
    pub ca_file: PathBuf,
    /// `control/smtpauth`.
    pub auth: AuthFile,
}

impl SmtpSettings {
    /// For a run without `smtp://` lines: nothing read.
    pub fn unused() -> SmtpSettings {
        SmtpSettings {
            helo: "localhost".to_owned(),
            ca_file: PathBuf::new(),
            auth: AuthFile::Absent,
        }
    }

    /// Read `helohost` (or `me`) and look at `smtpauth`; nothing here fails: an unreadable name
    /// file means `localhost`, an unusable auth file is reported when a line uses it.
    pub fn load(control: &ControlDir) -> SmtpSettings {
        let name = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_owned();
        let helo = control
            .readline("helohost")
            .ok()
            .flatten()
            .map(name)
            .filter(|n| !n.is_empty())
            .or_else(|| control.me().ok().flatten().map(|(me, _)| name(me)))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "localhost".to_owned());
        SmtpSettings {
            helo,
            ca_file: control.path(CA_FILE),
            auth: AuthFile::load(&control.path(AUTH_FILE)),
        }
    }
}

/// How one attempt failed: the same classes as a QMQP attempt's (`transport` maps them).
#[derive(Debug)]
pub enum RelayError {
    /// The connection timed out (72).
    ConnectTimeout,
    /// The connection was refused or could not be made (73).
    ConnectRejected(String),
    /// Connected, then the conversation or TLS broke (74).
    Broken(String),
    /// A 4xx, or a refusal that may pass (71): try the next line.
    Temporary(String),
    /// A 5xx that decides the message (31): no other line is tried.
    Permanent(String),
    /// The message file could not be read (54).
    Local(String),
    /// An address SMTP cannot carry (a line break, NUL, blank, control character, `<` or
    /// `>`: see [`unsendable`]): nothing was sent, and it is no failure of the server. The
    /// next line is tried (a QMQP line carries any address); 31 only if no line could.
    Unsendable(String),
}

impl RelayError {
    /// The qmail-queue exit code: those of QMQP's failures of the same class.
    pub fn exit(&self) -> QueueExit {
        match self {
            RelayError::ConnectTimeout => QueueExit::ConnectTimeout,
            RelayError::ConnectRejected(_) => QueueExit::ConnectRejected,
            RelayError::Broken(_) => QueueExit::CommFailed,
            RelayError::Temporary(_) => QueueExit::TempRefusal,
            RelayError::Permanent(_) => QueueExit::PermanentRefusal,
            RelayError::Local(_) => QueueExit::ReadError,
            RelayError::Unsendable(_) => QueueExit::PermanentRefusal,
        }
    }

    /// Whether the next line may help (not after a permanent refusal or a local problem).
    pub fn try_next(&self) -> bool {
        !matches!(self, RelayError::Permanent(_) | RelayError::Local(_))
    }

    /// Whether the server failed (and is remembered as such): not for a refusal of the
    /// message, a local problem, or an address this line could never carry.
    pub fn is_server_failure(&self) -> bool {
        self.try_next() && !matches!(self, RelayError::Unsendable(_))
    }
}

impl From<ConnError> for RelayError {
    fn from(e: ConnError) -> RelayError {
        match e {
            ConnError::ConnectTimeout => RelayError::ConnectTimeout,
            ConnError::ConnectRejected(why) => RelayError::ConnectRejected(why),
            ConnError::Broken(why) => RelayError::Broken(why),
        }
    }
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::ConnectTimeout => write!(f, "connection timed out"),
            RelayError::ConnectRejected(why) => write!(f, "connection failed: {why}"),
            RelayError::Broken(why) => write!(f, "conversation failed: {why}"),
            RelayError::Temporary(why) => write!(f, "temporary failure: {why}"),
            RelayError::Permanent(why) => write!(f, "permanent failure: {why}"),
            RelayError::Local(why) => write!(f, "unable to read the message: {why}"),
            RelayError::Unsendable(why) => write!(f, "not sent by SMTP: {why}"),
        }
    }
}

/// The bounds of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// One TCP connect.
    pub connect: Duration,
    /// Each read and write, and each reply as a whole (`timeoutremote`).
    pub remote: Duration,
    /// The whole session, from the connect to the reply after the data.
    pub session: Duration,
}

/// Send the message (`len` bytes of `message`, read from where it stands) for `envelope` to
/// the `smtp://` line `server`; `Ok` holds the server's reply to the data.
pub fn send(
    settings: &SmtpSettings,
    server: &ServerAddr,
    starttls: StartTls,
    bounds: Bounds,
    message: &mut dyn Read,
    len: u64,
    envelope: &QmailEnvelope,
) -> Result<String, RelayError> {
    for address in std::iter::once(&envelope.sender).chain(&envelope.recipients) {
        if let Some(why) = unsendable(address) {
            return Err(RelayError::Unsendable(format!(
                "address {:?} {why}",
                String::from_utf8_lossy(address)
            )));
        }
    }
    let addrs = socket_addrs(server)
        .map_err(|e| RelayError::ConnectRejected(format!("unable to resolve: {e}")))?;
    let mut conn = conn::connect(&addrs, bounds.connect, bounds.remote, bounds.session)?;
    let result = session(
        settings, server, starttls, &mut conn, message, len, envelope,
    );
    match &result {
        // After a reply the server is still listening: say goodbye (its answer is not needed).
        Ok(_) | Err(RelayError::Temporary(_) | RelayError::Permanent(_)) => {
            let _ = conn.write(b"QUIT\r\n");
        }
        _ => {}
    }
    result
}

/// Why an address cannot go into an SMTP path as it is (beside the other SMTP pieces in
/// nullq-proto).
pub use nullq_proto::smtp::unsendable;

fn socket_addrs(server: &ServerAddr) -> io::Result<Vec<SocketAddr>> {
    match &server.host {
        ServerHost::Ip(ip) => Ok(vec![SocketAddr::new(*ip, server.port)]),
        ServerHost::Name(name) => Ok((name.as_str(), server.port).to_socket_addrs()?.collect()),
    }
}

fn host_text(server: &ServerAddr) -> String {
    match &server.host {
        ServerHost::Ip(ip) => ip.to_string(),
        ServerHost::Name(name) => name.clone(),
    }
}

/// A reply that is not the success wanted: temporary for 4xx, permanent for 5xx unless `soft`
/// (AUTH wanted and not used) says the refusal may pass.
fn refused(reply: &Reply, after: &str, soft: &Option<String>) -> RelayError {
    let text = format!("{} (in reply to {after})", reply.line());
    match soft {
        _ if reply.class() != 5 => RelayError::Temporary(text),
        Some(why) => RelayError::Temporary(format!(
            "{text}; counted as temporary since AUTH was not used: {why}"
        )),
        None => RelayError::Permanent(text),
    }
}

#[allow(clippy::too_many_arguments)]
fn session(
    settings: &SmtpSettings,
    server: &ServerAddr,
    starttls: StartTls,
    conn: &mut Conn,
    message: &mut dyn Read,
    len: u64,
    envelope: &QmailEnvelope,
) -> Result<String, RelayError> {
    let greeting = conn.reply()?;
    if greeting.class() != 2 {
        // qmail-remote: a host that will not greet us is a temporary problem of that host.
        return Err(RelayError::Temporary(format!(
            "{} (the greeting)",
            greeting.line()
        )));
    }
    let mut caps = ehlo(conn, &settings.helo)?;
    if caps.starttls {
        let r = conn.command(b"STARTTLS")?;
        if r.class() == 2 {
            let config = match starttls {
                StartTls::Required => conn::verified_config(&settings.ca_file),
                StartTls::Opportunistic => conn::unverified_config(),
            }
            .map_err(|e| RelayError::Temporary(format!("TLS: {}", e.0)))?;
            let name = server_name(server)?;
            conn.start_tls(Arc::new(config), name)?;
            caps = ehlo(conn, &settings.helo)?;
        } else if starttls == StartTls::Required {
            return Err(RelayError::Temporary(format!(
                "{} (in reply to STARTTLS, which the line requires)",
                r.line()
            )));
        }
    }
    if starttls == StartTls::Required && !conn.is_tls() {
        return Err(RelayError::Temporary(
            "the server does not offer STARTTLS, which the line requires (?starttls=required): nothing sent".into(),
        ));
    }
    let soft = match settings.auth.choose(&host_text(server), server.port) {
        AuthChoice::None => None,
        AuthChoice::Unusable(why) => {
            eprintln!("qmail-qmqpc: warning: {server}: {why}");
            Some(why)
        }
        AuthChoice::Use(_) if !conn.is_tls() => Some(format!(
            "control/{AUTH_FILE} has credentials for {server}, which are never sent without TLS and the server offers no STARTTLS"
        )),
        // Opportunistic TLS does not check who is at the other end: a man in the middle
        // would get root's relay password. Only a verified certificate carries it.
        AuthChoice::Use(_) if starttls != StartTls::Required => Some(format!(
            "control/{AUTH_FILE} has credentials for {server}, which are sent only over TLS with a verified certificate (?starttls=required), and this line's STARTTLS is opportunistic"
        )),
        AuthChoice::Use(_) if !caps.auth_plain && !caps.auth_login => Some(format!(
            "control/{AUTH_FILE} has credentials for {server}, which offers no AUTH PLAIN or LOGIN"
        )),
        AuthChoice::Use(credentials) => {
            authenticate(conn, &caps, &credentials)?;
            None
        }
    };
    let r = conn.command(&address_command(b"MAIL FROM:<", &envelope.sender))?;
    if r.class() != 2 {
        return Err(refused(&r, "MAIL FROM", &soft));
    }
    let mut refused_for_good = Vec::new();
    let mut refused_for_now = Vec::new();
    for rcpt in &envelope.recipients {
        let r = conn.command(&address_command(b"RCPT TO:<", rcpt))?;
        let what = format!("<{}> {}", String::from_utf8_lossy(rcpt), r.line());
        match r.class() {
            2 => {}
            5 if soft.is_none() => refused_for_good.push(what),
            _ => refused_for_now.push(what),
        }
    }
    if !refused_for_good.is_empty() || !refused_for_now.is_empty() {
        let _ = conn.command(b"RSET");
        let all = envelope.recipients.len();
        let list = refused_for_good
            .iter()
            .chain(&refused_for_now)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let text = format!(
            "{} of {all} recipient(s) refused, so the message was sent to nobody: {list}",
            refused_for_good.len() + refused_for_now.len()
        );
        return Err(if !refused_for_good.is_empty() {
            RelayError::Permanent(text)
        } else {
            match &soft {
                Some(why) => RelayError::Temporary(format!(
                    "{text}; counted as temporary since AUTH was not used: {why}"
                )),
                None => RelayError::Temporary(text),
            }
        });
    }
    let r = conn.command(b"DATA")?;
    if r.class() != 3 {
        return Err(refused(&r, "DATA", &soft));
    }
    stream_data(conn, message, len)?;
    let r = conn.reply()?;
    if r.class() != 2 {
        return Err(refused(&r, "the message", &soft));
    }
    Ok(r.line())
}

fn server_name(server: &ServerAddr) -> Result<ServerName<'static>, RelayError> {
    match &server.host {
        ServerHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        ServerHost::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| RelayError::Temporary(format!("TLS: {name} is not a host name: {e}"))),
    }
}

fn address_command(verb: &[u8], address: &[u8]) -> Vec<u8> {
    let mut line = verb.to_vec();
    line.extend_from_slice(address);
    line.push(b'>');
    line
}

/// EHLO, or HELO when EHLO is refused; a refused HELO is a temporary problem of this server.
fn ehlo(conn: &mut Conn, helo: &str) -> Result<Caps, RelayError> {
    let r = conn.command(format!("EHLO {helo}").as_bytes())?;
    if r.class() == 2 {
        return Ok(Caps::from_ehlo(&r));
    }
    let r = conn.command(format!("HELO {helo}").as_bytes())?;
    if r.class() != 2 {
        return Err(RelayError::Temporary(format!(
            "{} (in reply to HELO {helo})",
            r.line()
        )));
    }
    Ok(Caps::default())
}

/// AUTH PLAIN (preferred) or LOGIN. A refusal is temporary: a wrong password must not bounce
/// mail (Postfix's `smtp_sasl_auth_soft_bounce`), the next line or the fallback queue gets it.
fn authenticate(conn: &mut Conn, caps: &Caps, c: &Credentials) -> Result<(), RelayError> {
    let r = if caps.auth_plain {
        let token = base64(format!("\0{}\0{}", c.user, c.password).as_bytes());
        conn.command(format!("AUTH PLAIN {token}").as_bytes())?
    } else {
        let r = conn.command(b"AUTH LOGIN")?;
        if r.code != 334 {
            return Err(RelayError::Temporary(format!(
                "{} (in reply to AUTH LOGIN)",
                r.line()
            )));
        }
        let r = conn.command(base64(c.user.as_bytes()).as_bytes())?;
        if r.code != 334 {
            return Err(RelayError::Temporary(format!(
                "{} (in reply to the AUTH LOGIN user)",
                r.line()
            )));
        }
        conn.command(base64(c.password.as_bytes()).as_bytes())?
    };
    if r.class() != 2 {
        return Err(RelayError::Temporary(format!(
            "{} (in reply to AUTH as {})",
            r.line(),
            c.user
        )));
    }
    Ok(())
}

/// The message as DATA, dot-stuffed with CRLF line ends, `len` bytes in fixed chunks, and the
/// final dot (each write within the session deadline, which [`Conn`] keeps).
fn stream_data(conn: &mut Conn, message: &mut dyn Read, len: u64) -> Result<(), RelayError> {
    let mut stuffer = DotStuffer::new();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 16);
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        let n = match message.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(RelayError::Local(
                    "the message file is shorter than announced".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RelayError::Local(e.to_string())),
        };
        out.clear();
        stuffer.push(&buf[..n], &mut out);
        conn.write(&out)?;
        left -= n as u64;
    }
    out.clear();
    stuffer.finish(&mut out);
    conn.write(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_smtp_cannot_carry() {
        for ok in [
            &b""[..],
            b"jason@example.net",
            b"#@[]",
            b"a+b@[192.0.2.1]",
            b"\xc3\xa9@x",
        ] {
            assert_eq!(unsendable(ok), None, "{ok:?}");
        }
        for bad in [
            &b"a\r@x"[..],
            b"a\n@x",
            b"a\0@x",
            b"a> AUTH=<x@y",
            b"a@x> SIZE=1",
            b"<a@x",
            b"a b@x",
            b"a\t@x",
            b"a\x1b@x",
            b"a\x7f@x",
        ] {
            assert!(unsendable(bad).is_some(), "{bad:?}");
        }
        let e = RelayError::Unsendable("x".into());
        assert!(e.try_next() && !e.is_server_failure());
        assert_eq!(e.exit(), QueueExit::PermanentRefusal);
    }

    /// A server that answers every command in time, each reply a line at a time well within
    /// the remote timeout, and never ends one: the session deadline ends the conversation,
    /// not the remote timeout (10 s here, against a 1 s session).
    #[test]
    fn the_session_deadline_ends_a_conversation_each_read_of_which_is_in_time() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // One continuation line every 50 ms until the client hangs up.
            while s.write_all(b"220-still greeting\r\n").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let bounds = Bounds {
            connect: Duration::from_secs(10),
            remote: Duration::from_secs(10),
            session: Duration::from_secs(1),
        };
        let server_addr = ServerAddr {
            host: ServerHost::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
            port,
            link: crate::control::Link::Smtp {
                starttls: StartTls::Opportunistic,
            },
        };
        let envelope = QmailEnvelope {
            sender: b"a@example.net".to_vec(),
            recipients: vec![b"b@example.net".to_vec()],
        };
        let started = std::time::Instant::now();
        let got = send(
            &SmtpSettings::unused(),
            &server_addr,
            StartTls::Opportunistic,
            bounds,
            &mut &b"x\n"[..],
            2,
            &envelope,
        );
        let took = started.elapsed();
        assert!(
            matches!(&got, Err(RelayError::Broken(why)) if why.contains("longer than 1s")),
            "{got:?}"
        );
        assert!(
            took < bounds.remote,
            "ended by the session, not a read: {took:?}"
        );
        server.join().unwrap();
    }
}
