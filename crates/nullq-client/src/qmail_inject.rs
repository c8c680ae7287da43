//! `qmail-inject`: prepare a message and hand it to the queue (qmail-inject(8)).
//!
//! This module owns the program around [`nullq_mail::injector`]: the command line (`-a -h -A -H
//! -n -N -f SENDER`), the environment (QMAILINJECT, QMAILUSER, ..., QMAILMFTFILE), the control
//! files (`me`, `defaulthost`, `defaultdomain`, `plusdomain`, `idhost`, and nullq's
//! `rewrite`), reading the header into memory (bounded by [`HEADER_LIMIT`]) and streaming the
//! body, and the hand-off: with `-n` the message goes to stdout; otherwise it is written to a
//! temporary file and given to [`crate::qmqpc::queue_file`] in this process, or, when
//! `$QMAILQUEUE` is set, to that program through the qmail-queue interface. Every failure ends
//! in [`InjectError`], whose [`InjectError::exit_code`] (0/100/111) and message are qmail's.
//!
//! Site rewriting: when `control/rewrite` exists, its CommuniGate Pro Router records
//! ([`nullq_mail::rewrite`]) are applied after qmail-inject's own rules to the envelope and to
//! every address in the address fields. This is what replaces sendmail's `MASQUERADE_AS`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::control::{self, ControlDir};
use nullq_mail::headerbody::{self, HeaderError};
use nullq_mail::injector::{self as engine, Flags, Injector, Settings};
use nullq_mail::rewrite::{self, RewriteRules};
use nullq_proto::envelope::QmailEnvelope;

/// The most header bytes held in memory; a longer header is refused (exit 100). Enough for
/// tens of thousands of Bcc recipients, small enough to keep the client's memory bounded.
pub const HEADER_LIMIT: usize = 2 * 1024 * 1024;

/// The buffer size for streaming the body.
const CHUNK: usize = 64 * 1024;

/// The environment variables qmail-inject reads (and nullq's `NULLQ_HOME` and qmail's
/// `QMAILQUEUE`).
pub const ENV_VARS: [&str; 21] = [
    "QMAILINJECT",
    "QMAILHOST",
    "MAILHOST",
    "QMAILSHOST",
    "QMAILUSER",
    "MAILUSER",
    "USER",
    "LOGNAME",
    "QMAILSUSER",
    "QMAILNAME",
    "MAILNAME",
    "NAME",
    "QMAILMFTFILE",
    "QMAILDEFAULTDOMAIN",
    "QMAILDEFAULTHOST",
    "QMAILPLUSDOMAIN",
    "QMAILIDHOST",
    "QMAILQUEUE",
    "NULLQ_HOME",
    "TZ",
    "HOME",
];

/// The environment qmail-inject sees: a snapshot, so that callers in this process (sendmail,
/// tests) can give it variables without touching the process's own environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: HashMap<String, Vec<u8>>,
}

impl Env {
    /// No variables at all.
    pub fn empty() -> Env {
        Env::default()
    }

    /// The variables of [`ENV_VARS`] from this process's environment.
    pub fn from_process() -> Env {
        let mut env = Env::empty();
        for name in ENV_VARS {
            if let Some(value) = control::process_env(name) {
                env.vars.insert(name.to_owned(), value);
            }
        }
        env
    }

    /// Set `name` to `value`.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Env {
        self.vars.insert(name.to_owned(), value.as_ref().to_vec());
        self
    }

    /// Remove `name`.
    pub fn remove(&mut self, name: &str) -> &mut Env {
        self.vars.remove(name);
        self
    }

    /// The value of `name`, if set (possibly empty).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).map(Vec::as_slice)
    }

    fn first(&self, names: &[&str]) -> Option<Vec<u8>> {
        names.iter().find_map(|n| self.get(n)).map(<[u8]>::to_vec)
    }
}

/// Where the envelope recipients come from (`-a`, `-h`, `-A`, `-H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientSource {
    /// `-A` (the default): the arguments if there are any, else the header.
    Default,
    /// `-a`: the arguments only.
    Args,
    /// `-h`: the header only (arguments are ignored).
    Header,
    /// `-H`: both.
    Both,
}

/// One run of qmail-inject: what the command line and the environment say.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// `-a`/`-h`/`-A`/`-H`.
    pub recipients: RecipientSource,
    /// `-n`: print the message (after a `Return-Path:` line) instead of queueing it.
    pub print: bool,
    /// `-f SENDER`: the envelope sender, before rewriting.
    pub sender: Option<Vec<u8>>,
    /// The recipient arguments.
    pub args: Vec<Vec<u8>>,
    /// The environment.
    pub env: Env,
    /// The qmail home directory (`$NULLQ_HOME`, else `/var/qmail`).
    pub control: ControlDir,
    /// The time of the generated Date and Message-ID.
    pub time: SystemTime,
    /// The process id in the generated Message-ID.
    pub pid: u32,
}

impl InjectOptions {
    /// Defaults (`-A -N`, no sender, no arguments) for environment `env`, now, in this process.
    pub fn new(env: Env) -> InjectOptions {
        let home = env.get("NULLQ_HOME").map_or_else(
            || PathBuf::from(control::DEFAULT_HOME),
            |h| PathBuf::from(OsStr::from_bytes(h)),
        );
        InjectOptions {
            recipients: RecipientSource::Default,
            print: false,
            sender: None,
            args: Vec::new(),
            env,
            control: ControlDir::new(home),
            time: SystemTime::now(),
            pid: std::process::id(),
        }
    }

    /// Read a qmail-inject command line (argv\[0\] included) with qmail's getopt rules:
    /// clustered flags (`-nH`), `-fSENDER` or `-f SENDER`, `--` or a word not starting with
    /// `-` ends the options (a lone `-` is an argument).
    pub fn parse_args(&mut self, argv: &[OsString]) -> Result<(), InjectError> {
        let prog = program_name(argv);
        let mut i = 1;
        while let Some(arg) = argv.get(i) {
            let a = arg.as_bytes();
            if a.len() < 2 || a[0] != b'-' {
                break;
            }
            if a[1] == b'-' {
                // qmail's subgetopt takes any argument starting with `--` as the end marker.
                i += 1;
                break;
            }
            let mut pos = 1;
            while pos < a.len() {
                let c = a[pos];
                pos += 1;
                match c {
                    b'a' => self.recipients = RecipientSource::Args,
                    b'A' => self.recipients = RecipientSource::Default,
                    b'h' => self.recipients = RecipientSource::Header,
                    b'H' => self.recipients = RecipientSource::Both,
                    b'n' => self.print = true,
                    b'N' => self.print = false,
                    b'f' => {
                        if pos < a.len() {
                            self.sender = Some(a[pos..].to_vec());
                        } else {
                            i += 1;
                            let Some(value) = argv.get(i) else {
                                return Err(InjectError::Usage(format!(
                                    "{prog}: option requires an argument -- f\n"
                                )));
                            };
                            self.sender = Some(value.as_bytes().to_vec());
                        }
                        pos = a.len();
                    }
                    _ => {
                        let mut msg = format!("{prog}: illegal option -- ").into_bytes();
                        msg.push(c);
                        msg.push(b'\n');
                        return Err(InjectError::Usage(
                            String::from_utf8_lossy(&msg).into_owned(),
                        ));
                    }
                }
            }
            i += 1;
        }
        self.args = argv
            .get(i..)
            .unwrap_or_default()
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        Ok(())
    }
}

fn program_name(argv: &[OsString]) -> String {
    argv.first()
        .map(|a| a.as_bytes())
        .map(|a| a.rsplit(|&b| b == b'/').next().unwrap_or(a))
        .map_or_else(
            || "qmail-inject".to_owned(),
            |n| String::from_utf8_lossy(n).into_owned(),
        )
}

/// Why qmail-inject failed. [`InjectError::exit_code`] and [`InjectError::message`] are what
/// qmail-inject exits with and prints.
#[derive(Debug)]
pub enum InjectError {
    /// A bad command line; the text is getopt's line (exit 100).
    Usage(String),
    /// The message or a control value cannot be parsed (exit 100).
    Mail(engine::Error),
    /// The header is longer than [`HEADER_LIMIT`] (exit 100).
    HeaderTooLong,
    /// Reading the message, a control file or `$QMAILMFTFILE` failed (exit 111).
    Read(io::Error),
    /// The qmail home directory is not there (exit 111; qmail says "internal bug").
    Home(PathBuf),
    /// `control/rewrite` is unreadable or has a bad line (exit 111: fix it and retry).
    Rewrite(String),
    /// Writing the message (to stdout with `-n`, or to its temporary file) failed (exit 111).
    Write(io::Error),
    /// `$QMAILQUEUE` could not be started (exit 111).
    QueueStart(io::Error),
    /// The queue refused the message: qmail's text after its `D`/`Z` letter, and whether the
    /// refusal is permanent (`D`: exit 100) or temporary (`Z`: exit 111).
    Queue {
        /// e.g. `mail server permanently rejected message (#5.3.0)`.
        text: String,
        /// `D` rather than `Z`.
        permanent: bool,
    },
}

impl InjectError {
    /// qmail-inject's exit code: 100 permanent, 111 temporary.
    pub fn exit_code(&self) -> i32 {
        match self {
            InjectError::Usage(_) | InjectError::Mail(_) | InjectError::HeaderTooLong => 100,
            InjectError::Queue {
                permanent: true, ..
            } => 100,
            _ => 111,
        }
    }

    /// What qmail-inject prints on stderr, newline included.
    pub fn message(&self) -> Vec<u8> {
        let fatal = |s: &str| format!("qmail-inject: fatal: {s}\n").into_bytes();
        match self {
            InjectError::Usage(line) => line.clone().into_bytes(),
            InjectError::Mail(e) => [&b"qmail-inject: fatal: "[..], &e.message()].concat(),
            InjectError::HeaderTooLong => fatal(&format!(
                "header too long (more than {HEADER_LIMIT} bytes) (#5.3.4)"
            )),
            InjectError::Read(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                fatal("out of memory")
            }
            InjectError::Read(_) => fatal("read error"),
            InjectError::Home(_) => fatal("internal bug"),
            InjectError::Rewrite(why) => fatal(why),
            InjectError::Write(_) => fatal("qq write error or disk full (#4.3.0)"),
            InjectError::QueueStart(_) => fatal("unable to run qmail-queue"),
            InjectError::Queue { text, .. } => fatal(text),
        }
    }
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(String::from_utf8_lossy(&self.message()).trim_end())
    }
}

impl std::error::Error for InjectError {}

impl From<engine::Error> for InjectError {
    fn from(e: engine::Error) -> Self {
        InjectError::Mail(e)
    }
}

/// qmail's `qmail_close`: the `D`/`Z` reply for a qmail-queue exit code (and, for code 82,
/// the program's own reply read from its fd 6).
pub fn queue_reply(code: i32, custom: Option<&[u8]>) -> (bool, String) {
    let text = match code {
        11 | 115 => "Denvelope address too long for qq (#5.1.3)",
        31 => "Dmail server permanently rejected message (#5.3.0)",
        51 => "Zqq out of memory (#4.3.0)",
        52 => "Zqq timeout (#4.3.0)",
        53 => "Zqq write error or disk full (#4.3.0)",
        0 | 54 => "Zqq read error (#4.3.0)",
        55 => "Zqq unable to read configuration (#4.3.0)",
        56 => "Zqq trouble making network connection (#4.3.0)",
        61 => "Zqq trouble in home directory (#4.3.0)",
        62..=66 => "Zqq trouble creating files in queue (#4.3.0)",
        71 => "Zmail server temporarily rejected message (#4.3.0)",
        72 => "Zconnection to mail server timed out (#4.4.1)",
        73 => "Zconnection to mail server rejected (#4.4.1)",
        74 => "Zcommunication with mail server failed (#4.4.2)",
        81 | 91 => "Zqq internal bug (#4.3.0)",
        120 => "Zunable to exec qq (#4.3.0)",
        82 => match custom.filter(|c| c.len() > 2) {
            Some(c) => {
                let t = String::from_utf8_lossy(c);
                return (
                    t.starts_with('D'),
                    t.get(1..).unwrap_or_default().to_owned(),
                );
            }
            None => "Zqq temporary problem (#4.3.0)",
        },
        11..=40 => "Dqq permanent problem (#5.3.0)",
        _ => "Zqq temporary problem (#4.3.0)",
    };
    (text.starts_with('D'), text[1..].to_owned())
}

/// Read everything qmail-inject's rewriting needs from the control files and the environment
/// (qmail's `getcontrols` and the start of its `main`).
pub fn settings(opts: &InjectOptions) -> Result<Settings, InjectError> {
    let mut s = address_settings(opts)?;
    s.rules = site_rules(&opts.control)?;
    Ok(s)
}

/// [`settings`] without the site's rules: qmail-inject's own behaviour (qmail-showctl uses it
/// to show what qmail's rules do even when `control/rewrite` is broken).
pub fn address_settings(opts: &InjectOptions) -> Result<Settings, InjectError> {
    let env = &opts.env;
    let mut s = Settings::new(b"anonymous", opts.time, opts.pid);
    s.flags = Flags::parse(env.get("QMAILINJECT").unwrap_or_default());
    s.mailhost = env.first(&["QMAILHOST", "MAILHOST"]);
    s.mailrhost = env.first(&["QMAILSHOST"]).or_else(|| s.mailhost.clone());
    s.mailuser = env
        .first(&["QMAILUSER", "MAILUSER", "USER", "LOGNAME"])
        .unwrap_or_else(|| b"anonymous".to_vec());
    s.mailruser = env
        .first(&["QMAILSUSER"])
        .unwrap_or_else(|| s.mailuser.clone());
    s.fullname = env.first(&["QMAILNAME", "MAILNAME", "NAME"]);

    // qmail reads $QMAILMFTFILE before changing to its home, so a relative name is relative to
    // the caller's directory here too.
    if let Some(path) = env.get("QMAILMFTFILE") {
        s.mft = control::read_value_lines(Path::new(OsStr::from_bytes(path)))
            .map_err(InjectError::Read)?;
    }
    if !opts.control.home().is_dir() {
        return Err(InjectError::Home(opts.control.home().to_owned()));
    }
    let lookup = |name: &str| env.get(name).map(<[u8]>::to_vec);
    let c = opts
        .control
        .inject_controls(&lookup)
        .map_err(InjectError::Read)?;
    s.defaultdomain = c.defaultdomain.value;
    s.defaulthost = c.defaulthost.value;
    s.plusdomain = c.plusdomain.value;
    s.idhost = c.idhost.value;
    Ok(s)
}

/// The site's rewriting rules, `control/rewrite` (none when the file does not exist).
pub fn site_rules(control: &ControlDir) -> Result<RewriteRules, InjectError> {
    let path = control.path("rewrite");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                InjectError::Rewrite("unable to parse control/rewrite: not UTF-8 text".to_owned())
            })?;
            rewrite::parse_rules(&text)
                .map_err(|e| InjectError::Rewrite(format!("unable to parse control/rewrite: {e}")))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RewriteRules::default()),
        Err(e) => Err(InjectError::Rewrite(format!(
            "unable to read control/rewrite: {e}"
        ))),
    }
}

fn header_error(e: HeaderError) -> InjectError {
    match e {
        HeaderError::Io(e) => InjectError::Read(e),
        HeaderError::TooLarge { .. } => InjectError::HeaderTooLong,
    }
}

/// Rewrite the message read from `input` and write it to `out` (with `-n`'s `Return-Path:`
/// line first when `opts.print` is set); return the envelope. The body is streamed.
pub fn prepare<R: Read, W: Write>(
    opts: &InjectOptions,
    input: R,
    out: &mut W,
) -> Result<QmailEnvelope, InjectError> {
    let mut msg = Injector::new(settings(opts)?)?;
    if let Some(sender) = &opts.sender {
        msg.set_sender(sender)?;
    }
    let source = match opts.recipients {
        RecipientSource::Default if opts.args.is_empty() => RecipientSource::Header,
        RecipientSource::Default => RecipientSource::Args,
        other => other,
    };
    if source != RecipientSource::Header {
        for arg in &opts.args {
            msg.add_recipient(arg)?;
        }
    }
    let mut input = BufReader::with_capacity(CHUNK, input);
    let header = headerbody::read_header(&mut input, HEADER_LIMIT).map_err(header_error)?;
    for field in header.fields {
        msg.header_field(field)?;
    }
    let top = msg.finish_header(opts.print)?;
    out.write_all(&top).map_err(InjectError::Write)?;
    copy_body(&mut input, out, &header.body_start)?;
    out.flush().map_err(InjectError::Write)?;
    Ok(QmailEnvelope {
        sender: msg.sender().unwrap_or_default().to_vec(),
        recipients: msg.recipients(source != RecipientSource::Args),
    })
}

/// [`headerbody::copy_body`], telling read errors (111 "read error") from write errors.
fn copy_body<R: BufRead, W: Write>(
    input: &mut R,
    out: &mut W,
    start: &[u8],
) -> Result<u64, InjectError> {
    /// Remembers whether the writer failed, since copy_body returns both kinds of error alike.
    struct Tracked<'a, W> {
        inner: &'a mut W,
        failed: bool,
    }
    impl<W: Write> Write for Tracked<'_, W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf).inspect_err(|_| self.failed = true)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush().inspect_err(|_| self.failed = true)
        }
    }
    let mut w = Tracked {
        inner: out,
        failed: false,
    };
    headerbody::copy_body(input, &mut w, start).map_err(|e| {
        if w.failed {
            InjectError::Write(e)
        } else {
            InjectError::Read(e)
        }
    })
}

/// qmail-inject as a library call: rewrite the message read from `input` and print it (`-n`)
/// or queue it. The sendmail wrapper and the other programs call this in process.
pub fn inject<R: Read>(opts: &InjectOptions, input: R) -> Result<(), InjectError> {
    if opts.print {
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(CHUNK, stdout.lock());
        prepare(opts, input, &mut out)?;
        return Ok(());
    }
    let mut file = tempfile::tempfile().map_err(InjectError::Write)?;
    let envelope = {
        let mut w = BufWriter::with_capacity(CHUNK, &mut file);
        prepare(opts, input, &mut w)?
    };
    let len = file.stream_position().map_err(InjectError::Write)?;
    file.seek(SeekFrom::Start(0)).map_err(InjectError::Write)?;
    match opts.env.get("QMAILQUEUE") {
        Some(program) => run_qmail_queue(
            opts.control.home(),
            OsStr::from_bytes(program),
            file,
            &envelope,
        ),
        None => crate::qmqpc::queue_file(&mut file, len, &envelope).map_err(|e| {
            let (permanent, text) = queue_reply(i32::from(e.code()), None);
            InjectError::Queue { text, permanent }
        }),
    }
}

/// Run `program` with the qmail-queue interface (qmail's `qmail_open`/`qmail_close`): the
/// message on fd 0, the envelope written to fd 1, a custom reply readable on fd 6; started in
/// the qmail home directory `home`, as qmail does. Also forward's way to `$QMAILQUEUE`.
pub(crate) fn run_qmail_queue(
    home: &std::path::Path,
    program: &OsStr,
    message: File,
    envelope: &QmailEnvelope,
) -> Result<(), InjectError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    if !home.is_dir() {
        let (permanent, text) = queue_reply(61, None);
        return Err(InjectError::Queue { text, permanent });
    }
    // Only what qmail-queue's format cannot carry: the queue program decides the rest (nullq's
    // qmail-qmqpc refuses what no QMQP server takes; a QMAILQUEUE program gets what qmail's
    // qmail-inject would give it).
    if let Some(why) = envelope.unencodable() {
        return Err(InjectError::Queue {
            text: why,
            permanent: true,
        });
    }
    let (err_read, err_write) = pipe().map_err(InjectError::QueueStart)?;
    let (env_read, env_write) = pipe().map_err(InjectError::QueueStart)?;
    let err_fd = err_write.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.current_dir(home)
        .stdin(Stdio::from(message))
        .stdout(Stdio::from(env_read));
    // SAFETY: the closure runs in the child between fork and exec and calls only dup2 and
    // fcntl, which are async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if err_fd == 6 {
                // Already in place: only the close-on-exec flag has to go.
                if libc::fcntl(6, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(err_fd, 6) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // Our copies of the child's ends go now, so that each pipe ends when the child is done.
    drop(cmd);
    drop(err_write);
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) => {
            // qmail forks first, so a program that cannot be executed is its child's exit 120.
            let (permanent, text) = queue_reply(120, None);
            return Err(InjectError::Queue { text, permanent });
        }
    };
    let flag_err = {
        let mut env = File::from(env_write);
        env.write_all(&envelope.encode()).is_err()
    };
    let mut custom = Vec::new();
    let _ = File::from(err_read).take(255).read_to_end(&mut custom);
    let status = child.wait().map_err(InjectError::QueueStart)?;
    let code = match status.code() {
        Some(code) => code,
        None => {
            return Err(InjectError::Queue {
                text: "qq crashed (#4.3.0)".to_owned(),
                permanent: false,
            });
        }
    };
    if code == 0 && !flag_err {
        return Ok(());
    }
    let (permanent, text) = queue_reply(code, Some(&custom));
    Err(InjectError::Queue { text, permanent })
}

/// A pipe whose both ends are closed on exec (qmail-queue's ends are put in place explicitly).
fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors were just created by pipe2 and belong to nobody else; each is
    // owned by exactly one OwnedFd from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `qmail-inject [-aAhHnN] [-f SENDER] [--] [ARG...]`: exit 0, 100 or 111.
pub fn main(args: &[OsString]) -> i32 {
    run(args, &[], io::stdin().lock())
}

/// Run qmail-inject in this process: `argv` is its command line, `changes` are applied to
/// (a snapshot of) the environment it sees, `input` is the message. Returns its exit code
/// (0, 100, 111), having printed its `fatal:` message on failure.
///
/// Used by sendmail itself, by `-bs` (one message per DATA), and by the small programs that
/// build a message (mailsubj). The process's own environment and fd 0 are left alone.
pub fn run(argv: &[OsString], changes: &[(&str, Option<OsString>)], input: impl Read) -> i32 {
    let mut env = Env::from_process();
    for (name, value) in changes {
        match value {
            Some(v) => env.set(name, v.as_bytes()),
            None => env.remove(name),
        };
    }
    let mut opts = InjectOptions::new(env);
    match opts.parse_args(argv).and_then(|()| inject(&opts, input)) {
        Ok(()) => 0,
        Err(e) => {
            let mut err = io::stderr().lock();
            let _ = err.write_all(&e.message());
            let _ = err.flush();
            e.exit_code()
        }
    }
}
