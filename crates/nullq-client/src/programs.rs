//! The small mini-qmail programs that wrap injection: `predate`, `datemail`, `mailsubj`,
//! `forward`, and the MUA wrappers `elq`, `pinq`, `qail`.
//!
//! Each is one function, `fn(argv) -> exit code`, doing what its qmail man page says (the notqmail
//! sources were the reference: predate.c, datemail.sh, mailsubj.sh, forward.c, and qmail 1.03's
//! elq.sh, pinq.sh, qail.sh). Where a qmail program runs another (`datemail` runs sendmail,
//! `mailsubj` runs qmail-inject) nullq calls that program's code, in this process or by running
//! its own binary under the other name, never a fixed path under /var/qmail.

use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nullq_proto::envelope::QmailEnvelope;

use crate::calendar;
use crate::errstr::Qmail;
use crate::qmqpc;

/// Exit codes of these programs: qmail-inject's convention.
const EXIT_PERM: i32 = 100;
const EXIT_TEMP: i32 = 111;

fn name_of(args: &[OsString], default: &str) -> String {
    args.first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or(default)
        .to_owned()
}

/// `predate CHILD [ARGS]`: run CHILD with a `Date:` line in local time (numeric zone) in front of
/// predate's stdin; exit with CHILD's exit code.
pub fn predate(args: &[OsString]) -> i32 {
    let Some(child) = args.get(1) else {
        eprintln!("predate: usage: predate child");
        return EXIT_PERM;
    };
    let rest = &args[2..];
    let mut command = Command::new(child);
    command.args(rest);
    run_with_date(command, Some((child, rest)), "predate")
}

/// `datemail [SENDMAIL ARGS]`: `predate sendmail ARGS`, for mail programs that write no Date
/// field. The sendmail run is this very binary under the name `sendmail`.
pub fn datemail(args: &[OsString]) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!(
                "datemail: fatal: unable to find the nullq binary: {}",
                Qmail(&e)
            );
            return EXIT_TEMP;
        }
    };
    let mut command = Command::new(exe);
    command.arg0("sendmail").args(args.get(1..).unwrap_or(&[]));
    run_with_date(command, None, "datemail")
}

/// Where execvp(3) finds `name`: itself if it has a slash, else the first executable file of
/// that name in `$PATH` (glibc's default path when unset).
fn find_in_path(name: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Start `command`, or, when the kernel cannot execute the file (no `#!` line) and `program` is
/// given, run it with `/bin/sh` as qmail's execvp does.
fn spawn(command: &mut Command, program: Option<(&OsString, &[OsString])>) -> io::Result<Child> {
    match command.spawn() {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            let Some(script) = program.and_then(|(name, _)| find_in_path(name)) else {
                return Err(e);
            };
            let args = program.map(|(_, rest)| rest).unwrap_or(&[]);
            Command::new("/bin/sh")
                .arg(script)
                .args(args)
                .stdin(Stdio::piped())
                .spawn()
        }
        other => other,
    }
}

/// Run `command` with `Date: ...\n` + our stdin on its stdin; its exit code, or 111 if it
/// could not run or crashed (the one exit-code mapping of predate and datemail). `program` is
/// the child's name and arguments as given, for the `/bin/sh` fallback of [`spawn`].
fn run_with_date(mut command: Command, program: Option<(&OsString, &[OsString])>, me: &str) -> i32 {
    let child_name = program.map_or_else(
        || "sendmail".to_owned(),
        |(name, _)| name.to_string_lossy().into_owned(),
    );
    let mut child = match spawn(command.stdin(Stdio::piped()), program) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("{me}: fatal: unable to run {child_name}: {}", Qmail(&e));
            return EXIT_TEMP;
        }
    };
    if let Some(mut pipe) = child.stdin.take() {
        let date = format!("Date: {}\n", calendar::rfc822_local(calendar::now()));
        // A child that stops reading early is its own business: predate ignores SIGPIPE and
        // reports the child's exit code, so write errors are not ours to report.
        let _ = pipe.write_all(date.as_bytes());
        let _ = io::copy(&mut io::stdin().lock(), &mut pipe);
    }
    match child.wait() {
        Ok(status) => match status.code() {
            Some(code) => code,
            None => {
                eprintln!("{me}: fatal: child crashed");
                EXIT_TEMP
            }
        },
        Err(e) => {
            eprintln!("{me}: fatal: wait failed: {}", Qmail(&e));
            EXIT_TEMP
        }
    }
}

/// `mailsubj SUBJECT RECIP...`: send stdin as the body of a message with `Subject: SUBJECT` and
/// `To: RECIP ...` (the recipients joined by spaces, as the qmail script's `echo` does), through
/// qmail-inject with recipients from the header.
pub fn mailsubj(args: &[OsString]) -> i32 {
    if args.len() < 3 {
        eprintln!("mailsubj: usage: mailsubj subject recip ...");
        return EXIT_PERM;
    }
    let mut header = b"Subject: ".to_vec();
    header.extend_from_slice(args[1].as_bytes());
    header.extend_from_slice(b"\nTo:");
    for r in &args[2..] {
        header.push(b' ');
        header.extend_from_slice(r.as_bytes());
    }
    header.extend_from_slice(b"\n\n");
    let file = match spool(&header, &mut io::stdin().lock()) {
        Ok((file, _)) => file,
        Err(e) => {
            eprintln!("mailsubj: fatal: unable to read the message: {e}");
            return EXIT_TEMP;
        }
    };
    crate::qmail_inject::run(&["qmail-inject".into()], &[], file)
}

/// `head` then all of `input` in an anonymous temporary file, rewound; and its length.
fn spool(head: &[u8], input: &mut impl Read) -> io::Result<(File, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut file = tempfile::tempfile()?;
    file.write_all(head)?;
    let len = head.len() as u64 + qmqpc::copy_all(input, &mut file)?;
    file.flush()?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, len))
}

/// `forward ADDR...` (from a .qmail file or a pipe): queue stdin for ADDRs with the envelope
/// sender `$NEWSENDER`, with `$DTLINE` (qmail-local's Delivered-To line) in front when set,
/// through `$QMAILQUEUE` when set. No address rewriting, as in qmail: this is qmail-queue, not
/// qmail-inject.
///
/// qmail's forward also insists on DTLINE; a mini-qmail host has no qmail-local to set it, so
/// nullq's only adds it when present.
pub fn forward(args: &[OsString]) -> i32 {
    let Some(sender) = std::env::var_os("NEWSENDER") else {
        eprintln!("forward: fatal: NEWSENDER not set");
        return EXIT_PERM;
    };
    let dtline = std::env::var_os("DTLINE")
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    let (mut file, len) = match spool(&dtline, &mut io::stdin().lock()) {
        Ok(spooled) => spooled,
        Err(e) => {
            eprintln!("forward: fatal: unable to read message: {e}");
            return EXIT_TEMP;
        }
    };
    let envelope = QmailEnvelope {
        sender: sender.as_bytes().to_vec(),
        recipients: args.iter().skip(1).map(|a| a.as_bytes().to_vec()).collect(),
    };
    // As qmail's forward (qmail_open): `$QMAILQUEUE` when set, else the QMQP client.
    let queued = match std::env::var_os("QMAILQUEUE") {
        Some(program) => {
            let control = crate::control::ControlDir::from_env();
            crate::qmail_inject::run_qmail_queue(control.home(), &program, file, &envelope).map_err(
                |e| match e {
                    crate::qmail_inject::InjectError::Queue { text, permanent } => {
                        (permanent, text)
                    }
                    other => (false, other.to_string()),
                },
            )
        }
        None => qmqpc::queue_file(&mut file, len, &envelope)
            .map_err(|code| crate::qmail_inject::queue_reply(i32::from(code.code()), None)),
    };
    match queued {
        Ok(()) => {
            eprintln!("forward: qp {}", std::process::id());
            0
        }
        Err((permanent, text)) => {
            // qmail's texts for qmail-queue's codes (qmail_close), as qmail's forward says them.
            eprintln!("forward: fatal: {text}");
            if permanent {
                EXIT_PERM
            } else {
                EXIT_TEMP
            }
        }
    }
}

/// `elq`, `pinq`, `qail` (qmail 1.03): run elm, pine or Mail (then mail) with `f` added to
/// QMAILINJECT, so qmail-inject replaces the From field the MUA wrote with a correct one. As in
/// qmail, `maildir2mbox` runs first when `$MAILDIR` is set, and the MUA only if it succeeded.
pub fn mua_wrapper(args: &[OsString]) -> i32 {
    let me = name_of(args, "elq");
    let muas: &[&str] = match me.as_str() {
        "pinq" => &["pine"],
        "qail" => &["Mail", "mail"],
        _ => &["elm"],
    };
    if std::env::var_os("MAILDIR").is_some() {
        let code = crate::maildir_tools::maildir2mbox(&["maildir2mbox".into()]);
        if code != 0 {
            return code;
        }
    }
    let mut flags = std::env::var("QMAILINJECT").unwrap_or_default();
    if !flags.contains('f') {
        flags.push('f');
    }
    let mut last = None;
    for mua in muas {
        // exec only returns on failure.
        let e = Command::new(mua)
            .args(&args[1..])
            .env("QMAILINJECT", &flags)
            .exec();
        let not_found = e.kind() == io::ErrorKind::NotFound;
        last = Some((mua, e));
        if !not_found {
            break;
        }
    }
    if let Some((mua, e)) = last {
        eprintln!("{me}: fatal: unable to run {mua}: {e}");
    }
    EXIT_TEMP
}
