//! The server half of `qmail-showctl`'s report: the `qmqpservers` lines and what each kind
//! needs (QMQP, `qmqps://` and its TLS files, `smtp://` and its EHLO name, CA and credentials),
//! `--check`'s connections, and what the memory of failed servers holds.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::calendar;
use crate::control::{self, ControlDir, ServerAddr};
use crate::qmqpc;
use crate::server_memory;
use crate::showctl::report::{safe, Report};
use crate::tls;
use crate::transport;

/// How long `--check` waits for each server's TCP connection (qmail-qmqpc's connect timeout).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the `smtp://` lines use, when there are any.
fn show_smtp<W: Write>(
    r: &mut Report<'_, W>,
    control: &ControlDir,
    servers: &[ServerAddr],
) -> io::Result<()> {
    if !servers
        .iter()
        .any(|s| matches!(s.link, control::Link::Smtp { .. }))
    {
        return Ok(());
    }
    r.line("  smtp://HOST[:PORT][?starttls=required] lines are SMTP relays (default port 25;")?;
    r.line("  STARTTLS opportunistic unless required).")?;
    let settings = crate::smtp_relay::SmtpSettings::load(control);
    r.line(&format!("  SMTP EHLO name: {}.", settings.helo))?;
    let ca = match tls::ca_roots(&settings.ca_file) {
        Ok((path, _)) => format!("CA certificates for starttls=required: {}", path.display()),
        Err(e) => format!("CA certificates for starttls=required: unusable: {e}"),
    };
    r.line(&format!("  {ca}."))?;
    use crate::smtp_relay::auth::AuthFile;
    let auth = &settings.auth;
    r.line(&format!("{}: {auth}.", crate::smtp_relay::auth::AUTH_FILE))?;
    r.line("  Credentials are sent only on ?starttls=required lines (a verified certificate);")?;
    r.line("  opportunistic lines send without AUTH, a 5xx then counting as temporary.")?;
    if let AuthFile::Unsafe { .. } = auth {
        r.warn(&auth.to_string())?;
    }
    Ok(())
}

pub(crate) fn show_transport<W: Write>(
    r: &mut Report<'_, W>,
    control: &ControlDir,
    check: bool,
) -> io::Result<()> {
    r.line("")?;
    let lines = match control.readfile("qmqpservers") {
        Ok(l) => l,
        Err(e) => {
            r.line("qmqpservers: Oops! Trouble reading this file.")?;
            return r.warn(&format!("unable to read qmqpservers: {e}"));
        }
    };
    let mut servers: Vec<ServerAddr> = Vec::new();
    match &lines {
        None => r.line("qmqpservers: (Default.) No QMQP servers.")?,
        Some(lines) => {
            r.line("qmqpservers:")?;
            for line in lines {
                let text = String::from_utf8_lossy(line);
                match control::parse_server(&text) {
                    Ok(s) => {
                        // An `smtp://` line is an SMTP relay.
                        let kind = match s.link {
                            control::Link::Smtp { .. } => "SMTP relay",
                            _ => "QMQP server",
                        };
                        r.line(&format!("{kind}: {s}."))?;
                        servers.push(s);
                    }
                    Err(e) => {
                        r.line(&format!("QMQP server: {}.", safe(line)))?;
                        r.warn(&format!("unreadable line, skipped: {e}"))?;
                    }
                }
            }
        }
    }
    r.line(
        "  Tried in order; a message goes to the first that accepts it. Lines: IPv4, [IPv6] or",
    )?;
    r.line("  a host name, each with an optional :PORT (default 628); qmqps://HOST[:PORT] for")?;
    r.line("  QMQP over TLS (default port 7628).")?;
    show_smtp(r, control, &servers)?;
    if servers.is_empty() {
        r.warn("no usable QMQP server: every message fails with \"qq unable to read configuration\" (exit 111)")?;
    }

    show_tls(r, control, &servers)?;

    let config = qmqpc::Config::load(control);
    let (connect, remote) = match &config {
        Ok(c) => (c.transport.connect_timeout, c.transport.remote_timeout),
        Err(_) => (
            transport::DEFAULT_CONNECT_TIMEOUT,
            transport::DEFAULT_REMOTE_TIMEOUT,
        ),
    };
    for (name, value, what) in [
        ("timeoutconnect", connect, "QMQP connection timeout is "),
        ("timeoutremote", remote, "QMQP data timeout is "),
    ] {
        r.line("")?;
        let default = if control.path(name).exists() {
            ""
        } else {
            "(Default.) "
        };
        r.line(&format!(
            "{name}: {default}{what}{} seconds.",
            value.as_secs()
        ))?;
    }
    if let Err(e) = &config {
        r.warn(&e.to_string())?;
    }

    r.line("")?;
    match control.line("fallbackqueue") {
        Ok(None) => {
            r.line("fallbackqueue: (Default.) No fallback queue.")?;
            r.line("  When no server takes a message, the program that sent it gets exit 111.")?;
        }
        Ok(Some(dir)) => {
            let path = control.home().join(&dir);
            r.line(&format!(
                "fallbackqueue: Fallback queue is {}.",
                path.display()
            ))?;
            r.line(
                "  When every server fails temporarily, messages wait there until `nullq flush`.",
            )?;
            if !path.is_dir() {
                r.warn(&format!("{} is not a directory (yet)", path.display()))?;
            }
        }
        Err(e) => {
            r.line("fallbackqueue: Oops! Trouble reading this file.")?;
            r.warn(&format!("unable to read fallbackqueue: {e}"))?;
        }
    }

    if check {
        r.line("")?;
        r.line(&format!(
            "Checking each server (TCP connect, {} s):",
            CHECK_TIMEOUT.as_secs()
        ))?;
        for s in &servers {
            match connect_once(s) {
                Ok(addr) => r.line(&format!("  {s}: connected to {addr}."))?,
                Err(e) => {
                    r.summary.unreachable += 1;
                    r.line(&format!("  {s}: UNREACHABLE: {e}."))?;
                }
            }
        }
    }
    Ok(())
}

/// `tlscafile`, `tlsclientcert`, `tlsclientkey` (see [`crate::tls`]), and, when a `qmqps://`
/// server is listed, whether they load for the user running this.
fn show_tls<W: Write>(
    r: &mut Report<'_, W>,
    control: &ControlDir,
    servers: &[ServerAddr],
) -> io::Result<()> {
    for (name, default, what) in [
        (
            "tlscafile",
            format!(
                "Server certificates are checked against {}",
                tls::SYSTEM_CA_FILE
            ),
            "Server certificates are checked against ",
        ),
        (
            "tlsclientcert",
            "No client certificate".to_owned(),
            "Client certificate is ",
        ),
        ("tlsclientkey", "No client key".to_owned(), "Client key is "),
    ] {
        r.line("")?;
        match tls::control_path(control, name) {
            Ok(None) => r.line(&format!("{name}: (Default.) {default}."))?,
            Ok(Some(path)) => r.line(&format!("{name}: {what}{}.", path.display()))?,
            Err(e) => {
                r.line(&format!("{name}: Oops! Trouble reading this file."))?;
                r.warn(&e.to_string())?;
            }
        }
    }
    r.line("  Read only for qmqps:// servers. The key must be mode 600, owned by root or the")?;
    r.line("  user sending: a user who cannot read it sends without it (a server that requires")?;
    r.line("  a client certificate then refuses, and the next server is tried).")?;
    if let Ok(Some(key)) = tls::control_path(control, "tlsclientkey") {
        match std::fs::File::open(&key) {
            Ok(file) => {
                if let Some(problem) = tls::key_problem(&file) {
                    r.warn(&format!("{}: {problem}", key.display()))?;
                }
            }
            Err(e) => r.line(&format!("  Not readable by this user: {e}."))?,
        }
    }
    if servers.iter().any(|s| s.link == control::Link::Qmqps) {
        if let Err(e) = tls::ClientTls::new(control).config() {
            r.warn(&format!("qmqps:// servers will fail for this user: {e}"))?;
        }
    }
    Ok(())
}

/// One TCP connection to the first address of `server` that accepts, then closed.
fn connect_once(server: &ServerAddr) -> Result<std::net::SocketAddr, String> {
    let addrs = server
        .socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let mut last = "no address".to_owned();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CHECK_TIMEOUT) {
            Ok(_) => return Ok(addr),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// `qmqpstate`, `qmqpbackoff`, `qmqpspread`, and what the memory of failed servers holds
/// now ([`server_memory`]).
pub(crate) fn show_memory<W: Write>(r: &mut Report<'_, W>, control: &ControlDir) -> io::Result<()> {
    let servers = control
        .lines("qmqpservers")
        .unwrap_or_default()
        .iter()
        .filter_map(|l| control::parse_server(l).ok())
        .filter(|s| s.link == control::Link::Qmqp) // the spread moves only these
        .collect::<Vec<_>>();
    r.line("")?;
    let settings = match crate::server_memory_session::Settings::load(control, servers.len()) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return r.warn(&e.to_string()),
        Err(e) => return r.warn(&format!("unable to read the server memory's files: {e}")),
    };
    let default = |name: &str| {
        if control.path(name).exists() {
            ""
        } else {
            "(Default.) "
        }
    };
    let Some(dir) = &settings.dir else {
        r.line("qmqpbackoff: Server memory is off: servers are tried in qmqpservers order.")?;
        return Ok(());
    };
    let b = settings.backoff;
    r.line(&format!(
        "qmqpbackoff: {}A failed server is tried last for {} s, doubling to {} s, until it answers K.",
        default("qmqpbackoff"),
        b.first,
        b.max
    ))?;
    r.line("")?;
    r.line(&match servers.get(settings.start) {
        Some(s) if settings.start > 0 => format!(
            "qmqpspread: This host starts at QMQP server {} of the list: {s}.",
            settings.start + 1
        ),
        _ => format!(
            "qmqpspread: {}Every host starts at the first server.",
            default("qmqpspread")
        ),
    })?;
    r.line("")?;
    r.line(&format!(
        "qmqpstate: {}Server memory is in {}.",
        default("qmqpstate"),
        dir.display()
    ))?;
    let store = match server_memory::Store::open(dir, rustix::process::geteuid().as_raw()) {
        Ok(store) => store,
        Err(server_memory::Untrusted::Unopenable(e)) if e.kind() == io::ErrorKind::NotFound => {
            return r.line(&format!(
                "  No such directory: the memory is off (install -d -m 1777 {}).",
                dir.display()
            ));
        }
        Err(e) => {
            return r.warn(&format!(
                "{} is not used: {e}; servers are tried in qmqpservers order",
                dir.display()
            ))
        }
    };
    let own = store.own_file();
    if let Ok(Some(kind)) = nullq_fs::entry_kind(&own) {
        let me = rustix::process::geteuid().as_raw();
        if let Err(e) = nullq_fs::open_planted(&own, Some(me)) {
            r.warn(&format!(
                "{} ({kind}) is not this user's file: {e}; what this user's client sees is not recorded",
                own.display()
            ))?;
        }
    }
    let now = server_memory::unix_now();
    let loaded = store.load(now, b.max);
    if loaded.scan_bound_hit {
        let n = server_memory::MAX_SCAN;
        r.warn(&format!("{} has more than {n} entries: only the first {n} were looked at, so some users' files may not count", dir.display()))?;
    }
    let memory = loaded.all;
    let mut any = false;
    for (server, rec) in memory.records() {
        any = true;
        let until = i64::try_from(rec.until).unwrap_or(i64::MAX);
        let seen = i64::try_from(rec.seen).unwrap_or(i64::MAX);
        r.line(&match (rec.failures, rec.remembered(now)) {
            (0, _) => format!("  {server}: answered K at {}.", calendar::qread_date(seen)),
            (n, true) => format!(
                "  {server}: {n} failure{} in a row, tried last until {} (in {} s).",
                if n == 1 { "" } else { "s" },
                calendar::qread_date(until),
                rec.until - now
            ),
            (n, false) => format!(
                "  {server}: {n} failure{} in a row, backoff over since {}.",
                if n == 1 { "" } else { "s" },
                calendar::qread_date(until)
            ),
        })?;
    }
    if !any {
        r.line("  No server is remembered.")?;
    }
    Ok(())
}
