//! How `nullq serve` is started: embedded defaults in a fresh directory (the README's first
//! command), IPv6 listeners, a TOML file overridden by flags, and dropping root after binding.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use nullq_proto::qmqp::encode_request;

use crate::support::qmqp::{decode, exchange, qmqp_source, Recorder};
use crate::support::server::Server;
use crate::support::{files, nullq, require_root, run_bounded, wait_for};

const T: Duration = Duration::from_secs(60);

/// The README's first command, on embedded defaults: 127.0.0.1:6628 and ./nullq-data/.
/// (The one test that uses the default port.)
#[test]
fn embedded_defaults_take_500_messages_from_qmqp_source() {
    let cwd = tempfile::tempdir().expect("tmp");
    let addr: SocketAddr = "127.0.0.1:6628".parse().expect("addr");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "something already listens on 127.0.0.1:6628; stop it to run this test"
    );
    let mut cmd = Command::new(nullq());
    cmd.arg("serve").current_dir(cwd.path());
    let data = cwd.path().join("nullq-data");
    let server = Server::launch(cmd, &data, &cwd.path().join("log"));
    assert_eq!(server.addr, addr, "the embedded default address");
    // qmqp-source talks to 6628 through a recorder, so the test knows every byte it sent.
    let recorder = Recorder::start(addr);
    let (status, err) = qmqp_source(recorder.addr, &["-s", "10", "-m", "500"]);
    assert_eq!(status, Some(0), "{err}");
    let exchanges = recorder.take(T);
    assert_eq!(exchanges.len(), 500);
    let mut sent = std::collections::HashSet::new();
    for ex in &exchanges {
        assert!(
            ex.response.windows(4).any(|w| w == b":Kok"),
            "every answer is K"
        );
        sent.insert(decode(&ex.request).0);
    }
    // Delivery to the default Maildir empties the queue; once it is empty, every message is
    // in the Maildir and nothing moves any more, so the count is exact.
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "the queue did not empty; log:\n{}",
        server.log_text()
    );
    let stored: Vec<Vec<u8>> = ["delivered/new", "delivered/cur"]
        .iter()
        .flat_map(|d| files(&data.join(d)))
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    assert_eq!(stored.len(), 500, "messages delivered under ./nullq-data");
    for m in &stored {
        // From our Received lines on, the file is those two fields and the message, byte for byte
        // (a delivered copy has Return-Path and Delivered-To above them).
        let at = m
            .windows(16)
            .position(|w| w == b"Received: (nullq")
            .unwrap_or_else(|| panic!("no Received line in {:.300}", String::from_utf8_lossy(m)));
        let rest = &m[at..];
        let text = String::from_utf8_lossy(rest);
        assert!(
            text.contains(" with QMQP; "),
            "no QMQP Received line in {text:.300}"
        );
        let lines: Vec<&[u8]> = rest.splitn(4, |&b| b == b'\n').collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].starts_with(b"  by ") && lines[2].ends_with(b" -0000"));
        assert!(
            sent.contains(lines[3]),
            "stored message is not one that was sent"
        );
    }
}

#[test]
fn listens_on_ipv6_loopback_too() {
    let server = Server::start(&["--deliver", "none", "--listen", "[::1]:0"]);
    let addr6 = server.addrs[1];
    assert!(
        addr6.is_ipv6(),
        "the second listener is IPv6: {:?}",
        server.addrs
    );
    let request = encode_request(
        b"Subject: v6\n\n",
        b"a@example.net",
        &[b"b@example.net".to_vec()],
    );
    for addr in [server.addr, addr6] {
        let a = String::from_utf8_lossy(&exchange(addr, &request, T)).into_owned();
        assert!(a.contains(":Kok"), "{addr}: {a}");
    }
    let stored = std::fs::read(&server.queued()[1]).unwrap_or_default();
    let both: Vec<String> = server
        .queued()
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect();
    assert!(
        both.iter().any(|t| t.contains("(::1)")),
        "an IPv6 client is named in Received: {both:?}"
    );
    assert!(!stored.is_empty());
}

#[test]
fn the_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("nullq.toml");
    std::fs::write(
        &config,
        "hostname = \"from-config.test\"\n[limits]\ndatabytes = 100\nmax_recipients = 5\n",
    )
    .expect("write config");
    // --databytes overrides the file's 100; max_recipients stays from the file.
    let server = Server::start(&[
        "--deliver",
        "none",
        "--config",
        config.to_str().expect("utf8"),
        "--databytes",
        "300",
    ]);
    let ok = encode_request(&[b'x'; 200], b"a@example.net", &[b"b@example.net".to_vec()]);
    let a = String::from_utf8_lossy(&exchange(server.addr, &ok, T)).into_owned();
    assert!(a.contains(":Kok"), "{a}");
    let rcpts: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("r{i}@example.net").into_bytes())
        .collect();
    let many = encode_request(b"x", b"a@example.net", &rcpts);
    let a = String::from_utf8_lossy(&exchange(server.addr, &many, T)).into_owned();
    assert!(a.contains("too many recipients (the limit is 5)"), "{a}");

    // --print-config shows the effective values; a bad key is refused with its line.
    let (status, out, _) = run_bounded(
        Command::new(nullq())
            .args(["serve", "--print-config", "--databytes", "300", "--config"])
            .arg(&config),
        T,
    );
    assert_eq!(status, Some(0));
    assert!(
        out.contains("databytes = 300") && out.contains("max_recipients = 5"),
        "{out}"
    );
    std::fs::write(&config, "[limits]\ndatabyte = 1\n").expect("write");
    let (status, _, err) = run_bounded(
        Command::new(nullq())
            .args(["serve", "--config"])
            .arg(&config),
        T,
    );
    assert_eq!(status, Some(111));
    assert!(
        err.contains("nullq: fatal:") && err.contains("databyte"),
        "{err}"
    );
    let stored = String::from_utf8_lossy(&std::fs::read(&server.queued()[0]).unwrap_or_default())
        .into_owned();
    // The harness passes --hostname mx.test, which wins over the file's hostname.
    assert!(
        stored.contains("by mx.test with QMQP") && !stored.contains("from-config.test"),
        "{stored}"
    );
}

/// `log.level = "verbose"` would be read as "everything from a module named verbose", i.e.
/// nothing at all: it is refused at start, naming the key, before anything is bound or opened.
#[test]
fn a_log_level_that_is_not_a_level_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("nullq.toml");
    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n").expect("write config");
    let data = dir.path().join("data");
    let (status, _, err) = run_bounded(
        Command::new(nullq())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data),
        T,
    );
    assert_eq!(status, Some(111), "{err}");
    assert!(
        err.starts_with("nullq: fatal: configuration: log.level: not a log filter (\"verbose\""),
        "{err}"
    );
    assert!(!data.exists(), "no spool was made");
}

/// `runtime_threads` sets how many worker threads run the sessions: the file's value, the
/// flag's over it, and by default half the cores (at least one); the start-up line says
/// which, and the process has that many. A value past the limit is refused at start.
#[test]
fn the_runtime_has_the_worker_threads_asked_for() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("nullq.toml");
    std::fs::write(&config, "runtime_threads = 5\n").expect("write config");
    let workers = |server: &Server| {
        std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let auto = (cores / 2).max(1);
    for (args, n, why) in [
        (
            vec!["--config", config.to_str().expect("utf8")],
            5,
            "runtime_threads=5".to_owned(),
        ),
        (
            vec![
                "--config",
                config.to_str().expect("utf8"),
                "--runtime-threads",
                "3",
            ],
            3,
            "runtime_threads=3".to_owned(),
        ),
        (
            vec![],
            auto,
            format!(
                "runtime_threads=0: half of {cores} {}",
                if cores == 1 { "core" } else { "cores" }
            ),
        ),
    ] {
        // No runner: nothing is handed to tokio's blocking pool, whose threads have the
        // workers' name, before the count.
        let mut args = args;
        args.extend(["--deliver", "none"]);
        let server = Server::start(&args);
        let plural = if n == 1 { "" } else { "s" };
        let line = format!("runtime: {n} worker thread{plural} ({why})");
        assert!(
            server.log_text().contains(&line),
            "{line} not in:\n{}",
            server.log_text()
        );
        // tokio starts its workers with the runtime, before the listener is ready, but each
        // names itself only once it runs (until then it has the process's name): wait for the
        // names, never seeing more workers than asked for (a red-team run under load saw 0 of
        // 1 and 4 of 5 at the first look).
        let mut most = 0;
        let named = wait_for(T, || {
            let now = workers(&server);
            most = most.max(now);
            now == n
        });
        assert!(
            named && most == n,
            "{args:?}: {most} workers seen, {n} asked for"
        );
    }
    let (status, _, err) = run_bounded(
        Command::new(nullq())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--runtime-threads",
                "1025",
                "--data",
            ])
            .arg(dir.path().join("data")),
        T,
    );
    assert_eq!(status, Some(111), "{err}");
    assert!(
        err.contains("runtime_threads: 1025 is more than 1024"),
        "{err}"
    );
}

/// A temporary directory nobody may create the data directory in (mode 1777, as /tmp).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let status = Command::new("chmod")
        .arg("1777")
        .arg(dir.path())
        .status()
        .expect("chmod");
    assert!(status.success());
    dir
}

const NOBODY: u32 = 65534;

/// The gid of `name` in /etc/group.
fn gid_of(name: &str) -> u32 {
    let groups = std::fs::read_to_string("/etc/group").expect("/etc/group");
    groups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[0] == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no group {name} in /etc/group"))
}

/// What `/proc/PID/status` must say of a process that dropped root to nobody:nogroup with
/// exactly `groups` as supplementary groups: every uid and gid unprivileged, no capability,
/// no_new_privs set.
fn assert_dropped(pid: u32, groups: &[u32]) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let nobody = NOBODY.to_string();
    assert_eq!(field("Uid:"), vec![nobody.clone(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![nobody; 4], "{status}");
    let mut have: Vec<u32> = field("Groups:")
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    have.sort_unstable();
    assert_eq!(have, groups, "supplementary groups; {status}");
    for cap in ["CapEff:", "CapPrm:", "CapAmb:"] {
        assert_eq!(field(cap), ["0000000000000000"], "{cap} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
}

/// Started as root with --user nobody: the listener is bound first, then the spool is created
/// and written as nobody; the process keeps no uid or gid 0, no supplementary group, no
/// capability, and cannot gain privileges again (no_new_privs).
#[test]
fn drops_root_after_binding() {
    require_root("--user");
    let dir = open_dir();
    let data = dir.path().join("data");
    let mut cmd = Command::new(nullq());
    cmd.args(["serve", "--user", "nobody", "--group", "nogroup"])
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&data);
    let server = Server::launch(cmd, &data, &dir.path().join("log"));
    let request = encode_request(b"x\n", b"a@example.net", &[b"b@example.net".to_vec()]);
    let a = String::from_utf8_lossy(&exchange(server.addr, &request, T)).into_owned();
    assert!(a.contains(":Kok"), "{a}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data.join("queue")).expect("queue dir");
    assert_eq!(
        meta.uid(),
        NOBODY,
        "the spool was created by the unprivileged user"
    );
    assert_dropped(server.pid(), &[]);
}

/// `--groups` keeps exactly the supplementary groups asked for (a CommuniGate Pro site needs
/// the Submitted folder's group), for `serve` and for `deliver`.
#[test]
fn keeps_only_the_configured_supplementary_groups() {
    require_root("--user");
    let dir = open_dir();
    let data = dir.path().join("data");
    let mut cmd = Command::new(nullq());
    cmd.args([
        "serve", "--user", "nobody", "--group", "nogroup", "--groups", "mail",
    ])
    .args(["--listen", "127.0.0.1:0", "--deliver", "none", "--data"])
    .arg(&data);
    let mut server = Server::launch(cmd, &data, &dir.path().join("serve.log"));
    assert_dropped(server.pid(), &[gid_of("mail")]);
    assert_eq!(server.terminate(T).and_then(|s| s.code()), Some(0));

    let mut cmd = Command::new(nullq());
    cmd.args(["deliver", "--user", "nobody", "--groups", "mail,12345"])
        .args(["--deliver", "none", "--data"])
        .arg(&data);
    let deliver = Server::launch_deliver(cmd, &data, &dir.path().join("deliver.log"));
    assert_dropped(deliver.pid(), &[gid_of("mail"), 12345]);
}

/// `nullq deliver --user nobody` drops root before it opens the spool: it creates the spool
/// as nobody, and runs without any privilege (which its pipe: commands inherit; none runs
/// here).
#[test]
fn deliver_drops_root_before_the_spool() {
    require_root("--user");
    let dir = open_dir();
    let data = dir.path().join("data");
    let mut cmd = Command::new(nullq());
    cmd.args(["deliver", "--user", "nobody", "--group", "nogroup"])
        .args(["--deliver", "pipe:/bin/cat", "--data"])
        .arg(&data);
    let deliver = Server::launch_deliver(cmd, &data, &dir.path().join("log"));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data.join("state")).expect("state dir");
    assert_eq!(meta.uid(), NOBODY, "the spool was created by nobody");
    assert_dropped(deliver.pid(), &[]);
}
