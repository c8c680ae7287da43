//! sendmail run as the real binary through its symlinks: the calls Pine, cron, mutt and
//! bsd-mailx make, exit codes for each failure, mailq, newaliases, -bs, and the usage line.
//! Messages are checked where they arrive: a QMQP server in the test that records them.

use std::process::Command;
use std::time::Duration;

use crate::support::host::*;
use crate::support::qmqp::{Answer, QmqpServer};
use crate::support::server::Server;
use crate::support::wait_for;
use crate::support::RefusedPort;

const LIMIT: Duration = Duration::from_secs(60);

fn sendmail(host: &Host, args: &[&str], input: &str) -> (i32, String, String) {
    let mut cmd = host.cmd("sendmail");
    cmd.args(args);
    let out = run(cmd, input.as_bytes(), LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
}

fn setup() -> (Host, QmqpServer) {
    let host = Host::new();
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    (host, server)
}

#[test]
fn pine_sendmail_oem_oi_t() {
    let (host, server) = setup();
    let (code, _, err) = sendmail(
        &host,
        &["-oem", "-oi", "-t"],
        "To: bob\nSubject: hi\n\nbody\n",
    );
    assert_eq!(code, 0, "{err}");
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, vec![b"bob@example.net".to_vec()]);
    assert_eq!(got[0].sender, b"jason@example.net");
    assert_eq!(
        header(&got[0].message, "To").as_deref(),
        Some("bob@example.net")
    );
    assert_eq!(header(&got[0].message, "Subject").as_deref(), Some("hi"));
    assert!(String::from_utf8_lossy(&got[0].message).ends_with("\n\nbody\n"));
}

#[test]
fn cron_sendmail_fcrondaemon() {
    let (host, server) = setup();
    let (code, _, err) = sendmail(
        &host,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        "Subject: Cron <root@host1> run-parts /etc/cron.daily\n\noutput\n",
    );
    assert_eq!(code, 0, "{err}");
    let got = server.received();
    assert_eq!(got[0].recipients, vec![b"root@example.net".to_vec()]);
    let from = header(&got[0].message, "From").unwrap_or_default();
    assert!(from.contains("CronDaemon"), "{from}");
    assert!(from.contains("jason@example.net"), "{from}");
}

#[test]
fn without_t_the_header_recipients_are_not_used() {
    let (host, server) = setup();
    let (code, _, err) = sendmail(&host, &["-oi", "eve"], "To: bob\nSubject: hi\n\nbody\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        server.received()[0].recipients,
        vec![b"eve@example.net".to_vec()]
    );
    let (code, _, err) = sendmail(&host, &["-t", "eve"], "To: bob\n\nbody\n");
    assert_eq!(code, 0, "{err}");
    let mut r = server.received()[1].recipients.clone();
    r.sort();
    assert_eq!(
        r,
        vec![b"bob@example.net".to_vec(), b"eve@example.net".to_vec()]
    );
}

#[test]
fn f_and_r_set_the_envelope_sender() {
    let (host, server) = setup();
    for flag in ["-f", "-r"] {
        let (code, _, err) = sendmail(
            &host,
            &[flag, "cron@example.org", "bob"],
            "Subject: x\n\ny\n",
        );
        assert_eq!(code, 0, "{flag}: {err}");
    }
    let (code, _, err) = sendmail(&host, &["-fcron@example.org", "bob"], "Subject: x\n\ny\n");
    assert_eq!(code, 0, "{err}");
    for got in server.received() {
        assert_eq!(got.sender, b"cron@example.org");
        let from = header(&got.message, "From").unwrap_or_default();
        assert!(
            from.contains("cron@example.org"),
            "the From field follows -f: {from}"
        );
    }
}

#[test]
fn permanent_refusal_is_100_temporary_is_111() {
    let host = Host::new();
    let d = QmqpServer::start(Answer::PermFail);
    host.servers(&[d.addr]);
    let (code, _, err) = sendmail(&host, &["bob"], "Subject: x\n\ny\n");
    assert_eq!(code, 100, "{err}");
    let z = QmqpServer::start(Answer::TempFail);
    let down = RefusedPort::new();
    host.servers(&[z.addr, down.addr]);
    let (code, _, err) = sendmail(&host, &["bob"], "Subject: x\n\ny\n");
    assert_eq!(code, 111, "{err}");
    // Under a plain file, so that not even root can create it.
    std::fs::write(host.dir.path().join("plain"), b"").expect("file");
    host.control(
        "fallbackqueue",
        &format!("{}/plain/fallback", host.dir.path().display()),
    );
    let (code, _, err) = sendmail(&host, &["bob"], "Subject: x\n\ny\n");
    assert_eq!(
        code, 111,
        "an unusable fallback queue changes nothing: {err}"
    );
}

#[test]
fn fallback_queue_then_mailq_then_flush() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let (code, _, err) = sendmail(&host, &["-oi", "-t"], "To: bob\nSubject: later\n\nbody\n");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("fallback"), "{err}");
    for args in [&["-bp"][..], &[]] {
        let mut cmd = host.cmd(if args.is_empty() { "mailq" } else { "sendmail" });
        cmd.args(args);
        let out = run(cmd, b"", LIMIT);
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert!(listing.contains("<jason@example.net>"), "{listing}");
        assert!(listing.contains("\tremote\tbob@example.net"), "{listing}");
    }
    let server = QmqpServer::start(Answer::Accept);
    host.servers(&[server.addr]);
    let mut flush = Command::new(env!("CARGO_BIN_EXE_nullq"));
    flush.arg("flush").env("NULLQ_HOME", host.home());
    let out = run(flush, b"", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        header(&server.received()[0].message, "Subject").as_deref(),
        Some("later")
    );
}

#[test]
fn unknown_option_prints_qmails_usage_and_exits_100() {
    let (host, server) = setup();
    let (code, _, err) = sendmail(&host, &["-q", "bob"], "x\n");
    assert_eq!(code, 100);
    assert_eq!(
        err,
        "sendmail: illegal option -- q\n\
         sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"
    );
    let (code, _, err) = sendmail(&host, &["-bd"], "");
    assert_eq!(code, 100);
    assert!(err.starts_with("sendmail: usage:"), "{err}");
    assert_eq!(server.connections(), 0);
}

/// Debian's maintainer scripts run newaliases: it succeeds, silently, and sends nothing (as
/// nullmailer's and msmtp-mta's). `sendmail -bi` is the same program.
#[test]
fn newaliases_is_a_silent_no_op() {
    let (host, server) = setup();
    let out = run(host.cmd("newaliases"), b"", LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let (code, out, err) = sendmail(&host, &["-bi"], "");
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, _, err) = sendmail(&host, &["-oi", "-bi", "bob"], "To: bob\n\nnot sent\n");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(server.connections(), 0);
}

#[test]
fn missing_home_is_111() {
    let (host, _server) = setup();
    let mut cmd = host.cmd("sendmail");
    cmd.arg("bob")
        .env("NULLQ_HOME", host.dir.path().join("none"));
    let out = run(cmd, b"x\n", LIMIT);
    assert_eq!(out.status.code(), Some(111));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sendmail: fatal: unable to switch to qmail home directory\n"
    );
}

#[test]
fn bs_speaks_smtp_and_injects() {
    let (host, server) = setup();
    let session = "EHLO client\r\nMAIL FROM:<cron@example.org>\r\nRCPT TO:<bob>\r\nRCPT TO:<eve@example.com>\r\n\
                   DATA\r\nSubject: via smtp\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n";
    let (code, out, err) = sendmail(&host, &["-bs"], session);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("220 host1.example.net"), "{out}");
    assert!(out.contains("354 go ahead\r\n250 ok\r\n221 "), "{out}");
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, b"cron@example.org");
    assert_eq!(
        got[0].recipients,
        vec![b"bob@example.net".to_vec(), b"eve@example.com".to_vec()]
    );
    let text = String::from_utf8_lossy(&got[0].message).into_owned();
    assert!(text.contains("Subject: via smtp\n"), "{text}");
    assert!(text.ends_with("\n\n.dot\nline\n"), "{text}");
    assert!(!text.contains('\r'), "{text}");
}

#[test]
fn bs_reports_a_refused_message() {
    let host = Host::new();
    let d = QmqpServer::start(Answer::PermFail);
    host.servers(&[d.addr]);
    let (_, out, _) = sendmail(
        &host,
        &["-bs"],
        "HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<bob>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert!(out.contains("\r\n554 "), "{out}");
}

#[test]
fn mutt_sends_through_our_sendmail() {
    let (host, server) = setup();
    let cmd = mutt(&host, "from mutt", "bob@example.com");
    let out = run(cmd, b"hello from mutt\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, vec![b"bob@example.com".to_vec()]);
    assert_eq!(
        header(&got[0].message, "Subject").as_deref(),
        Some("from mutt")
    );
    let from = header(&got[0].message, "From").unwrap_or_default();
    assert!(from.contains("jason@example.net"), "{from}");
    assert!(String::from_utf8_lossy(&got[0].message).contains("hello from mutt"));
}

#[test]
fn bsd_mailx_sends_through_our_sendmail() {
    let (host, server) = setup();
    let cmd = mailx(&host, "from mailx", "bob");
    let out = run(cmd, b"hello from mailx\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mailx forks sendmail and may exit first: wait (bounded) for the message.
    assert!(wait_for(Duration::from_secs(30), || !server
        .received()
        .is_empty()));
    let got = server.received();
    assert_eq!(got[0].recipients, vec![b"bob@example.net".to_vec()]);
    assert_eq!(
        header(&got[0].message, "Subject").as_deref(),
        Some("from mailx")
    );
    assert_eq!(got[0].sender, b"jason@example.net");
    assert!(String::from_utf8_lossy(&got[0].message).contains("hello from mailx"));
}

#[test]
fn sendmail_with_a_message_over_databytes_exits_100_and_nothing_goes_to_the_fallback_queue() {
    let host = Host::new();
    host.control("fallbackqueue", "fallback");
    let new = host.home().join("fallback/new");
    // A small message, queued while every server is down.
    let down = RefusedPort::new();
    host.servers(&[down.addr]);
    let (code, _, err) = sendmail(&host, &["bob"], "Subject: small\n\nsmall\n");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("kept in the fallback queue"), "{err}");
    let waiting = crate::support::files(&new);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    // The real server comes up, with a size limit the next message is far over: over the
    // largest request it reads in any case (databytes plus the largest envelope, about 1 MB)
    // and more than the socket buffers hold.
    let server = Server::start(&["--deliver", "none", "--databytes", "1000"]);
    host.servers(&[server.addr]);
    let mut big = String::from("Subject: big\n\n");
    big.extend(std::iter::repeat_n("x".repeat(99) + "\n", 160_000));
    let (code, _, err) = sendmail(&host, &["bob"], &big);
    assert_eq!(code, 100, "{err}");
    assert!(err.contains("over the size limit of 1000 bytes"), "{err}");
    assert_eq!(
        crate::support::files(&new),
        waiting,
        "the refused message is not queued; the small one still waits"
    );
    assert!(crate::support::files(&host.home().join("fallback/failed")).is_empty());
    assert!(server.queued().is_empty());
    // The next flush delivers the small one, and the fallback queue is empty.
    let mut flush = Command::new(env!("CARGO_BIN_EXE_nullq"));
    flush.arg("flush").env("NULLQ_HOME", host.home());
    let out = run(flush, b"", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued = server.queued();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let spooled = std::fs::read(&queued[0]).expect("read the spooled message");
    assert!(
        String::from_utf8_lossy(&spooled).contains("Subject: small"),
        "{}",
        String::from_utf8_lossy(&spooled)
    );
    assert!(crate::support::files(&new).is_empty());
    assert!(crate::support::files(&host.home().join("fallback/failed")).is_empty());
}
