//! `sendmail -bs`: SMTP on stdin/stdout (RFC 5321), for programs that submit mail that way.
//!
//! This module owns the small SMTP server of the null client: EHLO/HELO, MAIL, RCPT, DATA (with
//! dot-unstuffing, RFC 5321 4.5.2, and CRLF turned into LF for qmail), RSET, NOOP, VRFY, HELP,
//! QUIT. qmail's sendmail runs qmail-smtpd here; a mini-qmail host has none, so each message is
//! injected through the same path as `sendmail` itself: qmail-inject `-a -f SENDER -- RCPTS`, so
//! the envelope is the one the client gave and the header is completed and rewritten as for any
//! other message. Reply texts follow qmail-smtpd's.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;

use nullq_proto::envelope::refused_address;

use crate::control::ControlDir;

/// The longest command line read (RFC 5321 says 512 octets; be generous, but bounded).
pub const MAX_COMMAND: u64 = 4096;
/// Data is read in lines of at most this many bytes (longer lines pass through in pieces).
const MAX_DATA_CHUNK: u64 = 64 * 1024;

/// The result of injecting one message: qmail-inject's exit code.
pub type InjectCode = i32;

/// The envelope of one SMTP transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// MAIL FROM, without the angle brackets (empty: the null sender).
    pub sender: Option<Vec<u8>>,
    /// RCPT TO addresses, in order.
    pub recipients: Vec<Vec<u8>>,
}

/// How the session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client said QUIT.
    Quit,
    /// Input ended outside DATA.
    Eof,
}

/// Serve one SMTP session: read commands from `input`, answer on `output`, and hand every
/// complete message (in a temporary file, LF line ends) to `inject`.
pub fn serve(
    input: &mut impl BufRead,
    output: &mut impl Write,
    hostname: &str,
    inject: &mut dyn FnMut(&Transaction, &mut File) -> InjectCode,
) -> io::Result<End> {
    reply(output, &format!("220 {hostname} ESMTP nullq sendmail -bs"))?;
    let mut tx = Transaction::default();
    loop {
        let mut line = Vec::new();
        input.take(MAX_COMMAND).read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Ok(End::Eof);
        }
        if !line.ends_with(b"\n") {
            // Over-long: swallow the rest of it, then refuse it.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                input.take(MAX_COMMAND).read_until(b'\n', &mut rest)?;
                if rest.is_empty() || rest.ends_with(b"\n") {
                    break;
                }
            }
            reply(output, "500 line too long (#5.5.2)")?;
            continue;
        }
        let text = trim_eol(&line);
        let (verb, arg) = match text.iter().position(|&b| b == b' ') {
            Some(sp) => (&text[..sp], &text[sp + 1..]),
            None => (text, &b""[..]),
        };
        match verb.to_ascii_uppercase().as_slice() {
            b"HELO" => reply(output, &format!("250 {hostname}"))?,
            b"EHLO" => reply(
                output,
                &format!("250-{hostname}\r\n250-PIPELINING\r\n250 8BITMIME"),
            )?,
            b"NOOP" => reply(output, "250 ok")?,
            b"RSET" => {
                tx = Transaction::default();
                reply(output, "250 flushed")?
            }
            b"QUIT" => {
                reply(output, &format!("221 {hostname}"))?;
                return Ok(End::Quit);
            }
            b"VRFY" => reply(output, "252 send some mail, i'll try my best")?,
            b"HELP" => reply(
                output,
                "214 nullq sendmail -bs: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT",
            )?,
            b"MAIL" => {
                if tx.sender.is_some() {
                    reply(output, "503 nested MAIL command (#5.5.1)")?;
                } else {
                    match path_after(arg, b"FROM:") {
                        // Refused now, not at the end of the data with the whole transaction.
                        Some(addr) if refused_address(&addr).is_some() => {
                            refuse_address(output, &addr)?
                        }
                        Some(addr) => {
                            tx.sender = Some(addr);
                            reply(output, "250 ok")?
                        }
                        None => reply(output, "501 syntax: MAIL FROM:<address> (#5.5.4)")?,
                    }
                }
            }
            b"RCPT" => {
                if tx.sender.is_none() {
                    reply(output, "503 MAIL first (#5.5.1)")?;
                } else {
                    match path_after(arg, b"TO:") {
                        Some(addr) if refused_address(&addr).is_some() => {
                            refuse_address(output, &addr)?
                        }
                        Some(addr) if !addr.is_empty() => {
                            tx.recipients.push(addr);
                            reply(output, "250 ok")?
                        }
                        _ => reply(output, "501 syntax: RCPT TO:<address> (#5.5.4)")?,
                    }
                }
            }
            b"DATA" => {
                if tx.sender.is_none() {
                    reply(output, "503 MAIL first (#5.5.1)")?;
                    continue;
                }
                if tx.recipients.is_empty() {
                    reply(output, "503 RCPT first (#5.5.1)")?;
                    continue;
                }
                reply(output, "354 go ahead")?;
                let mut file = tempfile::tempfile()?;
                if !read_data(input, &mut file)? {
                    // EOF inside DATA: the message is incomplete and must not be sent.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "input ended inside DATA",
                    ));
                }
                file.flush()?;
                file.seek(SeekFrom::Start(0))?;
                let code = inject(&tx, &mut file);
                tx = Transaction::default();
                match code {
                    0 => reply(output, "250 ok")?,
                    100 => reply(
                        output,
                        "554 permanent problem, see sendmail's error output (#5.3.0)",
                    )?,
                    _ => reply(
                        output,
                        "451 temporary problem, see sendmail's error output (#4.3.0)",
                    )?,
                }
            }
            _ => reply(output, "502 unimplemented (#5.5.1)")?,
        }
    }
}

/// `553` for an address the client would refuse at the end of the data anyway
/// ([`refused_address`]), so that the rest of the transaction stands.
fn refuse_address(output: &mut impl Write, addr: &[u8]) -> io::Result<()> {
    let why = refused_address(addr).unwrap_or_default();
    reply(
        output,
        &format!(
            "553 sorry, I can't take <{}>: {why} (#5.1.3)",
            crate::syslog::printable(&String::from_utf8_lossy(addr))
        ),
    )
}

fn reply(output: &mut impl Write, text: &str) -> io::Result<()> {
    output.write_all(text.as_bytes())?;
    output.write_all(b"\r\n")?;
    output.flush()
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The address of `FROM:<addr> PARAMS` / `TO:<addr> PARAMS`: angle brackets removed, a source
/// route (`<@a,@b:user@host>`) dropped, ESMTP parameters ignored. `None` if the keyword is missing.
pub fn path_after(arg: &[u8], keyword: &[u8]) -> Option<Vec<u8>> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = &arg[keyword.len()..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let addr: &[u8] = if let Some(inner) = rest.strip_prefix(b"<") {
        let end = inner.iter().position(|&b| b == b'>')?;
        &inner[..end]
    } else {
        rest.split(|&b| b == b' ').next().unwrap_or(b"")
    };
    let addr = if addr.starts_with(b"@") {
        match addr.iter().position(|&b| b == b':') {
            Some(colon) => &addr[colon + 1..],
            None => addr,
        }
    } else {
        addr
    };
    Some(addr.to_vec())
}

/// Copy the DATA section to `out`: stop at the lone dot, remove one leading dot from other lines,
/// turn CRLF into LF. `Ok(false)` when the input ended before the dot.
fn read_data(input: &mut impl BufRead, out: &mut impl Write) -> io::Result<bool> {
    let mut at_line_start = true;
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        input.take(MAX_DATA_CHUNK).read_until(b'\n', &mut chunk)?;
        if chunk.is_empty() {
            return Ok(false);
        }
        let complete = chunk.ends_with(b"\n");
        let mut piece: &[u8] = &chunk;
        if at_line_start {
            if complete && trim_eol(piece) == b"." {
                return Ok(true);
            }
            if piece.starts_with(b".") {
                piece = &piece[1..];
            }
        }
        if complete {
            out.write_all(trim_eol(piece))?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(piece)?;
        }
        at_line_start = complete;
    }
}

/// The `-bs` session on this process's stdin and stdout, injecting with qmail-inject in-process.
pub fn serve_stdio() -> io::Result<()> {
    let control = ControlDir::from_env();
    let hostname = control
        .me()
        .ok()
        .flatten()
        .map(|(me, _)| String::from_utf8_lossy(&me).trim().to_owned())
        .filter(|me| !me.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut output = stdout.lock();
    let mut inject = |tx: &Transaction, file: &mut File| -> InjectCode {
        let mut argv: Vec<OsString> = vec!["qmail-inject".into(), "-a".into(), "-f".into()];
        argv.push(OsString::from_vec(tx.sender.clone().unwrap_or_default()));
        argv.push("--".into());
        argv.extend(tx.recipients.iter().map(|r| OsString::from_vec(r.clone())));
        crate::qmail_inject::run(&argv, &[], &mut *file)
    };
    serve(&mut input, &mut output, &hostname, &mut inject).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(
        input: &str,
        code: InjectCode,
    ) -> (String, Vec<(Transaction, String)>, io::Result<End>) {
        let mut out = Vec::new();
        let mut got = Vec::new();
        let mut inject = |tx: &Transaction, f: &mut File| {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            got.push((tx.clone(), s));
            code
        };
        let end = serve(
            &mut input.as_bytes(),
            &mut out,
            "host1.example.net",
            &mut inject,
        );
        (String::from_utf8_lossy(&out).into_owned(), got, end)
    }

    #[test]
    fn a_whole_session() {
        let (out, got, end) = session(
            "EHLO client\r\nMAIL FROM:<jason@example.net> SIZE=20\r\nRCPT TO:<bob@example.net>\r\n\
             RCPT TO:<@relay:eve@example.net>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n",
            0,
        );
        assert_eq!(end.ok(), Some(End::Quit));
        assert_eq!(
            out,
            "220 host1.example.net ESMTP nullq sendmail -bs\r\n250-host1.example.net\r\n250-PIPELINING\r\n\
             250 8BITMIME\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n250 ok\r\n221 host1.example.net\r\n"
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.sender.as_deref(), Some(&b"jason@example.net"[..]));
        assert_eq!(
            got[0].0.recipients,
            vec![b"bob@example.net".to_vec(), b"eve@example.net".to_vec()]
        );
        assert_eq!(got[0].1, "Subject: hi\n\n.leading dot\n");
    }

    /// An address the client would refuse gets 553 at its MAIL or RCPT; the transaction goes
    /// on with the others, and no control character is echoed back.
    #[test]
    fn an_address_with_a_control_character_gets_553_at_once() {
        let (out, got, _) = session(
            "HELO x\r\nMAIL FROM:<a\x1b]0;x\x07@example.net>\r\nMAIL FROM:<jason@example.net>\r\n\
             RCPT TO:<bob\t@example.net>\r\nRCPT TO:<amy@example.net>\r\nDATA\r\nSubject: hi\r\n\r\nhi\r\n.\r\nQUIT\r\n",
            0,
        );
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines[2].starts_with("553 sorry, I can't take <a?]0;x?@example.net>: address contains a control character"), "{out:?}");
        assert_eq!(lines[3], "250 ok", "{out:?}");
        assert!(
            lines[4].starts_with("553 ") && lines[4].contains("bob?@example.net"),
            "{out:?}"
        );
        assert_eq!(
            &lines[5..8],
            ["250 ok", "354 go ahead", "250 ok"],
            "{out:?}"
        );
        assert!(
            !out.bytes().any(|b| b == 0x1b || b == 0x07 || b == b'\t'),
            "{out:?}"
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.recipients, vec![b"amy@example.net".to_vec()]);
    }

    #[test]
    fn order_is_enforced_and_rset_clears() {
        let (out, got, _) = session(
            "HELO x\nRCPT TO:<bob>\nDATA\nMAIL FROM:<>\nMAIL FROM:<a>\nDATA\nRSET\nRCPT TO:<bob>\nNOOP\nFOO\nQUIT\n",
            0,
        );
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(
            &lines[1..11],
            &[
                "250 host1.example.net",
                "503 MAIL first (#5.5.1)",
                "503 MAIL first (#5.5.1)",
                "250 ok",
                "503 nested MAIL command (#5.5.1)",
                "503 RCPT first (#5.5.1)",
                "250 flushed",
                "503 MAIL first (#5.5.1)",
                "250 ok",
                "502 unimplemented (#5.5.1)",
            ]
        );
        assert!(got.is_empty());
    }

    #[test]
    fn null_sender_two_messages_and_failures() {
        let (out, got, end) = session(
            "MAIL FROM:<>\nRCPT TO:<bob>\nDATA\nbody\n.\nMAIL FROM:<a@b>\nRCPT TO:<c>\nDATA\nx\n.\n",
            111,
        );
        assert_eq!(end.ok(), Some(End::Eof));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.sender.as_deref(), Some(&b""[..]));
        assert_eq!(got[1].1, "x\n");
        assert_eq!(out.matches("451 ").count(), 2);
        let (out, _, _) = session("MAIL FROM:<a>\nRCPT TO:<c>\nDATA\nx\n.\n", 100);
        assert!(out.contains("554 "));
    }

    #[test]
    fn eof_inside_data_sends_nothing() {
        let (_, got, end) = session("MAIL FROM:<a>\nRCPT TO:<c>\nDATA\nno end", 0);
        assert!(got.is_empty());
        assert!(end.is_err());
    }

    #[test]
    fn long_lines() {
        let long = "x".repeat(MAX_DATA_CHUNK as usize * 2 + 10);
        let input = format!("MAIL FROM:<a>\nRCPT TO:<c>\nDATA\n{long}\n.\n");
        let (_, got, _) = session(&input, 0);
        assert_eq!(got[0].1, format!("{long}\n"));
        let (out, _, _) = session(&format!("NOOP {}\nNOOP\n", "y".repeat(10_000)), 0);
        assert!(out.contains("500 line too long"));
        assert!(out.ends_with("250 ok\r\n"));
    }

    #[test]
    fn paths() {
        assert_eq!(path_after(b"FROM:<a@b>", b"FROM:"), Some(b"a@b".to_vec()));
        assert_eq!(
            path_after(b"from: <a@b> BODY=8BITMIME", b"FROM:"),
            Some(b"a@b".to_vec())
        );
        assert_eq!(
            path_after(b"FROM:a@b SIZE=1", b"FROM:"),
            Some(b"a@b".to_vec())
        );
        assert_eq!(path_after(b"FROM:<>", b"FROM:"), Some(Vec::new()));
        assert_eq!(path_after(b"TO:<@x,@y:u@h>", b"TO:"), Some(b"u@h".to_vec()));
        assert_eq!(path_after(b"FRM:<a>", b"FROM:"), None);
        assert_eq!(path_after(b"FROM:<a", b"FROM:"), None);
    }
}
