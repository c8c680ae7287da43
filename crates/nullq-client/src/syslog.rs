//! The client's log: one syslog line per message, so that a cron mail that failed on some host
//! leaves a trace there (`journalctl -t sendmail`, `/var/log/mail.log`).
//!
//! Each line is what became of one message: sent to which server with which answer, kept in
//! the fallback queue, or failed with the program's exit code. It is written as glibc's
//! syslog(3) writes it, `<PRI>Mmm dd hh:mm:ss PROGRAM[PID]: TEXT`, facility mail, to the
//! datagram socket [`SOCKET`]: one `sendto` on a non-blocking socket, no connection kept, no
//! thread, and every error ignored (a host without a syslog daemon, or a full socket buffer,
//! must not turn a sent message into a failure or slow injection down).
//!
//! `control/syslog` with the first line `off` (or `no`, `0`) turns it off; absent, or anything
//! else, it is on.

use std::os::unix::net::UnixDatagram;

use crate::control::ControlDir;

use crate::calendar::{self, Civil};

/// The local syslog socket, as glibc's syslog(3) uses it (journald and rsyslog listen there).
pub const SOCKET: &str = "/dev/log";

/// The control file that turns the log off.
pub const CONTROL: &str = "syslog";

/// syslog's facility `mail` (LOG_MAIL is 2 << 3).
const FACILITY_MAIL: u8 = 2;

/// The longest text sent: server answers are at most a kilobyte or so, and a runaway reason
/// must not make a datagram the daemon drops.
const MAX_TEXT: usize = 2048;

/// How bad a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// LOG_INFO: sent, or kept in the fallback queue.
    Info = 6,
    /// LOG_ERR: failed.
    Err = 3,
}

/// Whether `control/syslog` leaves the log on (an unreadable file leaves it on: the log is
/// how such a problem is found).
pub fn enabled(control: &ControlDir) -> bool {
    match control.line(CONTROL) {
        Ok(Some(value)) => !matches!(value.to_ascii_lowercase().as_str(), "off" | "no" | "0"),
        _ => true,
    }
}

/// The name the log line carries: the program's (argv\[0\]'s basename, or the word after
/// `nullq`, as the multi-call binary dispatches).
pub fn program_name() -> String {
    let mut args = std::env::args_os();
    let base = |a: std::ffi::OsString| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    match args.next().and_then(base) {
        Some(name) if name == "nullq" => args.next().and_then(base).unwrap_or(name),
        Some(name) => name,
        None => "nullq".to_owned(),
    }
}

/// `text` with every control character as `?`, for a terminal or a log: what a server answered
/// is not ours to trust (an escape sequence must not reach the operator's terminal).
pub fn printable(text: &str) -> String {
    text.chars().map(shown).collect()
}

/// A character as [`printable`] and the log lines show it.
fn shown(c: char) -> char {
    if c.is_control() {
        '?'
    } else {
        c
    }
}

/// The datagram for `text` at time `t` (local time, as glibc writes it):
/// `<PRI>Mmm dd hh:mm:ss PROGRAM[PID]: TEXT`. Control characters (a server's answer is not
/// ours to trust) become `?`.
pub fn format_line(severity: Severity, program: &str, pid: u32, t: Civil, text: &str) -> String {
    let month = calendar::MONTHS
        .get(t.month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    let mut line = format!(
        "<{}>{month} {:2} {:02}:{:02}:{:02} {program}[{pid}]: ",
        (FACILITY_MAIL << 3) | severity as u8,
        t.day,
        t.hour,
        t.minute,
        t.second
    );
    for (i, c) in text.char_indices() {
        if i >= MAX_TEXT {
            line.push_str("...");
            break;
        }
        line.push(shown(c));
    }
    line
}

/// Write one line to the system log, unless `enabled` is false. Never fails, never blocks.
pub fn log(enabled: bool, severity: Severity, text: &str) {
    if !enabled {
        return;
    }
    let line = format_line(
        severity,
        &program_name(),
        std::process::id(),
        calendar::local(calendar::now()).0,
        text,
    );
    if let Ok(socket) = UnixDatagram::unbound() {
        if socket.set_nonblocking(true).is_ok() {
            let _ = socket.send_to(line.as_bytes(), SOCKET);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_glibcs() {
        let t = calendar::utc(1_733_000_000);
        let line = format_line(Severity::Info, "sendmail", 42, t, "sent\nX: y");
        assert_eq!(line, "<22>Nov 30 20:53:20 sendmail[42]: sent?X: y");
        let line = format_line(Severity::Err, "qmail-qmqpc", 7, calendar::utc(0), "failed");
        assert_eq!(line, "<19>Jan  1 00:00:00 qmail-qmqpc[7]: failed");
        let long = "x".repeat(5000);
        let line = format_line(Severity::Err, "p", 1, calendar::utc(0), &long);
        assert!(
            line.len() < 2100 && line.ends_with("x..."),
            "{}",
            line.len()
        );
    }

    #[test]
    fn control_file_turns_it_off() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("control")).unwrap();
        let control = ControlDir::new(home.path());
        assert!(enabled(&control));
        for (value, on) in [
            ("off\n", false),
            ("No\n", false),
            ("0", false),
            ("on\n", true),
        ] {
            std::fs::write(control.path(CONTROL), value).unwrap();
            assert_eq!(enabled(&control), on, "{value:?}");
        }
    }
}
