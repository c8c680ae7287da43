//! Proves `nullq_tcprules` against ucspi-tcp itself (Debian package `ucspi-tcp`):
//! the real `tcprules` compiles the rules, and the real `tcprulescheck` (which runs
//! tcpserver's own `rules.c` lookup) says what tcpserver would decide. Our text parser, our
//! cdb reader and our lookup order must all agree with it.
//!
//! These tests fail, not skip, when the programs are missing: CI installs `ucspi-tcp`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nullq_tcprules::{Decision, Rules, RulesError};

const MISSING: &str = "the ucspi-tcp programs are needed for these tests (tcprules, \
     tcprulescheck): apt-get install ucspi-tcp";

/// Runs the real `tcprules` on `text`, writing `dir/name`. `Err(stderr)` when it refuses.
fn tcprules(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let cdb = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut child = Command::new("tcprules")
        .arg(&cdb)
        .arg(&tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tcprules: {e}: {MISSING}"));
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(text.as_bytes())
        .expect("write to tcprules");
    let out = child.wait_with_output().expect("wait for tcprules");
    if out.status.success() {
        Ok(cdb)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What `tcprulescheck` (tcpserver's `rules.c`) decides for a client.
fn tcprulescheck(cdb: &Path, ip: &str, host: Option<&str>) -> Decision {
    let mut cmd = Command::new("tcprulescheck");
    cmd.arg(cdb)
        .env("TCPREMOTEIP", ip)
        .env_remove("TCPREMOTEHOST")
        .env_remove("TCPREMOTEINFO");
    if let Some(h) = host {
        cmd.env("TCPREMOTEHOST", h);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run tcprulescheck: {e}: {MISSING}"));
    assert!(out.status.success(), "tcprulescheck failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("tcprulescheck output is UTF-8");
    let mut d = Decision {
        allow: true,
        env: Vec::new(),
        matched: None,
    };
    for line in text.lines() {
        if let Some(rule) = line.strip_prefix("rule ") {
            d.matched = Some(rule.strip_suffix(':').expect("rule KEY:").to_owned());
        } else if let Some(setting) = line.strip_prefix("set environment variable ") {
            let (k, v) = setting.split_once('=').expect("NAME=VALUE");
            d.env.push((k.to_owned(), v.to_owned()));
        } else if line == "deny connection" {
            d.allow = false;
        } else if line != "allow connection" && line != "default:" {
            panic!("unexpected tcprulescheck output {line:?} in {text:?}");
        }
    }
    d
}

const RULES: &str = "\
# /etc/qmqp.tcp for tests: every form Debian's tcprules takes
128.164.26.3:allow
10.0.0.1-3:allow,RELAYCLIENT=\"\"
10.1.1-3.:allow,X='a b',Y=\"c:d\"
192.168.:deny,WHY=\"ignored\"
192.168.1.:allow,QMQPQUEUE=|/bin/true|
=trusted.example.net:allow,TRUSTED=\"1\"
=.example.net:allow,DOMAIN=\"yes\"
=.bad.example.net:deny
172.16.0.1:allow,FIRST=\"1\"
172.16.0.1:deny
172.16.:allow,X=\"1\",X=\"2\"
172.:deny
=:deny

:deny
";

const IPS: &[&str] = &[
    "128.164.26.3",
    "128.164.26.4",
    "10.0.0.0",
    "10.0.0.1",
    "10.0.0.3",
    "10.0.0.4",
    "10.1.0.1",
    "10.1.1.1",
    "10.1.3.255",
    "10.1.4.1",
    "192.168.0.1",
    "192.168.1.1",
    "192.169.1.1",
    "172.16.0.1",
    "172.16.0.2",
    "172.17.0.1",
    "8.8.8.8",
    "127.0.0.1",
];

const HOSTS: &[Option<&str>] = &[
    None,
    Some("trusted.example.net"),
    Some("a.example.net"),
    Some("x.bad.example.net"),
    Some("bad.example.net"),
    Some("example.net"),
    Some("foo.org"),
];

#[test]
fn text_cdb_and_tcpserver_agree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdb_path = tcprules(dir.path(), "qmqp.cdb", RULES).expect("tcprules accepts RULES");
    let from_text = Rules::from_text(RULES).expect("our parser accepts RULES");
    let bytes = std::fs::read(&cdb_path).expect("read cdb");
    let from_cdb = Rules::from_cdb(bytes).expect("our reader reads tcprules' cdb");
    assert_eq!(from_text.len(), from_cdb.len(), "same number of keys");
    for ip in IPS {
        for host in HOSTS {
            let want = tcprulescheck(&cdb_path, ip, *host);
            let addr: IpAddr = ip.parse().expect("test IP");
            let got_text = from_text.check(addr, *host);
            let got_cdb = from_cdb.check(addr, *host);
            assert_eq!(got_text, want, "from_text vs tcpserver for {ip} {host:?}");
            assert_eq!(got_cdb, want, "from_cdb vs tcpserver for {ip} {host:?}");
        }
    }
}

#[test]
fn seed_rules_with_the_seed_command() {
    // tcprules /etc/qmqp.cdb /etc/qmqp.tmp < /etc/qmqp.tcp
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "128.164.26.3:allow\n:deny\n";
    std::fs::write(dir.path().join("qmqp.tcp"), text).expect("write qmqp.tcp");
    let cdb = tcprules(dir.path(), "qmqp.cdb", text).expect("tcprules");
    for path in [dir.path().join("qmqp.tcp"), cdb.clone()] {
        let rules = Rules::load(&path).expect("load");
        let d = rules.check("128.164.26.3".parse().unwrap(), None);
        assert!(d.allow, "{}", path.display());
        assert_eq!(d.matched.as_deref(), Some("128.164.26.3"));
        let d = rules.check("128.164.26.30".parse().unwrap(), Some("x.gwu.edu"));
        assert!(!d.allow);
        assert_eq!(d.matched.as_deref(), Some(""));
        assert_eq!(d, tcprulescheck(&cdb, "128.164.26.30", Some("x.gwu.edu")));
    }
    // A cdb is known by its content too, whatever its name.
    let renamed = dir.path().join("qmqp.rules");
    std::fs::copy(&cdb, &renamed).expect("copy");
    let rules = Rules::load(&renamed).expect("load cdb by content");
    assert!(!rules.check("10.0.0.1".parse().unwrap(), None).allow);
}

#[test]
fn empty_rules_allow_everyone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdb = tcprules(dir.path(), "empty.cdb", "# nothing\n").expect("tcprules");
    let rules = Rules::load(&cdb).expect("load");
    assert!(rules.is_empty());
    let d = rules.check("192.0.2.1".parse().unwrap(), None);
    assert_eq!(d, tcprulescheck(&cdb, "192.0.2.1", None));
    assert_eq!(
        d,
        Decision {
            allow: true,
            env: vec![],
            matched: None
        }
    );
}

#[test]
fn lines_tcprules_refuses_we_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    for line in [
        "1.2.3.4:allow,X=abc",
        "1.2.3.4:allow,X=\"abc",
        "1.2.3.4:allow,X",
        "1.2.3.4:allow,X=",
        "1.2.3.4:Allow",
        "1.2.3.4:allowx",
        "1.2.3.4:allow X=\"1\"",
        "1.2.3.4:allow\r",
        "10.0.0.1-2-3:allow",
    ] {
        let text = format!("127.0.0.1:allow\n{line}\n");
        let real = tcprules(dir.path(), "bad.cdb", &text);
        assert!(real.is_err(), "tcprules accepted {line:?}");
        match Rules::from_text(&text) {
            Err(RulesError::Line { line: 2, .. }) => {}
            other => panic!("{line:?}: {other:?}"),
        }
    }
}

/// Where nullq is deliberately stricter (see the module docs): tcprules writes a rule that
/// can never match, or skips the line; we refuse it.
#[test]
fn lines_we_refuse_that_tcprules_takes() {
    let dir = tempfile::tempdir().expect("temp dir");
    for line in [
        "128.164.26.3 allow",
        " 1.2.3.4:allow",
        "1.2.3.4 :allow",
        "10.0.0.5-2:allow",
        "localhost:allow",
        "=Host.Example.Net:allow",
        "1.2.3.4:allow,=\"x\"",
    ] {
        let text = format!("127.0.0.1:allow\n{line}\n");
        assert!(
            tcprules(dir.path(), "lax.cdb", &text).is_ok(),
            "tcprules refused {line:?}"
        );
        match Rules::from_text(&text) {
            Err(RulesError::Line { line: 2, .. }) => {}
            other => panic!("{line:?}: {other:?}"),
        }
    }
}

#[test]
fn load_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("qmqp.tcp");
    std::fs::write(&path, "128.164.26.3:allow\n:denied\n").expect("write");
    let e = Rules::load(&path).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: line 2: ", path.display())),
        "{msg}"
    );

    let missing = dir.path().join("nope.cdb");
    let msg = Rules::load(&missing).unwrap_err().to_string();
    assert!(
        msg.contains("nope.cdb") && msg.contains("cannot read"),
        "{msg}"
    );

    let fake = dir.path().join("fake.cdb");
    std::fs::write(&fake, "128.164.26.3:allow\n").expect("write");
    let msg = Rules::load(&fake).unwrap_err().to_string();
    assert!(
        msg.contains("fake.cdb") && msg.contains("not a cdb"),
        "{msg}"
    );
}
