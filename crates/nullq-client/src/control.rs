//! The qmail control files (qmail-control(5)) as the null client reads them.
//!
//! Files live under `HOME/control/` where HOME is the qmail home directory: `/var/qmail`, or
//! `$NULLQ_HOME` when set (the tests use that). One value a line; surrounding blanks are ignored and
//! `#` lines are comments, as in qmail's `control.c`. A missing file is not an error: the caller
//! applies qmail's default.
//!
//! Two readings exist because qmail has two: [`ControlDir::readline`] is qmail's
//! `control_readline` (the first line as it is, trailing blanks cut, even when empty or a
//! comment), used for the single-value files `me`, `defaulthost`, `defaultdomain`, `plusdomain`
//! and `idhost`, so that an empty file means an empty value exactly as in qmail (the cause of
//! addresses like `jason@example.`); [`ControlDir::readfile`] is `control_readfile` (every
//! non-empty, non-`#` line). [`ControlDir::inject_controls`] applies qmail-inject's defaults
//! (`me`, then a built-in word) and environment overrides.
//!
//! One default is Debian's, not qmail's: when `control/me` does not exist, the first line of
//! [`MAILNAME`] (`/etc/mailname`, the host's mail name that Debian's MTAs share) is `me`, so a
//! host configured for Debian needs no `control/me` at all ([`ControlDir::me`]).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// The qmail home directory of a stock mini-qmail installation.
pub const DEFAULT_HOME: &str = "/var/qmail";

/// Debian's mail name of the host: the default of `control/me` ([`ControlDir::me`]).
pub const MAILNAME: &str = "/etc/mailname";

/// Where `me` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeSource {
    /// `control/me`.
    ControlFile,
    /// [`MAILNAME`], since `control/me` does not exist.
    Mailname,
}

/// A qmail home directory and its `control/` folder.
#[derive(Debug, Clone)]
pub struct ControlDir {
    home: PathBuf,
}

impl ControlDir {
    /// The home named by `$NULLQ_HOME`, else [`DEFAULT_HOME`].
    pub fn from_env() -> ControlDir {
        let home = std::env::var_os("NULLQ_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HOME));
        ControlDir { home }
    }

    /// A control directory under an explicit home.
    pub fn new(home: impl Into<PathBuf>) -> ControlDir {
        ControlDir { home: home.into() }
    }

    /// The qmail home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The path of control file `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.join("control").join(name)
    }

    /// The first meaningful line of control file `name`, or `None` when the file does not exist
    /// or holds no value.
    pub fn line(&self, name: &str) -> io::Result<Option<String>> {
        Ok(self.lines(name)?.into_iter().next())
    }

    /// Every meaningful line of control file `name` (blanks trimmed, comments and empty lines
    /// dropped); empty when the file does not exist.
    pub fn lines(&self, name: &str) -> io::Result<Vec<String>> {
        match std::fs::read(self.path(name)) {
            Ok(bytes) => Ok(parse_lines(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

impl ControlDir {
    /// qmail's `control_readline`: the first line of control file `name` with trailing blanks
    /// and newline removed (leading blanks kept, `#` not special), or `None` when the file
    /// does not exist. An empty file gives an empty value.
    pub fn readline(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        read_first_line(&self.path(name))
    }

    /// qmail's `control_readfile`: every line of control file `name` with trailing blanks
    /// removed, skipping empty lines and lines starting with `#`; `None` when the file does not
    /// exist.
    pub fn readfile(&self, name: &str) -> io::Result<Option<Vec<Vec<u8>>>> {
        read_value_lines(&self.path(name))
    }

    /// The host's name, `me`: qmail's `control_readline` of `control/me` when the file exists
    /// (even empty, as in qmail), else the first line of [`MAILNAME`] with its blanks cut when
    /// that holds a value; `None` when neither does.
    pub fn me(&self) -> io::Result<Option<(Vec<u8>, MeSource)>> {
        self.me_with(Path::new(MAILNAME))
    }

    fn me_with(&self, mailname: &Path) -> io::Result<Option<(Vec<u8>, MeSource)>> {
        if let Some(me) = self.readline("me")? {
            return Ok(Some((me, MeSource::ControlFile)));
        }
        let name = read_first_line(mailname)?.map(|line| line.trim_ascii().to_vec());
        Ok(name
            .filter(|n| !n.is_empty())
            .map(|n| (n, MeSource::Mailname)))
    }

    /// The values qmail-inject reads (`getcontrols` in qmail-inject.c), with `env` looking up
    /// environment variables (see [`process_env`]): each of defaultdomain, defaulthost,
    /// plusdomain and idhost is the environment override if set, else the control file's first
    /// line, else `me` ([`ControlDir::me`]), else the file's own name (qmail's built-in default).
    pub fn inject_controls(
        &self,
        env: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> io::Result<InjectControls> {
        self.inject_controls_with(env, Path::new(MAILNAME))
    }

    fn inject_controls_with(
        &self,
        env: &dyn Fn(&str) -> Option<Vec<u8>>,
        mailname: &Path,
    ) -> io::Result<InjectControls> {
        let (me, me_source) = match self.me_with(mailname)? {
            Some((me, source)) => (Some(me), Some(source)),
            None => (None, None),
        };
        let get = |file: &'static str, var: &'static str| -> io::Result<Setting> {
            if let Some(value) = env(var) {
                return Ok(Setting {
                    value,
                    source: Source::Env(var),
                });
            }
            if let Some(value) = self.readline(file)? {
                return Ok(Setting {
                    value,
                    source: Source::File,
                });
            }
            if let Some(value) = &me {
                return Ok(Setting {
                    value: value.clone(),
                    source: Source::Me,
                });
            }
            Ok(Setting {
                value: file.as_bytes().to_vec(),
                source: Source::Builtin,
            })
        };
        Ok(InjectControls {
            defaultdomain: get("defaultdomain", "QMAILDEFAULTDOMAIN")?,
            defaulthost: get("defaulthost", "QMAILDEFAULTHOST")?,
            plusdomain: get("plusdomain", "QMAILPLUSDOMAIN")?,
            idhost: get("idhost", "QMAILIDHOST")?,
            me,
            me_source,
        })
    }
}

/// Where a control value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The environment variable named.
    Env(&'static str),
    /// Its own control file.
    File,
    /// `me` (`control/me`, or [`MAILNAME`] without it), the default of every other file.
    Me,
    /// qmail's built-in default: the name of the file itself (e.g. `defaulthost`), which makes
    /// addresses like `bob@defaulthost` that show the file is missing.
    Builtin,
}

/// A control value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value (bytes, as qmail treats it).
    pub value: Vec<u8>,
    /// Its origin.
    pub source: Source,
}

/// The control values of qmail-inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectControls {
    /// `me`: `control/me`, else [`MAILNAME`]'s name, if either is there.
    pub me: Option<Vec<u8>>,
    /// Which of the two `me` came from.
    pub me_source: Option<MeSource>,
    /// Appended to hosts without a dot.
    pub defaultdomain: Setting,
    /// Appended to addresses without `@`.
    pub defaulthost: Setting,
    /// Replaces a trailing `+`.
    pub plusdomain: Setting,
    /// Right-hand side of generated Message-IDs.
    pub idhost: Setting,
}

/// Look up an environment variable of this process as bytes (an environment lookup for
/// [`ControlDir::inject_controls`]).
pub fn process_env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(os_bytes)
}

/// The bytes of an OS string (Unix: exactly its bytes).
pub fn os_bytes(s: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    s.into_vec()
}

/// Strip what qmail's `striptrailingwhitespace` strips.
fn strip_trailing(mut line: Vec<u8>) -> Vec<u8> {
    while matches!(line.last(), Some(b'\n' | b' ' | b'\t')) {
        line.pop();
    }
    line
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// qmail's `control_readline` on any path (see [`ControlDir::readline`]).
pub fn read_first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    Ok(read_optional(path)?.map(|bytes| {
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        strip_trailing(first.to_vec())
    }))
}

/// qmail's `control_readfile` on any path (see [`ControlDir::readfile`]); qmail-inject reads
/// `$QMAILMFTFILE` this way.
pub fn read_value_lines(path: &Path) -> io::Result<Option<Vec<Vec<u8>>>> {
    Ok(read_optional(path)?.map(|bytes| {
        bytes
            .split(|&b| b == b'\n')
            .map(|l| strip_trailing(l.to_vec()))
            .filter(|l| !l.is_empty() && l[0] != b'#')
            .collect()
    }))
}

/// Split control-file content into values, as qmail's `control_readfile` does.
pub fn parse_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The TCP port of QMQP (cr.yp.to/proto/qmqp.html), used when a `qmqpservers` line names none.
pub const QMQP_PORT: u16 = 628;

/// The host part of a `qmqpservers` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHost {
    /// An IPv4 address (qmail's only form) or a bracketed IPv6 address.
    Ip(IpAddr),
    /// A host name, resolved when connecting (nullq's extension; qmail takes addresses only).
    Name(String),
}

/// The port a `qmqps://HOST` line means: QMQP over TLS has no registered port; 7628 needs no
/// root on the server and is what nullq's documentation gives `nullq serve --tls-listen`.
pub const QMQPS_PORT: u16 = 7628;

/// One QMQP server from `control/qmqpservers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Where the server is.
    pub host: ServerHost,
    /// Its port: [`QMQP_PORT`] (or [`QMQPS_PORT`]) unless the line said `:PORT`.
    pub port: u16,
    /// How it is spoken to: QMQP for qmail's lines; `qmqps://` and `smtp://` lines.
    pub link: Link,
}

/// The port of an `smtp://` line that names none (RFC 5321's; 587 is submission, RFC 6409).
pub const SMTP_PORT: u16 = 25;

/// The scheme of a [`Link::Qmqps`] line.
pub const QMQPS_SCHEME: &str = "qmqps://";
/// The scheme of a [`Link::Smtp`] line.
pub const SMTP_SCHEME: &str = "smtp://";

/// How a `qmqpservers` line is spoken to. qmail's lines are all QMQP; nullq adds schemes, each
/// spoken by its own module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// QMQP (cr.yp.to/proto/qmqp.html): qmail's plain lines.
    Qmqp,
    /// `qmqps://HOST[:PORT]`: QMQP inside TLS (`crate::tls`), port [`QMQPS_PORT`] by default.
    Qmqps,
    /// `smtp://HOST[:PORT][?starttls=opportunistic|required]`: SMTP to a relay (the
    /// `smtp_relay` module), tried in its place in the list.
    Smtp {
        /// Whether STARTTLS is required (and the certificate verified) or opportunistic.
        starttls: StartTls,
    },
}

/// The STARTTLS level of an `smtp://` line (Postfix's `smtp_tls_security_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// `may` (the default): encrypt when the server offers STARTTLS, without verifying its
    /// certificate; plain text when it does not.
    Opportunistic,
    /// `secure`: STARTTLS or no mail, the certificate verified against `control/tlscafile` or
    /// the system's bundle, for the host name of the line.
    Required,
}

/// Parse the part of an `smtp://` line after the scheme: `HOST[:PORT]` as for QMQP (default
/// port [`SMTP_PORT`]), then an optional `?starttls=opportunistic|required`.
fn parse_smtp(line: &str, rest: &str) -> Result<ServerAddr, ServerLineError> {
    let bad = |problem| Err(ServerLineError::new(line, problem));
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let starttls = match query {
        None | Some("starttls=opportunistic") | Some("starttls=may") => StartTls::Opportunistic,
        Some("starttls=required") | Some("starttls=secure") => StartTls::Required,
        Some(_) => return bad(ServerProblem::BadOption),
    };
    if hostport.contains('/') {
        return bad(ServerProblem::NotHost);
    }
    let (host, port) = parse_host_port(hostport, SMTP_PORT).map_err(|e| match e.problem {
        ServerProblem::Empty => ServerLineError::new(line, ServerProblem::NoHost),
        problem => ServerLineError::new(line, problem),
    })?;
    Ok(ServerAddr {
        host,
        port,
        link: Link::Smtp { starttls },
    })
}

impl ServerAddr {
    /// The socket addresses to try, in resolver order (a literal address gives exactly one).
    pub fn socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.host {
            ServerHost::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            ServerHost::Name(name) => Ok((name.as_str(), self.port).to_socket_addrs()?.collect()),
        }
    }
}

impl fmt::Display for ServerAddr {
    /// The canonical spelling, which [`parse_server`] reads back: `1.2.3.4:628`, `[::1]:628`,
    /// `host:628`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.link {
            Link::Qmqp => {}
            Link::Qmqps => f.write_str(QMQPS_SCHEME)?,
            Link::Smtp { .. } => f.write_str(SMTP_SCHEME)?,
        }
        match &self.host {
            ServerHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            ServerHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            ServerHost::Name(name) => write!(f, "{name}:{}", self.port),
        }?;
        match self.link {
            Link::Smtp {
                starttls: StartTls::Required,
            } => f.write_str("?starttls=required"),
            _ => Ok(()),
        }
    }
}

/// Parse one `qmqpservers` line (already trimmed of blanks and comments by [`parse_lines`]).
///
/// Accepted: `1.2.3.4` (qmail's form), `[::1]` or a bare IPv6 address, `host.example.net`, each
/// of the bracketed/IPv4/name forms with an optional `:PORT` (1..=65535, default [`QMQP_PORT`]).
/// qmail-qmqpc silently skips lines it cannot read; nullq reports them (the error names the
/// problem) so qmail-showctl can warn and the client can skip them knowingly.
/// `qmqps://` before any of these forms means QMQP over TLS ([`Link::Qmqps`]), `smtp://` (with
/// an optional `?starttls=...`) SMTP to a relay ([`Link::Smtp`]).
pub fn parse_server(line: &str) -> Result<ServerAddr, ServerLineError> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix(SMTP_SCHEME) {
        return parse_smtp(line, rest);
    }
    // `qmqps://` is the plain form after it, with its own default port.
    let (rest, link, default_port) = match line.strip_prefix(QMQPS_SCHEME) {
        Some(rest) if rest.trim().is_empty() => {
            return Err(ServerLineError::new(line, ServerProblem::NoHost))
        }
        Some(rest) => (rest, Link::Qmqps, QMQPS_PORT),
        None => (line, Link::Qmqp, QMQP_PORT),
    };
    let (host, port) =
        parse_host_port(rest, default_port).map_err(|e| ServerLineError::new(line, e.problem))?;
    Ok(ServerAddr { host, port, link })
}

/// `HOST[:PORT]` of a `qmqpservers` line, as [`parse_server`] describes.
fn parse_host_port(line: &str, default_port: u16) -> Result<(ServerHost, u16), ServerLineError> {
    let line = line.trim();
    let bad = |problem| Err(ServerLineError::new(line, problem));
    if line.is_empty() {
        return bad(ServerProblem::Empty);
    }
    if let Some(rest) = line.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return bad(ServerProblem::NoClosingBracket);
        };
        let inside = &rest[..end];
        let ip: IpAddr = match inside.parse::<Ipv6Addr>() {
            Ok(ip) => IpAddr::V6(ip),
            Err(_) => match inside.parse::<Ipv4Addr>() {
                Ok(ip) => IpAddr::V4(ip),
                Err(_) => return bad(ServerProblem::NotIpInBrackets),
            },
        };
        let after = &rest[end + 1..];
        let port = if after.is_empty() {
            default_port
        } else if let Some(p) = after.strip_prefix(':') {
            parse_port(line, p)?
        } else {
            return bad(ServerProblem::TextAfterBracket);
        };
        return Ok((ServerHost::Ip(ip), port));
    }
    // Two or more colons and no brackets: only a bare IPv6 address makes sense (no port).
    if line.matches(':').count() > 1 {
        return match line.parse::<Ipv6Addr>() {
            Ok(ip) => Ok((ServerHost::Ip(IpAddr::V6(ip)), default_port)),
            Err(_) => bad(ServerProblem::NotIpv6),
        };
    }
    let (host, port) = match line.split_once(':') {
        Some((h, p)) => (h, parse_port(line, p)?),
        None => (line, default_port),
    };
    if host.is_empty() {
        return bad(ServerProblem::NoHost);
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok((ServerHost::Ip(IpAddr::V4(ip)), port));
    }
    // Something made of digits and dots that is not an IPv4 address is a typo, not a name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return bad(ServerProblem::NotIpv4);
    }
    let name_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !host.starts_with('.')
        && !host.starts_with('-')
        && !host.contains("..");
    if !name_ok {
        return bad(ServerProblem::NotHost);
    }
    Ok((ServerHost::Name(host.to_owned()), port))
}

fn parse_port(line: &str, p: &str) -> Result<u16, ServerLineError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServerLineError::new(line, ServerProblem::PortNotNumber));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(ServerLineError::new(line, ServerProblem::PortOutOfRange)),
        Ok(port) => Ok(port),
    }
}

/// A `qmqpservers` line [`parse_server`] cannot read: the line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLineError {
    /// The line, trimmed.
    pub line: String,
    /// What is wrong with it.
    pub problem: ServerProblem,
}

/// What is wrong with a `qmqpservers` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProblem {
    /// Nothing but blanks.
    Empty,
    /// `[` without `]`.
    NoClosingBracket,
    /// Between `[` and `]`, no IP address.
    NotIpInBrackets,
    /// After `]`, something other than `:PORT`.
    TextAfterBracket,
    /// Two or more colons, no brackets, and not an IPv6 address.
    NotIpv6,
    /// `:PORT` with nothing before it.
    NoHost,
    /// Digits and dots that are not an IPv4 address.
    NotIpv4,
    /// Neither an address nor a host name.
    NotHost,
    /// The port is not a number.
    PortNotNumber,
    /// The port is 0 or over 65535.
    PortOutOfRange,
    /// After `?` in an `smtp://` line, something other than `starttls=opportunistic|required`.
    BadOption,
}

impl ServerLineError {
    fn new(line: &str, problem: ServerProblem) -> ServerLineError {
        ServerLineError {
            line: line.to_owned(),
            problem,
        }
    }
}

impl fmt::Display for ServerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerProblem::Empty => "empty server line",
            ServerProblem::NoClosingBracket => "missing ] after IPv6 address",
            ServerProblem::NotIpInBrackets => "not an IP address inside [ ]",
            ServerProblem::TextAfterBracket => "unexpected text after ]",
            ServerProblem::NotIpv6 => "not an IPv6 address (write [addr]:port for a port)",
            ServerProblem::NoHost => "no host before the port",
            ServerProblem::NotIpv4 => "not a valid IPv4 address",
            ServerProblem::NotHost => "not an IP address or host name",
            ServerProblem::PortNotNumber => "port is not a number",
            ServerProblem::PortOutOfRange => "port out of range 1-65535",
            ServerProblem::BadOption => {
                "unknown option (smtp:// takes ?starttls=opportunistic or ?starttls=required)"
            }
        })
    }
}

impl fmt::Display for ServerLineError {
    /// `LINE: PROBLEM`; an empty line has nothing to show, so only the problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            ServerProblem::Empty => write!(f, "{}", self.problem),
            _ => write!(f, "{}: {}", self.line, self.problem),
        }
    }
}

impl std::error::Error for ServerLineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_skip_comments_and_blanks() {
        assert_eq!(
            parse_lines(b"# servers\n 127.0.0.1 \n\n10.0.0.2:628\n"),
            vec!["127.0.0.1", "10.0.0.2:628"]
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = ControlDir::new("/nonexistent-nullq-home");
        assert!(matches!(dir.line("me"), Ok(None)));
    }

    #[test]
    fn server_lines() {
        let v4 = |a: [u8; 4], port| ServerAddr {
            host: ServerHost::Ip(IpAddr::V4(Ipv4Addr::from(a))),
            port,
            link: Link::Qmqp,
        };
        assert_eq!(parse_server("1.2.3.4"), Ok(v4([1, 2, 3, 4], 628)));
        assert_eq!(
            parse_server(" 127.0.0.1:10628 "),
            Ok(v4([127, 0, 0, 1], 10628))
        );
        assert_eq!(
            parse_server("[::1]:7"),
            Ok(ServerAddr {
                host: ServerHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                port: 7,
                link: Link::Qmqp,
            })
        );
        assert_eq!(
            parse_server("::1"),
            Ok(ServerAddr {
                host: ServerHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                port: 628,
                link: Link::Qmqp,
            })
        );
        assert_eq!(
            parse_server("mail.example.net"),
            Ok(ServerAddr {
                host: ServerHost::Name("mail.example.net".into()),
                port: 628,
                link: Link::Qmqp,
            })
        );
        assert_eq!(
            parse_server("localhost:10628"),
            Ok(ServerAddr {
                host: ServerHost::Name("localhost".into()),
                port: 10628,
                link: Link::Qmqp,
            })
        );
        for bad in [
            "",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "1.2.3",
            "300.1.1.1",
            "[::1",
            "[x]",
            "[::1]x",
            ":628",
            "a b",
            "host:port",
            "1::2::3",
            "qmqps://",
            "qmqps://:7628",
            "qmqps://host:0",
            "qmqp://host",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn smtp_lines() {
        let smtp = |host: ServerHost, port, starttls| ServerAddr {
            host,
            port,
            link: Link::Smtp { starttls },
        };
        let name = |n: &str| ServerHost::Name(n.to_owned());
        let lo = ServerHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let opp = StartTls::Opportunistic;
        assert_eq!(
            parse_server("smtp://mail.example.net"),
            Ok(smtp(name("mail.example.net"), 25, opp))
        );
        assert_eq!(
            parse_server("smtp://127.0.0.1:587?starttls=required"),
            Ok(smtp(lo.clone(), 587, StartTls::Required))
        );
        assert_eq!(parse_server("smtp://127.0.0.1:628"), Ok(smtp(lo, 628, opp)));
        assert_eq!(
            parse_server("smtp://[::1]?starttls=opportunistic"),
            Ok(smtp(
                ServerHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                25,
                opp
            ))
        );
        for bad in [
            "smtp://",
            "smtp://:25",
            "smtp://host:0",
            "smtp://host?tls=yes",
            "smtp://host/path",
            "smtp://smtp://host",
            "smtp://a b",
        ] {
            let e = parse_server(bad).expect_err(bad);
            assert_eq!(e.line, bad, "the error names the whole line");
        }
        for line in [
            "smtp://mail.example.net:25",
            "smtp://[::1]:587?starttls=required",
        ] {
            assert_eq!(parse_server(line).map(|s| s.to_string()), Ok(line.into()));
        }
    }

    #[test]
    fn qmqps_lines() {
        let s = parse_server("qmqps://mail.example.net").unwrap();
        assert_eq!(s.link, Link::Qmqps);
        assert_eq!(s.port, QMQPS_PORT);
        assert_eq!(s.host, ServerHost::Name("mail.example.net".into()));
        assert_eq!(s.to_string(), "qmqps://mail.example.net:7628");
        let s = parse_server(" qmqps://[::1]:10 ").unwrap();
        assert_eq!((s.link, s.port), (Link::Qmqps, 10));
        assert_eq!(s.to_string(), "qmqps://[::1]:10");
        let s = parse_server("qmqps://127.0.0.1").unwrap();
        assert_eq!(s.to_string(), "qmqps://127.0.0.1:7628");
        let e = parse_server("qmqps://host:x").unwrap_err();
        assert_eq!(e.to_string(), "qmqps://host:x: port is not a number");
        assert_eq!(
            parse_server("qmqps://").unwrap_err().problem,
            ServerProblem::NoHost
        );
        assert_eq!(parse_server("127.0.0.1").unwrap().link, Link::Qmqp);
    }

    #[test]
    fn server_display_round_trips() {
        for line in [
            "1.2.3.4:628",
            "[::1]:10628",
            "mail.example.net:628",
            "qmqps://[::1]:7628",
        ] {
            let parsed = parse_server(line).unwrap();
            assert_eq!(parsed.to_string(), line);
            assert_eq!(parse_server(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn qmail_line_semantics() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("control")).unwrap();
        let dir = ControlDir::new(home.path());
        let put = |name: &str, text: &str| std::fs::write(dir.path(name), text).unwrap();
        put("me", "host1.example.net \n# comment\n");
        put("defaultdomain", "");
        put("plusdomain", "  example.net\t\nignored\n");
        put("list", "# c\n\na \n  b\n#d\n");
        assert_eq!(
            dir.readline("me").unwrap(),
            Some(b"host1.example.net".to_vec())
        );
        assert_eq!(dir.readline("defaultdomain").unwrap(), Some(Vec::new()));
        assert_eq!(dir.readline("nothere").unwrap(), None);
        assert_eq!(
            dir.readfile("list").unwrap(),
            Some(vec![b"a".to_vec(), b"  b".to_vec()])
        );
        assert_eq!(dir.readfile("nothere").unwrap(), None);

        let env = |name: &str| (name == "QMAILIDHOST").then(|| b"id.example.net".to_vec());
        let c = dir.inject_controls(&env).unwrap();
        assert_eq!(c.me.as_deref(), Some(&b"host1.example.net"[..]));
        assert_eq!(
            c.defaultdomain,
            Setting {
                value: Vec::new(),
                source: Source::File
            }
        );
        assert_eq!(
            c.defaulthost,
            Setting {
                value: b"host1.example.net".to_vec(),
                source: Source::Me
            }
        );
        assert_eq!(
            c.plusdomain,
            Setting {
                value: b"  example.net".to_vec(),
                source: Source::File
            }
        );
        assert_eq!(
            c.idhost,
            Setting {
                value: b"id.example.net".to_vec(),
                source: Source::Env("QMAILIDHOST")
            }
        );

        let bare = ControlDir::new("/nonexistent-nullq-home");
        let nowhere = Path::new("/nonexistent-nullq-home/mailname");
        let c = bare.inject_controls_with(&|_| None, nowhere).unwrap();
        assert_eq!(c.me, None);
        assert_eq!(
            c.defaulthost,
            Setting {
                value: b"defaulthost".to_vec(),
                source: Source::Builtin
            }
        );
    }

    #[test]
    fn mailname_is_me_without_control_me() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("control")).unwrap();
        let dir = ControlDir::new(home.path());
        let mailname = home.path().join("mailname");
        std::fs::write(&mailname, "  host2.example.net \nsecond line\n").unwrap();
        let c = dir.inject_controls_with(&|_| None, &mailname).unwrap();
        assert_eq!(c.me.as_deref(), Some(&b"host2.example.net"[..]));
        assert_eq!(c.me_source, Some(MeSource::Mailname));
        assert_eq!(c.defaulthost.value, b"host2.example.net");
        assert_eq!(c.defaulthost.source, Source::Me);
        // An empty mailname names nothing: qmail's placeholders, as with no file.
        std::fs::write(&mailname, "\n").unwrap();
        assert_eq!(dir.me_with(&mailname).unwrap(), None);
        // control/me wins, even empty (qmail's reading of it).
        std::fs::write(&mailname, "host2.example.net\n").unwrap();
        std::fs::write(dir.path("me"), "").unwrap();
        assert_eq!(
            dir.me_with(&mailname).unwrap(),
            Some((Vec::new(), MeSource::ControlFile))
        );
    }
}
