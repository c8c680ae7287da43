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
use std::time::SystemTime;

use crate::control::{ControlDir, InjectControls, MeSource, Setting, Source, MAILNAME};
use nullq_mail::injector::{Injector, Settings};

use crate::qmail_inject::{self, Env, InjectOptions};

mod report;
mod servers;

pub use report::Summary;
use report::{safe, Report};
pub use servers::CHECK_TIMEOUT;
use servers::{show_memory, show_transport};

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
