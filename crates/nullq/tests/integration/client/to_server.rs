//! The whole path on one machine: real MUAs (mutt, bsd-mailx), Pine's and cron's sendmail calls,
//! through nullq's sendmail and qmail-qmqpc, into a real `nullq serve`; each message is checked
//! in the server's spool (envelope, header, body, our Received lines).

use std::time::Duration;

use nullq_spool::Spool;

use crate::support::host::{mailx, mutt, run, Host};
use crate::support::server::Server;
use crate::support::wait_for;

const LIMIT: Duration = Duration::from_secs(60);

/// One queued message: (sender, recipients, message bytes).
type Queued = (Vec<u8>, Vec<Vec<u8>>, String);

fn spooled(server: &Server) -> Vec<Queued> {
    let spool = Spool::attach(&server.data).expect("attach");
    let mut out = Vec::new();
    for id in spool.list().expect("list") {
        let loaded = spool.load(&id).expect("load");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut spool.message(&id).expect("message"), &mut bytes)
            .expect("read");
        out.push((
            loaded.envelope.sender,
            loaded.envelope.recipients,
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    out
}

/// A host whose qmqpservers names a receive-only `nullq serve`.
fn setup() -> (Host, Server) {
    let server = Server::start(&["--deliver", "none"]);
    let host = Host::new();
    host.servers(&[server.addr]);
    (host, server)
}

fn one_message(server: &Server) -> Queued {
    assert!(
        wait_for(Duration::from_secs(30), || !spooled(server).is_empty()),
        "nothing arrived"
    );
    let mut all = spooled(server);
    assert_eq!(all.len(), 1);
    let m = all.remove(0);
    assert!(m.2.starts_with("Received: (nullq "), "{}", m.2);
    assert!(
        m.2.contains(" (127.0.0.1)\n  by mx.test with QMQP; "),
        "{}",
        m.2
    );
    m
}

#[test]
fn pine_and_cron_calls_arrive_in_the_spool() {
    let (host, server) = setup();
    // Pine: sendmail-path=/usr/lib/sendmail -oem -oi -t
    let mut pine = host.cmd("sendmail");
    pine.args(["-oem", "-oi", "-t"]);
    let out = run(
        pine,
        b"To: postmaster\nSubject: from pine\n\nhello\n",
        LIMIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sender, rcpts, text) = one_message(&server);
    assert_eq!(sender, b"jason@example.net");
    assert_eq!(rcpts, vec![b"postmaster@example.net".to_vec()]);
    assert!(text.contains("\nTo: postmaster@example.net\n"), "{text}");
    assert!(
        text.contains("\nSubject: from pine\n") && text.ends_with("\n\nhello\n"),
        "{text}"
    );

    // cron: sendmail -FCronDaemon -i -B8BITMIME -oem root
    let (host, server) = setup();
    let mut cron = host.cmd("sendmail");
    cron.args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
    let out = run(cron, b"Subject: Cron <root@host1> run-parts\n\nok\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, rcpts, text) = one_message(&server);
    assert_eq!(rcpts, vec![b"root@example.net".to_vec()]);
    assert!(
        text.contains("From: \"CronDaemon\" <jason@example.net>"),
        "{text}"
    );
}

#[test]
fn mutt_and_mailx_arrive_in_the_spool() {
    let (host, server) = setup();
    let mutt = mutt(&host, "from mutt", "bob@example.com");
    let out = run(mutt, b"hello from mutt\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sender, rcpts, text) = one_message(&server);
    assert_eq!(sender, b"jason@example.net");
    assert_eq!(rcpts, vec![b"bob@example.com".to_vec()]);
    assert!(text.contains("\nSubject: from mutt\n"), "{text}");
    assert!(
        text.contains("jason@example.net") && text.contains("hello from mutt"),
        "{text}"
    );

    let (host, server) = setup();
    let mailx = mailx(&host, "from mailx", "bob");
    let out = run(mailx, b"hello from mailx\n", LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sender, rcpts, text) = one_message(&server);
    assert_eq!(sender, b"jason@example.net");
    assert_eq!(rcpts, vec![b"bob@example.net".to_vec()]);
    assert!(
        text.contains("\nSubject: from mailx\n") && text.contains("hello from mailx"),
        "{text}"
    );
}
