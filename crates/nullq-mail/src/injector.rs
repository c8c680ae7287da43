//! qmail-inject's header rewriting and envelope building, without any I/O (qmail-inject(8),
//! qmail-header(5); a port of the logic of notqmail's `qmail-inject.c`).
//!
//! This module owns what qmail-inject does to a message between reading its header and writing
//! it out: the three address rules (no `@` → `@DEFAULTHOST`, a host without a dot →
//! `.DEFAULTDOMAIN`, a trailing `+` → `.PLUSDOMAIN`) applied to the envelope and every address
//! field, the site's [`RewriteRules`] after them, the removal of Bcc/Return-Path/Content-Length,
//! the generated Date, Message-ID, From and `Cc: recipient list not shown: ;` fields (or their
//! `Resent-` forms), Mail-Followup-To, the envelope sender (with qmail's VERP forms) and the
//! recipients found in the header. Reading control files, the environment, the input and
//! queueing belong to the client (`nullq-client`'s `inject`).
//!
//! Use: [`Injector::new`], then [`Injector::set_sender`] / [`Injector::add_recipient`] for the
//! command line, [`Injector::header_field`] for each field of [`crate::headerbody::read_header`],
//! [`Injector::finish_header`] for the text that precedes the body, and last
//! [`Injector::sender`] and [`Injector::recipients`] for the envelope.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::date;
use crate::hfield::{self, Field};
use crate::quote::{quote2, quote_need};
use crate::rewrite::RewriteRules;
use crate::token822::{self, Kind, Token};

/// qmail-inject's folding width for rewritten address fields.
pub const LINELEN: usize = 80;

/// The letters of `$QMAILINJECT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `c`: a generated From puts the full name in a comment, `From: bob@x (Bob)`.
    pub name_comment: bool,
    /// `s`: ignore (and drop) the Return-Path field.
    pub delete_sender: bool,
    /// `f`: drop the From field (a correct one is generated).
    pub delete_from: bool,
    /// `i`: drop the Message-ID field (a new one is generated).
    pub delete_message_id: bool,
    /// `r`: per-recipient VERP sender (`user-@host-@[]`).
    pub verp_recipient: bool,
    /// `m`: per-message VERP sender (`user-TIME.PID@host`).
    pub verp_message: bool,
}

impl Flags {
    /// Read `$QMAILINJECT`; unknown letters are ignored, as in qmail.
    pub fn parse(letters: &[u8]) -> Flags {
        let mut f = Flags::default();
        for &b in letters {
            match b {
                b'c' => f.name_comment = true,
                b's' => f.delete_sender = true,
                b'f' => f.delete_from = true,
                b'i' => f.delete_message_id = true,
                b'r' => f.verp_recipient = true,
                b'm' => f.verp_message = true,
                _ => {}
            }
        }
        f
    }
}

/// Everything qmail-inject's rewriting depends on, already read from control files and the
/// environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Added to addresses without `@` (control/defaulthost, `$QMAILDEFAULTHOST`).
    pub defaulthost: Vec<u8>,
    /// Added to hosts without a dot (control/defaultdomain, `$QMAILDEFAULTDOMAIN`).
    pub defaultdomain: Vec<u8>,
    /// Replaces a trailing `+` (control/plusdomain, `$QMAILPLUSDOMAIN`).
    pub plusdomain: Vec<u8>,
    /// Right-hand side of generated Message-IDs (control/idhost, `$QMAILIDHOST`).
    pub idhost: Vec<u8>,
    /// `$QMAILINJECT`.
    pub flags: Flags,
    /// The user of a generated From (`$QMAILUSER`, `$MAILUSER`, `$USER`, `$LOGNAME`,
    /// `anonymous`).
    pub mailuser: Vec<u8>,
    /// The host of a generated From (`$QMAILHOST`, `$MAILHOST`); `None`: the default host.
    pub mailhost: Option<Vec<u8>>,
    /// The user of a generated envelope sender (`$QMAILSUSER`, else [`Settings::mailuser`]).
    pub mailruser: Vec<u8>,
    /// The host of a generated envelope sender (`$QMAILSHOST`, else [`Settings::mailhost`]).
    pub mailrhost: Option<Vec<u8>>,
    /// The full name of a generated From (`$QMAILNAME`, `$MAILNAME`, `$NAME`).
    pub fullname: Option<Vec<u8>>,
    /// The mailing lists of `$QMAILMFTFILE`, when that file exists.
    pub mft: Option<Vec<Vec<u8>>>,
    /// The site's rules (control/rewrite), applied after qmail's.
    pub rules: RewriteRules,
    /// When qmail-inject started: the generated Date and Message-ID.
    pub time: SystemTime,
    /// The process id in the generated Message-ID (and the `m` VERP sender).
    pub pid: u32,
}

impl Settings {
    /// Settings with qmail's built-in defaults (as when neither `me` nor any other control file
    /// exists) for user `mailuser`, at `time` in process `pid`.
    pub fn new(mailuser: &[u8], time: SystemTime, pid: u32) -> Settings {
        Settings {
            defaulthost: b"defaulthost".to_vec(),
            defaultdomain: b"defaultdomain".to_vec(),
            plusdomain: b"plusdomain".to_vec(),
            idhost: b"idhost".to_vec(),
            flags: Flags::default(),
            mailuser: mailuser.to_vec(),
            mailhost: None,
            mailruser: mailuser.to_vec(),
            mailrhost: None,
            fullname: None,
            mft: None,
            rules: RewriteRules::default(),
            time,
            pid,
        }
    }
}

/// A permanent failure of qmail-inject (it exits 100). [`Error::message`] is qmail's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// qmail's `unable to parse this line:` followed by the line (a header field, with its
    /// newline, or a `-f` address or control value, without).
    ParseLine(Vec<u8>),
    /// `invalid header field: ` and the field.
    InvalidField(Vec<u8>),
    /// `unable to parse address: ` and a recipient argument.
    ParseAddress(Vec<u8>),
}

impl Error {
    /// What qmail-inject writes after `qmail-inject: fatal: `, newline included.
    pub fn message(&self) -> Vec<u8> {
        let (head, body, tail): (&[u8], &[u8], &[u8]) = match self {
            Error::ParseLine(l) => (b"unable to parse this line:\n", l, b""),
            Error::InvalidField(l) => (b"invalid header field: ", l, b""),
            Error::ParseAddress(a) => (b"unable to parse address: ", a, b"\n"),
        };
        [head, body, tail].concat()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(String::from_utf8_lossy(&self.message()).trim_end())
    }
}

impl std::error::Error for Error {}

/// Which of qmail-inject's `rw*` callbacks an address field uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rw {
    /// Return-Path: rewrite, and take the first address seen as the envelope sender.
    Return,
    /// From, Sender, Reply-To, ...: rewrite only.
    Sender,
    /// To, Cc: rewrite; header recipients; Mail-Followup-To candidates.
    ToCc,
    /// Bcc, Apparently-To: rewrite; header recipients.
    Hr,
    /// Resent-To, -Cc, -Bcc: rewrite; resent recipients.
    Hrr,
}

/// The state of one message going through qmail-inject.
#[derive(Debug)]
pub struct Injector {
    s: Settings,
    defaulthost: Vec<Token>,
    defaultdomain: Vec<Token>,
    plusdomain: Vec<Token>,
    sender: Option<Vec<u8>>,
    seen: Vec<Field>,
    saved: Vec<Vec<u8>>,
    hr: Vec<Vec<u8>>,
    tocc: Vec<Vec<u8>>,
    hrr: Vec<Vec<u8>>,
    recips: Vec<Vec<u8>>,
    resent: bool,
}

/// Parse `prefix` + `value` (e.g. `@` + defaulthost) as qmail's `getcontrols` does.
fn control_tokens(prefix: u8, value: &[u8]) -> Result<Vec<Token>, Error> {
    let mut sa = vec![prefix];
    sa.extend_from_slice(value);
    token822::parse(&sa).map_err(|_| Error::ParseLine(sa))
}

/// Put `extra` (in normal order) in front of reversed address `addr`, reversed: in normal order,
/// it goes at the end.
fn append_reversed(addr: &mut Vec<Token>, extra: &[Token]) {
    let mut v: Vec<Token> = extra.iter().rev().cloned().collect();
    v.append(addr);
    *addr = v;
}

impl Injector {
    /// Start a message. Fails as qmail does when a control value does not tokenize.
    pub fn new(settings: Settings) -> Result<Injector, Error> {
        Ok(Injector {
            defaultdomain: control_tokens(b'.', &settings.defaultdomain)?,
            defaulthost: control_tokens(b'@', &settings.defaulthost)?,
            plusdomain: control_tokens(b'.', &settings.plusdomain)?,
            s: settings,
            sender: None,
            seen: Vec::new(),
            saved: Vec::new(),
            hr: Vec::new(),
            tocc: Vec::new(),
            hrr: Vec::new(),
            recips: Vec::new(),
            resent: false,
        })
    }

    /// The settings this message is rewritten with.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// qmail's `rwgeneric` on a reversed address, then the site's rules.
    fn rewrite_reversed(&self, addr: &mut Vec<Token>) {
        self.qmail_rules(addr);
        if self.s.rules.is_empty() || addr.is_empty() {
            return;
        }
        let mut normal = addr.clone();
        normal.reverse();
        let Some(new) = self.s.rules.rewrite_bytes(&token822::unquote(&normal)) else {
            return;
        };
        // A replacement that does not tokenize (a `*` match full of specials) is not applied:
        // the address stays as qmail's rules left it.
        if let Ok(mut toks) = token822::parse_envelope_address(&new) {
            toks.reverse();
            *addr = toks;
        }
    }

    /// qmail's `rwgeneric` (with `rwroute`, `rwextradot`, `rwextraat`, `rwnoat`, `rwplus`,
    /// `rwnodot`), on an address whose tokens are in reverse order.
    fn qmail_rules(&self, addr: &mut Vec<Token>) {
        if addr.is_empty() {
            return; // don't rewrite <>
        }
        if addr.len() >= 2
            && addr[1].kind == Kind::At
            && addr[0].kind == Kind::Literal
            && addr[0].text.is_empty()
        {
            return; // don't rewrite <foo@[]>
        }
        // rwroute: drop a source route, `@a,@b:` (the end of the reversed list).
        if addr.last().is_some_and(|t| t.kind == Kind::At) {
            while let Some(t) = addr.pop() {
                if t.kind == Kind::Colon {
                    break;
                }
            }
        }
        if addr.is_empty() {
            return; // <@foo:> -> <>
        }
        if addr[0].kind == Kind::Dot {
            addr.remove(0); // a trailing dot
        }
        if addr.is_empty() {
            return; // <.> -> <>
        }
        if addr[0].kind == Kind::At {
            addr.remove(0); // a trailing @
        }
        if addr.is_empty() {
            return; // <@> -> <>
        }
        // rwnoat
        if !addr.iter().any(|t| t.kind == Kind::At) {
            append_reversed(addr, &self.defaulthost);
        }
        // rwplus
        if addr[0].kind == Kind::Atom && addr[0].text.last() == Some(&b'+') {
            addr[0].text.pop();
            append_reversed(addr, &self.plusdomain);
        }
        // rwnodot: the domain (up to the @) has no dot and is not a literal.
        for t in addr.iter() {
            match t.kind {
                Kind::Dot => return,
                Kind::At => break,
                _ => {}
            }
        }
        for t in addr.iter() {
            match t.kind {
                Kind::Literal => return,
                Kind::At => break,
                _ => {}
            }
        }
        append_reversed(addr, &self.defaultdomain);
    }

    /// The envelope form of a reversed address.
    fn envelope_form(addr: &[Token]) -> Vec<u8> {
        let mut normal = addr.to_vec();
        normal.reverse();
        token822::unquote(&normal)
    }

    fn callback(&mut self, rw: Rw, addr: &mut Vec<Token>) {
        self.rewrite_reversed(addr);
        match rw {
            Rw::Return => {
                if self.sender.is_none() {
                    let mut sender = Self::envelope_form(addr);
                    if self.s.flags.verp_recipient {
                        sender.extend_from_slice(b"-@[]");
                    }
                    self.sender = Some(sender);
                }
            }
            Rw::Sender => {}
            Rw::Hr => self.hr.push(Self::envelope_form(addr)),
            Rw::Hrr => self.hrr.push(Self::envelope_form(addr)),
            Rw::ToCc => {
                let a = Self::envelope_form(addr);
                self.hr.push(a.clone());
                self.tocc.push(a);
            }
        }
    }

    /// Rewrite the address fields of `field` (a whole field, name to newline) with callback
    /// `rw`; the field as qmail re-emits it, or `None` when it does not parse.
    fn rewrite_field(&mut self, field: &[u8], rw: Rw) -> Option<Vec<u8>> {
        let toks = token822::parse(field).ok()?;
        let out = token822::addrlist(&toks, |a| self.callback(rw, a)).ok()?;
        Some(token822::unparse(&out, LINELEN))
    }

    /// `-f SENDER`: the envelope sender, rewritten like any address (qmail's `case 'f'`).
    pub fn set_sender(&mut self, raw: &[u8]) -> Result<(), Error> {
        let quoted = quote2(raw);
        let mut toks = token822::parse(&quoted).map_err(|_| Error::ParseLine(quoted.clone()))?;
        toks.reverse();
        self.rewrite_reversed(&mut toks);
        toks.reverse();
        self.sender = Some(token822::unquote(&toks));
        Ok(())
    }

    /// A recipient from the command line (qmail's `dorecip`).
    pub fn add_recipient(&mut self, raw: &[u8]) -> Result<(), Error> {
        let mut toks =
            token822::parse(&quote2(raw)).map_err(|_| Error::ParseAddress(raw.to_vec()))?;
        toks.reverse();
        self.rewrite_reversed(&mut toks);
        self.recips.push(Self::envelope_form(&toks));
        Ok(())
    }

    /// One header field, continuation lines and final newline included (qmail's
    /// `doheaderfield`): dropped, rewritten or kept as is.
    pub fn header_field(&mut self, field: Vec<u8>) -> Result<(), Error> {
        let kind = hfield::known(&field);
        let f = self.s.flags;
        if (f.delete_from && kind == Some(Field::From))
            || (f.delete_message_id && kind == Some(Field::MessageId))
            || (f.delete_sender && kind == Some(Field::ReturnPath))
        {
            return Ok(());
        }
        match kind {
            Some(k) if !self.seen.contains(&k) => self.seen.push(k),
            Some(_) => {}
            None if !hfield::valid(&field) => return Err(Error::InvalidField(field)),
            None => {}
        }
        // Recipient fields that do not parse are kept as they are (notqmail); a bad From,
        // Sender, Return-Path, ... is fatal.
        let (rw, may_fail) = match kind {
            Some(Field::To | Field::Cc) => (Some(Rw::ToCc), true),
            Some(Field::Bcc | Field::ApparentlyTo) => (Some(Rw::Hr), true),
            Some(Field::ResentTo | Field::ResentCc | Field::ResentBcc) => (Some(Rw::Hrr), true),
            Some(Field::ReturnPath) => (Some(Rw::Return), false),
            Some(
                Field::Sender
                | Field::From
                | Field::ReplyTo
                | Field::ReturnReceiptTo
                | Field::ErrorsTo
                | Field::ResentSender
                | Field::ResentFrom
                | Field::ResentReplyTo,
            ) => (Some(Rw::Sender), false),
            _ => (None, false),
        };
        let field = match rw {
            None => field,
            Some(rw) => match self.rewrite_field(&field, rw) {
                Some(new) => new,
                None if may_fail => field,
                None => return Err(Error::ParseLine(field)),
            },
        };
        if matches!(
            kind,
            Some(Field::Bcc | Field::ResentBcc | Field::ReturnPath | Field::ContentLength)
        ) {
            return Ok(());
        }
        self.saved.push(field);
        Ok(())
    }

    fn seen(&self, f: Field) -> bool {
        self.seen.contains(&f)
    }

    /// Build a field from tokens, re-read it and rewrite its address as qmail does for the
    /// generated From and Return-Path (`defaultfrommake`, `dodefaultreturnpath`).
    fn generated(&mut self, toks: &[Token], rw: Rw) -> Result<Vec<u8>, Error> {
        let text = token822::unparse(toks, LINELEN);
        let parsed = token822::parse(&text).map_err(|_| Error::ParseLine(text.clone()))?;
        let out = token822::addrlist(&parsed, |a| self.callback(rw, a))
            .map_err(|_| Error::ParseLine(text.clone()))?;
        Ok(token822::unparse(&out, LINELEN))
    }

    /// qmail's `defaultfrommake`: `From: "Full Name" <user@host>\n` (or the name in a comment).
    fn default_from(&mut self) -> Result<Vec<u8>, Error> {
        let mut t = vec![Token::new(Kind::Atom, "From"), Token::special(Kind::Colon)];
        let name = self.s.fullname.clone();
        let comment = self.s.flags.name_comment;
        if let (Some(name), false) = (&name, comment) {
            t.push(Token::new(Kind::Quote, name.clone()));
            t.push(Token::special(Kind::Left));
        }
        let user_kind = if quote_need(&self.s.mailuser) {
            Kind::Quote
        } else {
            Kind::Atom
        };
        t.push(Token::new(user_kind, self.s.mailuser.clone()));
        if let Some(host) = &self.s.mailhost {
            t.push(Token::special(Kind::At));
            t.push(Token::new(Kind::Atom, host.clone()));
        }
        if let Some(name) = name {
            if comment {
                t.push(Token::new(Kind::Comment, name));
            } else {
                t.push(Token::special(Kind::Right));
            }
        }
        self.generated(&t, Rw::Sender)
    }

    /// qmail's `dodefaultreturnpath`: the envelope sender when neither `-f` nor a Return-Path
    /// field gave one: `$QMAILSUSER@$QMAILSHOST`, with the VERP additions.
    fn default_return_path(&mut self) -> Result<(), Error> {
        let mut user = self.s.mailruser.clone();
        if self.s.flags.verp_message {
            let secs = self
                .s
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            user.extend_from_slice(format!("-{secs}.{}", self.s.pid).as_bytes());
        }
        if self.s.flags.verp_recipient {
            user.push(b'-');
        }
        let mut t = vec![
            Token::new(Kind::Atom, "Return-Path"),
            Token::special(Kind::Colon),
            Token::new(Kind::Quote, user),
        ];
        if let Some(host) = &self.s.mailrhost {
            t.push(Token::special(Kind::At));
            t.push(Token::new(Kind::Atom, host.clone()));
        }
        self.generated(&t, Rw::Return).map(|_| ())
    }

    /// qmail's `finishmft`.
    fn mail_followup_to(&self, out: &mut Vec<u8>) {
        let Some(lists) = &self.s.mft else { return };
        if self.seen(Field::MailFollowupTo) {
            return;
        }
        let to_list = self
            .tocc
            .iter()
            .any(|a| lists.iter().any(|l| l.eq_ignore_ascii_case(a)));
        if !to_list {
            return;
        }
        out.extend_from_slice(b"Mail-Followup-To: ");
        let addrs: Vec<Vec<u8>> = self.tocc.iter().rev().map(|a| quote2(a)).collect();
        out.extend_from_slice(&addrs.join(&b",\n  "[..]));
        out.push(b'\n');
    }

    /// The end of the header (qmail's `finishheader`): returns what goes before the body, in
    /// order: with `show_return_path` (qmail-inject -n) a `Return-Path: <sender>` line, then the
    /// generated fields, then the kept fields of the message.
    pub fn finish_header(&mut self, show_return_path: bool) -> Result<Vec<u8>, Error> {
        self.resent = self.seen.iter().any(|f| f.is_resent());
        if self.sender.is_none() {
            self.default_return_path()?;
        }
        let mut out = Vec::new();
        if show_return_path {
            out.extend_from_slice(b"Return-Path: <");
            out.extend_from_slice(&quote2(self.sender.as_deref().unwrap_or_default()));
            out.extend_from_slice(b">\n");
        }
        let (prefix, date, msgid, from, to, cc): (&[u8], _, _, _, _, _) = if self.resent {
            (
                b"Resent-",
                Field::ResentDate,
                Field::ResentMessageId,
                Field::ResentFrom,
                Field::ResentTo,
                Field::ResentCc,
            )
        } else {
            (
                b"",
                Field::Date,
                Field::MessageId,
                Field::From,
                Field::To,
                Field::Cc,
            )
        };
        if !self.seen(date) {
            out.extend_from_slice(prefix);
            out.extend_from_slice(date::date_field(self.s.time).as_bytes());
        }
        if !self.seen(msgid) {
            out.extend_from_slice(prefix);
            out.extend_from_slice(&date::message_id_field(
                self.s.time,
                self.s.pid,
                &self.s.idhost,
            ));
        }
        if !self.seen(from) {
            let f = self.default_from()?;
            out.extend_from_slice(prefix);
            out.extend_from_slice(&f);
        }
        if !self.seen(to) && !self.seen(cc) {
            out.extend_from_slice(prefix);
            out.extend_from_slice(b"Cc: recipient list not shown: ;\n");
        }
        if !self.resent {
            self.mail_followup_to(&mut out);
        }
        for f in &self.saved {
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    /// The envelope sender (set by [`Injector::set_sender`], a Return-Path field, or
    /// [`Injector::finish_header`]).
    pub fn sender(&self) -> Option<&[u8]> {
        self.sender.as_deref()
    }

    /// Was any `Resent-` field seen (known after [`Injector::finish_header`])?
    pub fn is_resent(&self) -> bool {
        self.resent
    }

    /// The envelope recipients in qmail's order: the command line's, then, with
    /// `from_header`, the Resent-To/-Cc/-Bcc addresses of a resent message or else the
    /// To/Cc/Bcc/Apparently-To addresses (each field's addresses right to left, as qmail
    /// collects them).
    pub fn recipients(&self, from_header: bool) -> Vec<Vec<u8>> {
        let mut r = self.recips.clone();
        if from_header {
            r.extend(
                if self.resent { &self.hrr } else { &self.hr }
                    .iter()
                    .cloned(),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> Settings {
        let mut s = Settings::new(
            b"jason",
            UNIX_EPOCH + Duration::from_secs(1_053_567_702),
            281_988,
        );
        s.defaulthost = b"example.net".to_vec();
        s.defaultdomain = b"host1.example.net".to_vec();
        s.plusdomain = b"host1.example.net".to_vec();
        s.idhost = b"host1.example.net".to_vec();
        s
    }

    fn rewrite_one(addr: &str) -> String {
        let mut i = Injector::new(settings()).unwrap();
        i.add_recipient(addr.as_bytes()).unwrap();
        String::from_utf8_lossy(&i.recipients(false)[0]).into_owned()
    }

    #[test]
    fn address_rules() {
        assert_eq!(rewrite_one("bob"), "bob@example.net");
        assert_eq!(rewrite_one("bob@host2"), "bob@host2.host1.example.net");
        assert_eq!(rewrite_one("bob@host2+"), "bob@host2.host1.example.net");
        assert_eq!(rewrite_one("bob@x.org"), "bob@x.org");
        assert_eq!(rewrite_one("bob@[1.2.3.4]"), "bob@[1.2.3.4]");
        assert_eq!(rewrite_one("bob@x.org."), "bob@x.org");
        // On the command line the part before the last @ is a local part, quoted as needed.
        assert_eq!(rewrite_one("@a,@b:bob@x.org"), "@a,@b:bob@x.org");
        assert_eq!(rewrite_one("bob@[]"), "bob@[]");
        assert_eq!(rewrite_one(""), "");
    }

    #[test]
    fn try_it() {
        let mut i = Injector::new(settings()).unwrap();
        i.header_field(b"To: bob\n".to_vec()).unwrap();
        i.header_field(b"Subject: hi\n".to_vec()).unwrap();
        let out = i.finish_header(true).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Return-Path: <jason@example.net>\n\
             Date: 22 May 2003 01:41:42 -0000\n\
             Message-ID: <20030522014142.281988.qmail@host1.example.net>\n\
             From: jason@example.net\n\
             To: bob@example.net\n\
             Subject: hi\n"
        );
        assert_eq!(i.recipients(true), vec![b"bob@example.net".to_vec()]);
        assert_eq!(i.sender(), Some(&b"jason@example.net"[..]));
    }
}
