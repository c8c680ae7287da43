//! `sendmail` (also called as `mailq` and `newaliases`): qmail's compatibility wrapper.
//!
//! This module owns the command line every Unix program uses to send mail: it maps sendmail's
//! flags onto qmail-inject's (`-t` → `-H`, else `-a`; `-f`/`-r` → `-f`; `-F` → `$MAILNAME`), accepts
//! and ignores the flags that make no sense for a null client, and runs qmail-inject *in this
//! process* (no fork, no exec; the environment changes go to qmail-inject's snapshot of it). `-bp` and the name `mailq` list the fallback queue; `-bs` speaks
//! SMTP on stdin/stdout ([`crate::smtp_stdio`]); `newaliases` and `-bi` succeed and do nothing: a null
//! client has no aliases, and Debian's maintainer scripts call newaliases (nullmailer and
//! msmtp-mta make it the same silent no-op; qmail's refusal with 100 broke them).
//!
//! The flags are one table, [`FLAGS`]: letter, whether it takes an argument, what it does, and
//! the text of the man page; the parser is qmail's getopt (`subgetopt.c`): options cluster
//! (`-oem`, `-fbob`), an argument may follow in the next word (`-f bob`), `--` ends the options,
//! and so does the first word that does not start with `-` (a lone `-` is an argument).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::control::ControlDir;

use crate::calendar;
use crate::fallback::FallbackQueue;
use crate::qmail_inject;
use crate::qmqpc::Config;

/// qmail's usage line, printed on stderr with exit 100 for any option it does not know.
pub const USAGE: &str =
    "sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]";

/// What a flag does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accepted and ignored (its argument too, if it takes one).
    Ignore,
    /// `-t`: recipients from the header as well as the arguments (qmail-inject `-H`).
    HeaderRecipients,
    /// `-f SENDER`, `-r SENDER`: the envelope sender.
    Sender,
    /// `-F NAME`: the full name of a generated From field.
    FullName,
    /// `-b MODE`: `-bm` send (the default), `-bp` list the queue, `-bs` SMTP, `-bi` rebuild the
    /// aliases (nothing to do); anything else is a usage error.
    Mode,
    /// `-E`, `-J` (Sony NEWS-OS): skip the rest of this word, an optional argument.
    SkipRest,
}

/// One sendmail flag: its letter, whether it takes an argument, and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The option letter.
    pub letter: u8,
    /// Whether it takes an argument (`-fbob` or `-f bob`).
    pub takes_arg: bool,
    /// What it does.
    pub action: Action,
    /// One line for the man page and `--help`.
    pub doc: &'static str,
}

/// Every flag sendmail accepts. qmail's getopt string is `vimte:f:p:o:B:F:EJxb:`; nullq adds
/// `-r` (the older spelling of `-f`, used by mailx and others) and `-N` (Postfix's DSN flag).
pub const FLAGS: &[Flag] = &[
    Flag {
        letter: b't',
        takes_arg: false,
        action: Action::HeaderRecipients,
        doc: "recipients from the To, Cc, Bcc (or Resent-) fields as well as the arguments",
    },
    Flag {
        letter: b'f',
        takes_arg: true,
        action: Action::Sender,
        doc: "envelope sender (also sets QMAILUSER and QMAILHOST for the From field)",
    },
    Flag {
        letter: b'r',
        takes_arg: true,
        action: Action::Sender,
        doc: "the same as -f",
    },
    Flag {
        letter: b'F',
        takes_arg: true,
        action: Action::FullName,
        doc: "full name of the sender, for a generated From field (MAILNAME)",
    },
    Flag {
        letter: b'b',
        takes_arg: true,
        action: Action::Mode,
        doc: "-bm: send (default); -bp: list the fallback queue; -bs: SMTP on stdin/stdout; -bi: newaliases (nothing to do)",
    },
    Flag {
        letter: b'o',
        takes_arg: true,
        action: Action::Ignore,
        doc: "sendmail options (-oi, -oem, -odb, -odi, ...): ignored",
    },
    Flag {
        letter: b'e',
        takes_arg: true,
        action: Action::Ignore,
        doc: "error mode (-em, -eq, ...): ignored, there is only one",
    },
    Flag {
        letter: b'B',
        takes_arg: true,
        action: Action::Ignore,
        doc: "body type (-B8BITMIME): ignored",
    },
    Flag {
        letter: b'p',
        takes_arg: true,
        action: Action::Ignore,
        doc: "protocol (-pUUCP): ignored",
    },
    Flag {
        letter: b'N',
        takes_arg: true,
        action: Action::Ignore,
        doc: "DSN notification (Postfix): ignored",
    },
    Flag {
        letter: b'i',
        takes_arg: false,
        action: Action::Ignore,
        doc: "a lone dot does not end the message: always so",
    },
    Flag {
        letter: b'v',
        takes_arg: false,
        action: Action::Ignore,
        doc: "verbose: ignored",
    },
    Flag {
        letter: b'm',
        takes_arg: false,
        action: Action::Ignore,
        doc: "send to me too: ignored",
    },
    Flag {
        letter: b'x',
        takes_arg: false,
        action: Action::Ignore,
        doc: "(SVR4): ignored",
    },
    Flag {
        letter: b'E',
        takes_arg: false,
        action: Action::SkipRest,
        doc: "(NEWS-OS) with an optional attached argument: ignored",
    },
    Flag {
        letter: b'J',
        takes_arg: false,
        action: Action::SkipRest,
        doc: "(NEWS-OS) with an optional attached argument: ignored",
    },
];

/// What sendmail was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Inject one message from stdin.
    Send,
    /// List the fallback queue (`-bp`, or the name `mailq`).
    ListQueue,
    /// Speak SMTP on stdin/stdout (`-bs`).
    Smtp,
    /// Rebuild the alias database (`-bi`, or the name `newaliases`): there is none, so nothing.
    NewAliases,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub mode: Mode,
    /// `-t` was given.
    pub header_recipients: bool,
    /// `-f`/`-r`, the last one given.
    pub sender: Option<OsString>,
    /// `-F`, the last one given.
    pub full_name: Option<OsString>,
    /// The arguments after the options: recipients.
    pub args: Vec<OsString>,
}

/// A command line qmail's sendmail refuses (usage, exit 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An option letter not in [`FLAGS`].
    Illegal(u8),
    /// An option that needs an argument came last.
    MissingArgument(u8),
    /// `-b` with a mode other than m, p, s.
    BadMode(OsString),
}

/// Parse sendmail's command line (`argv[0]` included) as qmail's getopt does. Like qmail,
/// `-bp` and `-bs` take effect at once: options after them are not looked at.
pub fn parse(argv: &[OsString]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation {
        mode: Mode::Send,
        header_recipients: false,
        sender: None,
        full_name: None,
        args: Vec::new(),
    };
    let mut i = 1;
    'words: while i < argv.len() {
        let word = argv[i].as_bytes();
        if word.first() != Some(&b'-') || word.len() == 1 {
            break; // the first non-option, or a lone "-", starts the arguments
        }
        if word == b"--" {
            i += 1;
            break;
        }
        let mut pos = 1;
        while pos < word.len() {
            let letter = word[pos];
            pos += 1;
            let Some(flag) = FLAGS.iter().find(|f| f.letter == letter) else {
                return Err(UsageError::Illegal(letter));
            };
            let arg: Option<OsString> = if flag.takes_arg {
                if pos < word.len() {
                    let a = OsStr::from_bytes(&word[pos..]).to_owned();
                    pos = word.len();
                    Some(a)
                } else {
                    i += 1;
                    match argv.get(i) {
                        Some(a) => Some(a.clone()),
                        None => return Err(UsageError::MissingArgument(letter)),
                    }
                }
            } else {
                None
            };
            match (flag.action, arg) {
                (Action::HeaderRecipients, _) => inv.header_recipients = true,
                (Action::Sender, Some(a)) => inv.sender = Some(a),
                (Action::FullName, Some(a)) => inv.full_name = Some(a),
                (Action::Mode, Some(a)) => match a.as_bytes().first() {
                    Some(b'm') => {}
                    Some(b'p') => {
                        inv.mode = Mode::ListQueue;
                        break 'words;
                    }
                    Some(b's') => {
                        inv.mode = Mode::Smtp;
                        break 'words;
                    }
                    Some(b'i') => {
                        inv.mode = Mode::NewAliases;
                        break 'words;
                    }
                    _ => return Err(UsageError::BadMode(a)),
                },
                (Action::SkipRest, _) => pos = word.len(),
                _ => {}
            }
        }
        i += 1;
    }
    if inv.mode == Mode::Send {
        inv.args = argv.get(i..).unwrap_or(&[]).to_vec();
    }
    Ok(inv)
}

/// The qmail-inject command line for a [`Mode::Send`] invocation.
pub fn inject_argv(inv: &Invocation) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "qmail-inject".into(),
        if inv.header_recipients { "-H" } else { "-a" }.into(),
    ];
    if let Some(sender) = &inv.sender {
        argv.push("-f".into());
        argv.push(sender.clone());
    }
    argv.push("--".into());
    argv.extend(inv.args.iter().cloned());
    argv
}

/// The environment changes sendmail makes before running qmail-inject: `(name, Some(value))`
/// sets, `(name, None)` removes.
///
/// With `-f`, as notqmail's sendmail does, the From field follows the sender: QMAILUSER and
/// QMAILHOST come from it, and the caller's name and host variables are dropped. `-F` then sets
/// MAILNAME (applied last, so `-F` with `-f` keeps the name, as qmail 1.03 did).
pub fn environment(inv: &Invocation) -> Vec<(&'static str, Option<OsString>)> {
    let mut env = Vec::new();
    if let Some(sender) = &inv.sender {
        for name in ["QMAILNAME", "MAILNAME", "NAME", "QMAILHOST", "MAILHOST"] {
            env.push((name, None));
        }
        let bytes = sender.as_bytes();
        match bytes.iter().rposition(|&b| b == b'@') {
            None => env.push(("QMAILUSER", Some(sender.clone()))),
            Some(at) => {
                env.push((
                    "QMAILHOST",
                    Some(OsString::from_vec(bytes[at + 1..].to_vec())),
                ));
                env.push(("QMAILUSER", Some(OsString::from_vec(bytes[..at].to_vec()))));
            }
        }
    }
    if let Some(name) = &inv.full_name {
        env.push(("MAILNAME", Some(name.clone())));
    }
    env
}

/// Why sendmail stops; the one place its exit codes are decided ([`exit_code`]).
enum Failure {
    Usage(UsageError),
    Home(String),
    Queue(String),
    /// qmail-inject's own exit code (it printed its message).
    Inject(i32),
    /// An SMTP session ended in a way worth reporting (its client saw the replies).
    Smtp(String),
}

fn exit_code(f: &Failure) -> i32 {
    match f {
        Failure::Usage(_) => 100,
        Failure::Home(_) | Failure::Queue(_) | Failure::Smtp(_) => 111,
        Failure::Inject(code) => *code,
    }
}

/// `sendmail`, `mailq`, `newaliases`.
pub fn main(args: &[OsString]) -> i32 {
    let name = program_name(args);
    match run(args, &name) {
        Ok(()) => 0,
        Err(failure) => {
            match &failure {
                Failure::Usage(e) => {
                    let mut err = io::stderr().lock();
                    let _ = match e {
                        UsageError::Illegal(c) => {
                            writeln!(err, "{name}: illegal option -- {}", *c as char)
                        }
                        UsageError::MissingArgument(c) => {
                            writeln!(err, "{name}: option requires an argument -- {}", *c as char)
                        }
                        UsageError::BadMode(_) => Ok(()),
                    };
                    let _ = writeln!(err, "{USAGE}");
                }
                Failure::Home(why) | Failure::Queue(why) | Failure::Smtp(why) => {
                    eprintln!("sendmail: fatal: {why}")
                }
                Failure::Inject(_) => {}
            }
            exit_code(&failure)
        }
    }
}

fn program_name(args: &[OsString]) -> String {
    args.first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("sendmail")
        .to_owned()
}

fn run(args: &[OsString], name: &str) -> Result<(), Failure> {
    let control = ControlDir::from_env();
    if !control.home().is_dir() {
        return Err(Failure::Home(
            "unable to switch to qmail home directory".into(),
        ));
    }
    let mut inv = parse(args).map_err(Failure::Usage)?;
    if name == "mailq" {
        inv.mode = Mode::ListQueue;
    }
    if name == "newaliases" && inv.mode == Mode::Send {
        inv.mode = Mode::NewAliases;
    }
    match inv.mode {
        Mode::NewAliases => Ok(()),
        Mode::ListQueue => list_queue(&control),
        Mode::Smtp => crate::smtp_stdio::serve_stdio().map_err(|e| Failure::Smtp(e.to_string())),
        Mode::Send => {
            match qmail_inject::run(&inject_argv(&inv), &environment(&inv), io::stdin().lock()) {
                0 => Ok(()),
                code => Err(Failure::Inject(code)),
            }
        }
    }
}

/// `mailq` / `sendmail -bp`: the fallback queue in qmail-qread's format:
/// `26 Nov 2026 11:46:00 GMT  #ID  SIZE  <SENDER>` then a `\tremote\tRECIPIENT` line each.
fn list_queue(control: &ControlDir) -> Result<(), Failure> {
    let config = Config::load(control).map_err(|e| Failure::Queue(e.to_string()))?;
    let Some(queue) = config.fallback else {
        return Ok(()); // no queue: nothing ever waits on this host
    };
    let out = io::stdout();
    let mut out = out.lock();
    print_queue(&queue, &mut out)
        .map_err(|e| Failure::Queue(format!("unable to list {}: {e}", queue.dir().display())))
}

/// Write the listing of `queue` to `out`.
pub fn print_queue(queue: &FallbackQueue, out: &mut impl Write) -> io::Result<()> {
    // A queue file's name and the addresses in it are any local user's (the directory is
    // theirs to write), so they are shown with their control characters as `?`: an escape
    // sequence must not reach root's terminal, nor a newline forge a line of the listing.
    let shown = |a: &[u8]| crate::syslog::printable(&String::from_utf8_lossy(a));
    for entry in queue.list()? {
        let mark = if entry.failed { " failed" } else { "" };
        match &entry.envelope {
            Ok(env) => {
                writeln!(
                    out,
                    "{}  #{}  {}  <{}>{mark}",
                    calendar::qread_date(entry.time),
                    crate::syslog::printable(&entry.id),
                    entry.size,
                    shown(&env.sender)
                )?;
                for r in &env.recipients {
                    writeln!(out, "\tremote\t{}", shown(r))?;
                }
            }
            Err(e) => writeln!(
                out,
                "{}  #{}  unreadable: {}{mark}",
                calendar::qread_date(entry.time),
                crate::syslog::printable(&entry.id),
                crate::syslog::printable(&e.to_string())
            )?,
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("sendmail")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn ok(words: &[&str]) -> Invocation {
        match parse(&argv(words)) {
            Ok(inv) => inv,
            Err(e) => panic!("{words:?}: {e:?}"),
        }
    }

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    // One test per flag spelling, as the flag table promises.

    #[test]
    fn flag_t() {
        let inv = ok(&["-t"]);
        assert!(inv.header_recipients);
        assert_eq!(inject_argv(&inv), os(&["qmail-inject", "-H", "--"]));
        assert_eq!(
            inject_argv(&ok(&["bob"])),
            os(&["qmail-inject", "-a", "--", "bob"])
        );
    }

    #[test]
    fn flag_f_attached_and_separate() {
        assert_eq!(
            ok(&["-fjason@example.net", "bob"]).sender,
            Some("jason@example.net".into())
        );
        let inv = ok(&["-f", "jason@example.net", "bob"]);
        assert_eq!(inv.sender, Some("jason@example.net".into()));
        assert_eq!(inv.args, os(&["bob"]));
        assert_eq!(
            inject_argv(&inv),
            os(&["qmail-inject", "-a", "-f", "jason@example.net", "--", "bob"])
        );
    }

    #[test]
    fn flag_r_is_f() {
        assert_eq!(ok(&["-rjason"]).sender, Some("jason".into()));
        assert_eq!(ok(&["-r", "jason", "bob"]).sender, Some("jason".into()));
    }

    #[test]
    fn flag_f_empty_is_the_null_sender() {
        let inv = ok(&["-f", "", "bob"]);
        assert_eq!(inv.sender, Some("".into()));
    }

    #[test]
    fn flag_capital_f() {
        assert_eq!(
            ok(&["-FCronDaemon", "root"]).full_name,
            Some("CronDaemon".into())
        );
        assert_eq!(
            ok(&["-F", "Cron Daemon", "root"]).full_name,
            Some("Cron Daemon".into())
        );
    }

    #[test]
    fn flag_b_modes() {
        assert_eq!(ok(&["-bm", "bob"]).mode, Mode::Send);
        assert_eq!(ok(&["-b", "m", "bob"]).mode, Mode::Send);
        assert_eq!(ok(&["-bp"]).mode, Mode::ListQueue);
        assert_eq!(ok(&["-bs"]).mode, Mode::Smtp);
        // Like qmail, -bp and -bs act at once: what follows is not parsed.
        assert_eq!(ok(&["-bp", "-Q"]).mode, Mode::ListQueue);
        assert_eq!(ok(&["-bi"]).mode, Mode::NewAliases);
        assert_eq!(parse(&argv(&["-bd"])), Err(UsageError::BadMode("d".into())));
        assert_eq!(
            parse(&argv(&["-b"])),
            Err(UsageError::MissingArgument(b'b'))
        );
    }

    #[test]
    fn flag_o_any() {
        for spelling in [
            &["-oi"][..],
            &["-oem"],
            &["-odb"],
            &["-odi"],
            &["-oQ/var/spool"],
            &["-o", "i"],
        ] {
            let mut words = spelling.to_vec();
            words.push("bob");
            let inv = ok(&words);
            assert_eq!(inv.args, os(&["bob"]), "{spelling:?}");
            assert_eq!(inv.mode, Mode::Send);
        }
    }

    #[test]
    fn flag_e_any() {
        assert_eq!(ok(&["-em", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-eq", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn flag_capital_b() {
        assert_eq!(ok(&["-B8BITMIME", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-B", "7BIT", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn flag_p() {
        assert_eq!(ok(&["-pUUCP", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-p", "UUCP:host", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn flag_capital_n() {
        assert_eq!(ok(&["-Nnever", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-N", "success,failure", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn flags_i_v_m_x() {
        for f in ["-i", "-v", "-m", "-x"] {
            assert_eq!(ok(&[f, "bob"]).args, os(&["bob"]), "{f}");
        }
        assert_eq!(ok(&["-imvx", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn flags_e_j_skip_their_rest() {
        assert_eq!(ok(&["-E", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-Eanything", "bob"]).args, os(&["bob"]));
        assert_eq!(ok(&["-Jx-y", "bob"]).args, os(&["bob"]));
    }

    #[test]
    fn clusters_mix() {
        let inv = ok(&["-tif", "jason", "bob"]);
        assert!(inv.header_recipients);
        assert_eq!(inv.sender, Some("jason".into()));
        assert_eq!(inv.args, os(&["bob"]));
    }

    #[test]
    fn end_of_options() {
        assert_eq!(ok(&["--", "-t"]).args, os(&["-t"]));
        assert!(!ok(&["--", "-t"]).header_recipients);
        assert_eq!(ok(&["-", "bob"]).args, os(&["-", "bob"]));
        // The first non-option ends the options, as in qmail's getopt.
        let inv = ok(&["bob", "-t"]);
        assert_eq!(inv.args, os(&["bob", "-t"]));
        assert!(!inv.header_recipients);
    }

    #[test]
    fn unknown_options_are_usage_errors() {
        assert_eq!(parse(&argv(&["-q"])), Err(UsageError::Illegal(b'q')));
        assert_eq!(parse(&argv(&["-tX"])), Err(UsageError::Illegal(b'X')));
        assert_eq!(
            parse(&argv(&["-f"])),
            Err(UsageError::MissingArgument(b'f'))
        );
        assert_eq!(exit_code(&Failure::Usage(UsageError::Illegal(b'q'))), 100);
    }

    #[test]
    fn pine_and_cron_calls() {
        // Pine: sendmail-path=/usr/lib/sendmail -oem -oi -t
        let pine = ok(&["-oem", "-oi", "-t"]);
        assert_eq!(inject_argv(&pine), os(&["qmail-inject", "-H", "--"]));
        // cron (cronie / Debian cron)
        let cron = ok(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
        assert_eq!(
            inject_argv(&cron),
            os(&["qmail-inject", "-a", "--", "root"])
        );
        assert_eq!(
            environment(&cron),
            vec![("MAILNAME", Some("CronDaemon".into()))]
        );
    }

    #[test]
    fn sender_sets_user_and_host() {
        let inv = ok(&["-f", "jason@example.net", "bob"]);
        let env = environment(&inv);
        assert!(env.contains(&("QMAILUSER", Some("jason".into()))));
        assert!(env.contains(&("QMAILHOST", Some("example.net".into()))));
        assert!(env.contains(&("MAILNAME", None)));
        let inv = ok(&["-f", "jason", "-F", "Jason Mader", "bob"]);
        let env = environment(&inv);
        assert!(env.contains(&("QMAILUSER", Some("jason".into()))));
        assert_eq!(env.last(), Some(&("MAILNAME", Some("Jason Mader".into()))));
    }

    #[test]
    fn every_flag_is_documented_once() {
        for (i, f) in FLAGS.iter().enumerate() {
            assert!(!f.doc.is_empty());
            assert!(
                FLAGS[i + 1..].iter().all(|g| g.letter != f.letter),
                "{}",
                f.letter as char
            );
        }
    }
}
