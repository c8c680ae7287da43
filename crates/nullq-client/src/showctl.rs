//! `qmail-showctl`: what the null client's configuration is and what it will do
//! (qmail-showctl(8), for the files a mini-qmail host has).
//!
//! This module owns the report: the home directory, then each control file the client reads
//! (`me`, `defaulthost`, `defaultdomain`, `plusdomain`, `idhost`, `qmqpservers`,
//! `tlscafile`, `tlsclientcert`, `tlsclientkey`, `timeoutconnect`, `timeoutremote`, `fallbackqueue`,
//! `rewrite`) with its value or qmail's
//! default and what it means, in qmail-showctl's `name: (Default.) Text value.` style, then any
//! file it does not know. Beyond qmail-showctl it shows what the address rules actually make of
//! `root`, `root@host` and `root@host+` with the current files and environment, and warns about
//! the mistakes that produce broken addresses (a value ending in a dot, a bare name without a
//! dot, an empty file: the seed's `From: "Jason Mader" <jason@example.>`), about missing or
//! unreadable `qmqpservers` lines, and, with `--check`, about servers it cannot connect to.
//! It also shows the memory of failed servers (`qmqpstate`, `qmqpbackoff`, `qmqpspread`,
//! [`crate::server_memory`]): each server remembered, its failures in a row and until when it
//! is tried last, and why the memory is not used when its directory is not trustworthy.
//!
//! Exit status: 0; with `--check`, 111 when there is a warning or an unreachable server (so it
//! can gate an installation script); 111 when the home directory cannot be read.

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use crate::control::{
    self, ControlDir, InjectControls, MeSource, ServerAddr, Setting, Source, MAILNAME,
};
use nullq_mail::injector::{Injector, Settings};

use crate::calendar;
use crate::qmail_inject::{self, Env, InjectOptions};
use crate::qmqpc;
use crate::server_memory;
use crate::tls;
use crate::transport;

/// How long `--check` waits for each server's TCP connection (qmail-qmqpc's connect timeout).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The control files the client reads; any other file in `control/` is reported as unknown.
pub const KNOWN_FILES: [&str; 18] = [
    "me",
    "defaulthost",
    "defaultdomain",
    "plusdomain",
    "idhost",
    "qmqpservers",
    "timeoutconnect",
    "timeoutremote",
    "fallbackqueue",
    "rewrite",
    "qmqpstate",
    "qmqpbackoff",
    "qmqpspread",
    "tlscafile",
    "tlsclientcert",
    "tlsclientkey",
    "helohost",
    "smtpauth",
];

/// What a report found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Warnings printed.
    pub warnings: usize,
    /// Servers `--check` could not connect to.
    pub unreachable: usize,
}

struct Report<'a, W: Write> {
    out: &'a mut W,
    summary: Summary,
}

impl<W: Write> Report<'_, W> {
    fn line(&mut self, s: &str) -> io::Result<()> {
        writeln!(self.out, "{s}")
    }

    fn warn(&mut self, s: &str) -> io::Result<()> {
        self.summary.warnings += 1;
        writeln!(self.out, "  WARNING: {s}")
    }
}

/// qmail-showctl's `safeput`: non-printable bytes shown as `?`.
fn safe(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (32..=126).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Problems of a value that ends up in the domain part of addresses or Message-IDs.
fn domain_problems(value: &[u8]) -> Vec<String> {
    let mut p = Vec::new();
    if value.is_empty() {
        p.push("it is empty".to_owned());
        return p;
    }
    if value.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        p.push("it starts with a blank (qmail keeps leading blanks)".to_owned());
    }
    if value.ends_with(b".") {
        p.push("it ends in a dot".to_owned());
    }
    if value.starts_with(b".") || value.windows(2).any(|w| w == b"..") {
        p.push("it has an empty label (a leading dot or two dots in a row)".to_owned());
    }
    if !value.contains(&b'.') {
        p.push("it is a bare name without a dot".to_owned());
    }
    p
}

/// Problems of a rewritten address's domain.
fn address_problems(addr: &[u8]) -> Vec<String> {
    let Some(at) = addr.iter().rposition(|&b| b == b'@') else {
        return vec!["it has no domain".to_owned()];
    };
    let domain = &addr[at + 1..];
    let mut p = Vec::new();
    if domain.starts_with(b"[") {
        return p;
    }
    if domain.is_empty() || domain.ends_with(b".") {
        p.push("its domain ends in a dot".to_owned());
    } else if !domain.contains(&b'.') {
        p.push("its domain is a bare name without a dot".to_owned());
    }
    if domain.starts_with(b".") || domain.windows(2).any(|w| w == b"..") {
        p.push("its domain has an empty label".to_owned());
    }
    for word in ["defaulthost", "defaultdomain", "plusdomain"] {
        if domain
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
        {
            p.push(format!("it holds qmail's placeholder `{word}` (the control file is missing and so is `me`)"));
        }
    }
    p
}

/// One single-value file, as qmail-showctl's `do_str` shows it (`name: (Default.) Pre value.`),
/// then what it means, any environment override and warnings about the value in effect.
fn show_setting<W: Write>(
    r: &mut Report<'_, W>,
    c: &InjectControls,
    name: &str,
    setting: &Setting,
    file: Option<Vec<u8>>,
    pre: &str,
    meaning: &str,
) -> io::Result<()> {
    r.line("")?;
    match file {
        Some(v) => r.line(&format!("{name}: {pre}{}.", safe(&v)))?,
        None => {
            let default = c.me.clone().unwrap_or_else(|| name.as_bytes().to_vec());
            r.line(&format!("{name}: (Default.) {pre}{}.", safe(&default)))?
        }
    }
    r.line(&format!("  {meaning}"))?;
    match setting.source {
        Source::Env(var) => r.line(&format!(
            "  ${var} overrides it in this environment: {}.",
            safe(&setting.value)
        ))?,
        Source::Builtin => r.line(&format!(
            "  (No such file and no `me`: qmail's placeholder `{name}` is used.)"
        ))?,
        Source::File | Source::Me => {}
    }
    for p in domain_problems(&setting.value) {
        r.warn(&format!("the {name} value `{}`: {p}", safe(&setting.value)))?;
    }
    Ok(())
}

/// Write the report for the home directory of `opts` to `out`; `check` also connects to each
/// server. Returns what was found.
pub fn report<W: Write>(opts: &InjectOptions, check: bool, out: &mut W) -> io::Result<Summary> {
    let control = &opts.control;
    let mut r = Report {
        out,
        summary: Summary::default(),
    };
    r.line(&format!(
        "qmail home directory: {}.",
        control.home().display()
    ))?;
    r.line("nullq null client: qmail-inject rewrites each message, qmail-qmqpc sends it by QMQP.")?;
    if !control.home().is_dir() {
        r.line(&format!(
            "Oops! Unable to chdir to {}.",
            control.home().display()
        ))?;
        r.summary.warnings += 1;
        return Ok(r.summary);
    }
    if !control.path("").is_dir() {
        r.line("Oops! Unable to chdir to control.")?;
        r.summary.warnings += 1;
        return Ok(r.summary);
    }
    let lookup = |name: &str| opts.env.get(name).map(<[u8]>::to_vec);
    let controls: InjectControls = match control.inject_controls(&lookup) {
        Ok(c) => c,
        Err(e) => {
            r.line(&format!("Oops! Trouble reading control files: {e}."))?;
            r.summary.warnings += 1;
            return Ok(r.summary);
        }
    };
    let file = |name: &str| control.readline(name).ok().flatten();

    r.line("")?;
    match (&controls.me, controls.me_source) {
        (Some(me), Some(MeSource::Mailname)) => r.line(&format!(
            "me: (Default: {MAILNAME}.) My name is {}.",
            safe(me)
        ))?,
        (Some(me), _) => r.line(&format!("me: My name is {}.", safe(me)))?,
        (None, _) => r.line("me: (Default.) My name is undefined! Uh-oh.")?,
    }
    r.line("  The default of defaulthost, defaultdomain, plusdomain and idhost.")?;
    match &controls.me {
        Some(me) => {
            for p in domain_problems(me) {
                r.warn(&format!("the me value `{}`: {p}", safe(me)))?;
            }
        }
        None => r.warn(&format!(
            "no control/me and no {MAILNAME}: the other files fall back to qmail's placeholder words"
        ))?,
    }
    show_setting(
        &mut r,
        &controls,
        "defaulthost",
        &controls.defaulthost,
        file("defaulthost"),
        "Default host name is ",
        "Added to an address without @: `root` becomes root@DEFAULTHOST (also the envelope sender's host).",
    )?;
    show_setting(
        &mut r,
        &controls,
        "defaultdomain",
        &controls.defaultdomain,
        file("defaultdomain"),
        "Default domain name is ",
        "Added to a host without a dot: `root@host1` becomes root@host1.DEFAULTDOMAIN.",
    )?;
    show_setting(
        &mut r,
        &controls,
        "plusdomain",
        &controls.plusdomain,
        file("plusdomain"),
        "Plus domain name is ",
        "Replaces a trailing +: `root@host1+` becomes root@host1.PLUSDOMAIN.",
    )?;
    show_setting(
        &mut r,
        &controls,
        "idhost",
        &controls.idhost,
        file("idhost"),
        "Message-ID host name is ",
        "The right-hand side of generated Message-IDs: <STAMP.PID.qmail@IDHOST>.",
    )?;

    show_rewrite(&mut r, control)?;
    show_examples(&mut r, opts)?;
    show_transport(&mut r, control, check)?;
    show_memory(&mut r, control)?;
    show_unknown(&mut r, control)?;

    r.line("")?;
    r.line(&match (r.summary.warnings, check) {
        (0, false) => "No warnings.".to_owned(),
        (0, true) if r.summary.unreachable == 0 => "No warnings; every server answered.".to_owned(),
        (n, _) => format!("{n} warning{}.", if n == 1 { "" } else { "s" }),
    })?;
    Ok(r.summary)
}

fn show_rewrite<W: Write>(r: &mut Report<'_, W>, control: &ControlDir) -> io::Result<()> {
    r.line("")?;
    match qmail_inject::site_rules(control) {
        Ok(rules) if rules.is_empty() && !control.path("rewrite").exists() => {
            r.line("rewrite: (Default.) No site rewriting.")?;
        }
        Ok(rules) => {
            r.line(&format!(
                "rewrite: {} rule{}.",
                rules.len(),
                if rules.len() == 1 { "" } else { "s" }
            ))?;
        }
        Err(e) => {
            r.line("rewrite: Oops! Trouble reading this file.")?;
            let msg = String::from_utf8_lossy(&e.message()).trim_end().to_owned();
            r.warn(&format!(
                "{msg}; qmail-inject refuses every message (exit 111) until it is fixed"
            ))?;
        }
    }
    r.line(
        "  CommuniGate Pro Router records (`<*@host1.example.net> = *@example.net`), applied after",
    )?;
    r.line("  the rules above to the envelope and to every address field; replaces MASQUERADE_AS.")
}

/// Run the real rules over sample addresses and show (and check) what comes out.
fn show_examples<W: Write>(r: &mut Report<'_, W>, opts: &InjectOptions) -> io::Result<()> {
    // A broken rewrite file has been reported above; show what qmail's rules do without it.
    let rules = qmail_inject::site_rules(&opts.control).unwrap_or_default();
    let mut settings: Settings = match qmail_inject::address_settings(opts) {
        Ok(s) => s,
        Err(e) => {
            r.line("")?;
            let msg = String::from_utf8_lossy(&e.message()).trim_end().to_owned();
            return r.warn(&format!("qmail-inject cannot start: {msg}"));
        }
    };
    settings.time = SystemTime::now();
    settings.rules = rules;
    r.line("")?;
    r.line("What qmail-inject makes of addresses here (this environment included):")?;
    let set: Vec<String> = qmail_inject::ENV_VARS
        .iter()
        .filter(|v| !matches!(**v, "NULLQ_HOME" | "TZ" | "HOME" | "QMAILQUEUE"))
        .filter_map(|v| opts.env.get(v).map(|val| format!("{v}={}", safe(val))))
        .collect();
    if !set.is_empty() {
        r.line(&format!("  environment: {}", set.join(" ")))?;
    }
    let samples: [&[u8]; 3] = [b"root", b"root@host1", b"root@host1+"];
    for sample in samples {
        let result = Injector::new(settings.clone()).and_then(|mut i| {
            i.add_recipient(sample)?;
            Ok(i.recipients(false).into_iter().next().unwrap_or_default())
        });
        match result {
            Ok(addr) => {
                r.line(&format!("  {:<12} -> {}", safe(sample), safe(&addr)))?;
                for p in address_problems(&addr) {
                    r.warn(&format!(
                        "`{}` becomes `{}`: {p}",
                        safe(sample),
                        safe(&addr)
                    ))?;
                }
            }
            Err(e) => r.warn(&format!("`{}`: {e}", safe(sample)))?,
        }
    }
    // The sender and From of a message with none: what cron's mail looks like.
    match Injector::new(settings.clone()).and_then(|mut i| {
        let top = i.finish_header(false)?;
        Ok((i.sender().unwrap_or_default().to_vec(), top))
    }) {
        Ok((sender, top)) => {
            r.line(&format!("  envelope sender -> {}", safe(&sender)))?;
            for p in address_problems(&sender) {
                r.warn(&format!(
                    "the envelope sender `{}`: {p}; bounces cannot come back",
                    safe(&sender)
                ))?;
            }
            for line in top.split(|&b| b == b'\n') {
                if line.starts_with(b"From:") || line.starts_with(b"Message-ID:") {
                    r.line(&format!("  {}", safe(line)))?;
                }
            }
        }
        Err(e) => r.warn(&format!("no From can be generated: {e}"))?,
    }
    Ok(())
}

/// issue 13, part 3: what the `smtp://` lines use, when there are any.
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
    let ca = match crate::smtp_relay::conn::ca_bundle(&settings.ca_file) {
        Ok((path, _)) => format!("CA certificates for starttls=required: {}", path.display()),
        Err(e) => format!("CA certificates for starttls=required: unusable: {}", e.0),
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

fn show_transport<W: Write>(
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
                        // issue 13, part 3: an `smtp://` line is an SMTP relay.
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
fn show_memory<W: Write>(r: &mut Report<'_, W>, control: &ControlDir) -> io::Result<()> {
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

fn show_unknown<W: Write>(r: &mut Report<'_, W>, control: &ControlDir) -> io::Result<()> {
    let Ok(dir) = std::fs::read_dir(control.path("")) else {
        return Ok(());
    };
    let mut names: Vec<String> = dir
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !KNOWN_FILES.contains(&n.as_str()))
        .collect();
    names.sort();
    for n in names {
        r.line("")?;
        r.line(&format!("{n}: I have no idea what this file does."))?;
    }
    Ok(())
}

/// `qmail-showctl [--check]`.
pub fn main(args: &[OsString]) -> i32 {
    let mut check = false;
    for a in args.iter().skip(1) {
        match a.to_str() {
            Some("--check" | "-c") => check = true,
            _ => {
                eprintln!("usage: qmail-showctl [--check]");
                return 100;
            }
        }
    }
    let opts = InjectOptions::new(Env::from_process());
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = report(&opts, check, &mut out);
    let _ = out.flush();
    match result {
        Ok(_) if !opts.control.home().is_dir() || !opts.control.path("").is_dir() => 111,
        Ok(s) if check && (s.warnings > 0 || s.unreachable > 0) => 111,
        Ok(_) => 0,
        Err(_) => 111,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems() {
        assert!(domain_problems(b"example.net").is_empty());
        assert_eq!(domain_problems(b"example.").len(), 1);
        assert_eq!(domain_problems(b"example").len(), 1);
        assert_eq!(domain_problems(b"").len(), 1);
        assert!(address_problems(b"jason@example.net").is_empty());
        assert!(address_problems(b"jason@[1.2.3.4]").is_empty());
        assert!(!address_problems(b"jason@example.").is_empty());
        assert!(!address_problems(b"jason@example").is_empty());
        assert!(!address_problems(b"root@host1.defaultdomain").is_empty());
    }
}
