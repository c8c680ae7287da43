//! The file and program backends against their peers: CommuniGate Pro's Submitted folder with a
//! stand-in that consumes `.sub` files as the PIPE module does (checks `Return-Path:` and
//! `Envelope-To:`, deletes the file, or renames it to `.bad`); a `pipe:` command and its exit
//! codes (0, 75, other, with the bounce that follows); a qmail-queue-compatible program reading
//! the message on fd 0 and the envelope on fd 1, and its exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::nullq;
use crate::support::qmqp::{exchange, is_k, message, qmqp_source, queue_id, send};
use crate::support::server::Server;
use crate::support::{files, maildir_messages, run_bounded, wait_for, write_file};
use nullq_proto::qmqp::encode_request;
use nullq_spool::QueueId;
use std::os::unix::fs::PermissionsExt;

const T: Duration = Duration::from_secs(30);

/// What the stand-in saw in one `.sub` file.
#[derive(Debug, Clone)]
struct Submitted {
    /// Every `Return-Path:` of the header (CommuniGate Pro takes it as the sender).
    return_path: Vec<String>,
    /// Every address of every `Envelope-To:` of the header: the recipients.
    envelope_to: Vec<String>,
    /// Every `Envelope-Ignore:` of the header.
    envelope_ignore: Vec<String>,
    /// The header without those fields, as CommuniGate Pro passes the message on.
    header: String,
    body_has_envelope_fields: bool,
}

/// The fields of a header, unfolded (a continuation line belongs to the field above it), as
/// (name, value) with the name as written.
fn header_fields(header: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in header.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(f) = fields.last_mut() {
                f.1.push(' ');
                f.1.push_str(line.trim());
                f.1 = f.1.trim().to_owned();
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim_end().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

/// The addresses of an address list, split at commas outside quoted strings.
fn address_list(value: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_owned());
    out.retain(|a| !a.is_empty());
    out
}

/// Read one `.sub` as CommuniGate Pro's PIPE module does: the envelope fields are taken from
/// the WHOLE header, wherever they stand, in any case, folded or not, and removed.
fn parse_sub(text: &str) -> Submitted {
    let (header, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut sub = Submitted {
        return_path: Vec::new(),
        envelope_to: Vec::new(),
        envelope_ignore: Vec::new(),
        header: String::new(),
        body_has_envelope_fields: body.lines().any(|l| l.starts_with("Envelope-To:")),
    };
    for (name, value) in header_fields(header) {
        match name.to_ascii_lowercase().as_str() {
            "return-path" => sub.return_path.push(value),
            "envelope-to" => sub.envelope_to.extend(address_list(&value)),
            "envelope-ignore" => sub.envelope_ignore.extend(address_list(&value)),
            _ => sub.header.push_str(&format!("{name}: {value}\n")),
        }
    }
    sub
}

/// A CommuniGate Pro PIPE module stand-in: every 20 ms takes each `*.sub` in `dir`, reads the
/// envelope fields from its header ([`parse_sub`]), and deletes the file; a file whose
/// recipients include `bad-...`, or that has no single Return-Path, is renamed to `.bad`
/// instead, as CGP does when processing fails.
fn cgp_stand_in(
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<Submitted>>>) {
    let seen: Arc<Mutex<Vec<Submitted>>> = Arc::default();
    let out = Arc::clone(&seen);
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            for path in files(&dir) {
                if path.extension().and_then(|e| e.to_str()) != Some("sub") {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let sub = parse_sub(&text);
                if sub.envelope_to.iter().any(|t| t.starts_with("bad-"))
                    || sub.return_path.len() != 1
                {
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                } else {
                    let _ = std::fs::remove_file(&path);
                }
                out.lock().expect("lock").push(sub);
            }
            // CommuniGate Pro's PIPE module, too, scans the folder at an interval.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (handle, seen)
}

/// A running stand-in, stopped when dropped.
struct StandIn {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Submitted>>>,
}

impl StandIn {
    fn start(dir: &Path) -> StandIn {
        let stop = Arc::new(AtomicBool::new(false));
        let (handle, seen) = cgp_stand_in(dir.to_path_buf(), Arc::clone(&stop));
        StandIn {
            stop,
            handle: Some(handle),
            seen,
        }
    }

    fn seen(&self) -> Vec<Submitted> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn cgp_submitted_folder_gets_one_sub_per_message_with_the_qmqp_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    // on_bad = "keep": the .bad file stays, logged and listed (the bounce is tested below).
    let config = write_cgp_config(dir.path(), &submitted, "keep");
    let server = Server::start(&["--config", config.to_str().expect("utf8")]);
    let stop = Arc::new(AtomicBool::new(false));
    let (stand_in, seen) = cgp_stand_in(submitted.clone(), Arc::clone(&stop));
    let (status, err) = qmqp_source(
        server.addr,
        &[
            "-s",
            "2",
            "-m",
            "20",
            "-l",
            "512",
            "-f",
            "jason@example.net",
            "-t",
            "postmaster@example.net",
        ],
    );
    assert_eq!(status, Some(0), "{err}");
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["b@example.net", "c@example.org"],
        &message("two")
    )));
    assert!(is_k(&send(
        server.addr,
        "a@example.net",
        &["bad-user@example.net"],
        &message("bad")
    )));
    let ok = wait_for(T, || seen.lock().expect("lock").len() == 22);
    stop.store(true, Ordering::SeqCst);
    let _ = stand_in.join();
    assert!(
        ok,
        "stand-in saw {} files; log:\n{}",
        seen.lock().expect("lock").len(),
        server.log_text()
    );
    let seen = seen.lock().expect("lock").clone();
    let from_source = seen
        .iter()
        .filter(|s| s.return_path == ["<jason@example.net>"])
        .count();
    assert_eq!(from_source, 20);
    for s in seen
        .iter()
        .filter(|s| s.return_path == ["<jason@example.net>"])
    {
        assert_eq!(s.envelope_to, ["postmaster@example.net"]);
        assert!(!s.body_has_envelope_fields);
    }
    assert!(seen.iter().any(|s| s.return_path == ["<a@example.net>"]
        && s.envelope_to == ["b@example.net", "c@example.org"]));
    let names: Vec<String> = files(&submitted)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert!(wait_for(T, || server.queued().is_empty()));
    // The .bad file is reported in the log and by `nullq queue stats`.
    assert!(
        wait_for(Duration::from_secs(20), || server
            .log_text()
            .contains("CommuniGate Pro could not process")),
        "{}",
        server.log_text()
    );
    let (code, out, err) = run_bounded(
        Command::new(nullq())
            .args(["queue", "stats", "--json", "--data"])
            .arg(&server.data)
            .arg("--config")
            .arg(&config),
        T,
    );
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v["cgp_bad_files"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
}

fn write_cgp_config(dir: &Path, submitted: &Path, on_bad: &str) -> PathBuf {
    let path = dir.join("cgp.toml");
    std::fs::write(
        &path,
        format!(
            "[delivery]\ntarget = \"cgp:{}\"\n[delivery.cgp]\non_bad = \"{on_bad}\"\n",
            submitted.display()
        ),
    )
    .expect("write");
    path
}

/// The victim of a planted symlink: a file of mode 0600 outside the Submitted folder.
fn victim(dir: &Path) -> PathBuf {
    let path = dir.join("victim");
    std::fs::write(&path, b"precious\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn assert_untouched(victim: &Path) {
    assert_eq!(std::fs::read(victim).expect("victim"), b"precious\n");
    let mode = std::fs::metadata(victim)
        .expect("victim")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "the victim's mode changed");
}

/// Queue one message on a server that delivers nothing, and stop it: the queue id is then
/// known (from the `K` answer) before any attempt to submit it is made.
fn queue_held(data: &Path, sender: &str, rcpts: &[&str], message: &str) -> QueueId {
    let mut server = Server::start_in(data, &["--deliver", "none"]);
    let rcpts: Vec<Vec<u8>> = rcpts.iter().map(|r| r.as_bytes().to_vec()).collect();
    let answer = exchange(
        server.addr,
        &encode_request(message.as_bytes(), sender.as_bytes(), &rcpts),
        T,
    );
    let id = queue_id(&answer)
        .unwrap_or_else(|| panic!("no queue id in {:?}", String::from_utf8_lossy(&answer)));
    assert!(server.terminate(T).is_some(), "the server did not stop");
    // Due at once for the next runner (the held attempt may have put it off).
    let (code, _, err) = run_bounded(
        Command::new(nullq())
            .args(["queue", "retry", "--all", "--data"])
            .arg(data),
        T,
    );
    assert_eq!(code, Some(0), "{err}");
    id
}

fn cgp_server(data: &Path, submitted: &Path) -> Server {
    Server::start_in(
        data,
        &["--deliver", &format!("cgp:{}", submitted.display())],
    )
}

#[test]
fn cgp_symlink_at_id_tmp_leaves_the_victim_file_and_its_mode_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, submitted) = (dir.path().join("data"), dir.path().join("Submitted"));
    std::fs::create_dir(&submitted).expect("mkdir");
    let victim = victim(dir.path());
    let id = queue_held(
        &data,
        "a@example.net",
        &["b@example.net"],
        &message("planted"),
    );
    let link = submitted.join(format!("{id}.tmp"));
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");

    let server = cgp_server(&data, &submitted);
    let refused = server.wait_log(T, |l| {
        l.contains("ERROR") && l.contains("planted") && l.contains(&id.to_string())
    });
    // Waited for first: the old code wrote the victim and said "submitted" instead.
    assert_untouched(&victim);
    assert!(refused.is_some(), "{}", server.log_text());
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(
        !submitted.join(format!("{id}.sub")).exists(),
        "the symlink became a submission"
    );
    assert_eq!(server.queued().len(), 1, "the message must stay queued");

    // Once the name is free again, the message goes in whole, with its envelope.
    std::fs::remove_file(&link).expect("rm");
    let stand_in = StandIn::start(&submitted);
    let (code, _, err) = run_bounded(
        Command::new(nullq())
            .args(["queue", "retry", "--all", "--data"])
            .arg(&data),
        T,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        wait_for(T, || stand_in.seen().len() == 1),
        "{}",
        server.log_text()
    );
    let sub = &stand_in.seen()[0];
    assert_eq!(sub.return_path, ["<a@example.net>"]);
    assert_eq!(sub.envelope_to, ["b@example.net"]);
    assert!(sub.header.contains("Subject: planted"), "{}", sub.header);
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    assert_untouched(&victim);
}

#[test]
fn cgp_symlink_at_id_sub_is_not_taken_for_a_submission_and_the_message_stays_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, submitted) = (dir.path().join("data"), dir.path().join("Submitted"));
    std::fs::create_dir(&submitted).expect("mkdir");
    let victim = victim(dir.path());
    let id = queue_held(
        &data,
        "a@example.net",
        &["b@example.net"],
        &message("planted"),
    );
    let link = submitted.join(format!("{id}.sub"));
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");

    // Followed, the symlink would say "already submitted" and the message would be lost.
    let server = cgp_server(&data, &submitted);
    let refused = server.wait_log(T, |l| {
        l.contains("ERROR") && l.contains("a symlink") && l.contains(&id.to_string())
    });
    assert!(refused.is_some(), "{}", server.log_text());
    let deferred = server.wait_log(T, |l| {
        l.contains("result=\"deferred\"") && l.contains(&id.to_string())
    });
    assert!(deferred.is_some(), "{}", server.log_text());
    assert!(
        !server.log_text().contains("already submitted"),
        "{}",
        server.log_text()
    );
    assert_untouched(&victim);
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(!submitted.join(format!("{id}.tmp")).exists());
    assert_eq!(server.queued().len(), 1, "the message must stay queued");
}

/// A raw QMQP client can put anything in the header: CommuniGate Pro must still see only the
/// QMQP envelope.
#[test]
fn cgp_message_carrying_envelope_to_is_submitted_with_only_the_envelope_recipients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let server = Server::start(&["--deliver", &format!("cgp:{}", submitted.display())]);
    let stand_in = StandIn::start(&submitted);
    let injected = "From: jason@example.net\n\
                    Envelope-To: victim@elsewhere.example\n\
                    Subject: injected\n\
                    envelope-to:\n  other-victim@elsewhere.example,\n  third@elsewhere.example\n\
                    Envelope-Ignore: bob@example.net\n\
                    Return-Path: <forged@elsewhere.example>\n\
                    To: bob@example.net\n\
                    \n\
                    Envelope-To: in-the-body@elsewhere.example\n";
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["bob@example.net"],
        injected
    )));
    assert!(
        wait_for(T, || stand_in.seen().len() == 1),
        "{}",
        server.log_text()
    );
    let sub = &stand_in.seen()[0];
    assert_eq!(sub.envelope_to, ["bob@example.net"], "{sub:?}");
    assert_eq!(sub.return_path, ["<jason@example.net>"], "{sub:?}");
    assert!(sub.envelope_ignore.is_empty(), "{sub:?}");
    for kept in [
        "X-Original-Envelope-To: victim@elsewhere.example",
        "X-Original-Envelope-To: other-victim@elsewhere.example, third@elsewhere.example",
        "X-Original-Envelope-Ignore: bob@example.net",
        "X-Original-Return-Path: <forged@elsewhere.example>",
        "Subject: injected",
    ] {
        assert!(
            sub.header.contains(kept),
            "{kept} missing from:\n{}",
            sub.header
        );
    }
    // The body is not the header: left as it was.
    assert!(sub.body_has_envelope_fields);
}

#[test]
fn cgp_envelope_addresses_with_specials_are_written_as_quoted_local_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let server = Server::start(&["--deliver", &format!("cgp:{}", submitted.display())]);
    let stand_in = StandIn::start(&submitted);
    // Unquoted, "x@y, victim@elsewhere.example" would be two recipients to CommuniGate Pro.
    assert!(is_k(&send(
        server.addr,
        "jason smith@example.net",
        &[
            "a b@example.net",
            "x@y, victim@elsewhere.example",
            "q\"uo\\te@example.net"
        ],
        &message("quoted")
    )));
    assert!(
        wait_for(T, || stand_in.seen().len() == 1),
        "{}",
        server.log_text()
    );
    let sub = &stand_in.seen()[0];
    assert_eq!(sub.return_path, ["<\"jason smith\"@example.net>"]);
    assert_eq!(
        sub.envelope_to,
        [
            "\"a b\"@example.net",
            "\"x@y, victim\"@elsewhere.example",
            "\"q\\\"uo\\\\te\"@example.net"
        ],
        "{sub:?}"
    );
}

#[test]
fn cgp_bad_file_is_bounced_to_its_sender_and_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let senders = dir.path().join("senders");
    let config = write_file(
        dir.path(),
        "nullq.toml",
        &format!(
            "[delivery]\ntarget = \"cgp:{}\"\n[delivery.routes]\n\"sender.example\" = \"maildir:{}\"\n",
            submitted.display(),
            senders.display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().expect("utf8")]);
    let stand_in = StandIn::start(&submitted);
    let answer = send(
        server.addr,
        "jason@sender.example",
        &["bad-user@example.net", "good@example.net"],
        &message("refused by cgp"),
    );
    let id = queue_id(answer.as_bytes()).expect("queue id");
    assert!(
        wait_for(T, || stand_in.seen().len() == 1),
        "{}",
        server.log_text()
    );
    // The runner finds the .bad file (it looks every 10 s), bounces it, and sets it aside.
    assert!(
        wait_for(Duration::from_secs(40), || maildir_messages(&senders).len()
            == 1),
        "{}",
        server.log_text()
    );
    let bounce = &maildir_messages(&senders)[0];
    for want in [
        "Return-Path: <>",
        "Delivered-To: jason@sender.example",
        "Subject: failure notice",
        "Final-Recipient: rfc822; bad-user@example.net",
        "Final-Recipient: rfc822; good@example.net",
        "CommuniGate Pro could not process the submission",
        "Subject: refused by cgp",
    ] {
        assert!(bounce.contains(want), "{want} missing from:\n{bounce}");
    }
    assert!(
        wait_for(T, || submitted.join(format!("{id}.bad.done")).exists()),
        "{}",
        server.log_text()
    );
    assert!(!submitted.join(format!("{id}.bad")).exists());
    let logged = server.wait_log(T, |l| {
        l.contains("ERROR")
            && l.contains("CommuniGate Pro could not process")
            && l.contains("bounce queued")
    });
    assert!(logged.is_some(), "{}", server.log_text());
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
}

/// A pipe command that records its arguments, environment and input, and exits by recipient:
/// `tempfail@` 75, `fail@` 67 with a message on stderr, else 0.
fn pipe_script(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("piped");
    let work = dir.join("work");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    let script = dir.join("deliver.sh");
    // Written aside, then renamed into out/: a file in out/ is always whole.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(date +%s%N).$$\n{{ echo \"ARGS: $*\"; echo \"SENDER=$SENDER RECIPIENT=$RECIPIENT RECIPIENTS=$RECIPIENTS\"; cat; }} > {work}/$n\nmv {work}/$n {out}/$n\n\
             case \"$RECIPIENT\" in\n  tempfail@*) echo 'mailbox locked, try later' >&2; exit 75;;\n  fail@*) echo 'no such mailbox here' >&2; exit 67;;\nesac\nexit 0\n",
            out = out.display(),
            work = work.display()
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("0755").arg(&script).status();
    (script, out)
}

fn read_all(dir: &Path) -> Vec<String> {
    files(dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

#[test]
fn pipe_command_gets_envelope_and_message_and_its_exit_code_decides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (script, out) = pipe_script(dir.path());
    let target = format!("pipe:{} -f %s %r", script.display());
    let server = Server::start(&["--deliver", &target]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["ok@example.net", "ok2@example.net"],
        &message("piped")
    )));
    assert!(
        wait_for(T, || read_all(&out).len() == 1),
        "{}",
        server.log_text()
    );
    let got = &read_all(&out)[0];
    assert!(got.starts_with("ARGS: -f jason@example.net ok@example.net ok2@example.net\nSENDER=jason@example.net RECIPIENT=ok@example.net RECIPIENTS=ok@example.net\nok2@example.net\nReceived: "), "{got}");
    assert!(got.ends_with("Subject: piped\n\nHello world.\n"), "{got}");

    // Exit 67: a bounce to the sender, through the same pipe, naming the recipient and stderr.
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["fail@example.net"],
        &message("doomed")
    )));
    assert!(
        wait_for(T, || read_all(&out).iter().any(|m| m
            .contains("RECIPIENT=jason@example.net")
            && m.contains("multipart/report"))),
        "{}",
        server.log_text()
    );
    let bounce = read_all(&out)
        .into_iter()
        .find(|m| m.contains("multipart/report"))
        .unwrap_or_default();
    assert!(
        bounce.starts_with("ARGS: -f  jason@example.net\nSENDER= "),
        "{bounce}"
    );
    for want in [
        "Final-Recipient: rfc822; fail@example.net",
        "Action: failed",
        "Status: 5.0.0",
        "no such mailbox here",
        "Content-Type: text/rfc822-headers",
        "Subject: doomed",
        "report-type=delivery-status",
    ] {
        assert!(bounce.contains(want), "{want} missing from:\n{bounce}");
    }

    // Exit 75: stays queued, pending, with the command's answer.
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["tempfail@example.net"],
        &message("later")
    )));
    // The result is logged, then recorded: wait for the record itself (and for the bounce
    // before it to have left the queue).
    let list_queue = || {
        let (code, list, err) = run_bounded(
            Command::new(nullq())
                .args(["queue", "list", "--json", "--data"])
                .arg(&server.data),
            T,
        );
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(&list).expect("json");
        (v, list)
    };
    let recorded = |v: &serde_json::Value| {
        v.as_array()
            .is_some_and(|m| m.len() == 1 && m[0]["recipients"][0]["attempts"].as_u64() == Some(1))
    };
    let (mut v, mut list) = list_queue();
    let settled = wait_for(T, || {
        (v, list) = list_queue();
        recorded(&v)
    });
    assert!(settled, "{list}\n{}", server.log_text());
    let msgs = v.as_array().expect("array");
    let r = &msgs[0]["recipients"][0];
    assert_eq!(r["status"], "pending");
    assert_eq!(r["attempts"], 1);
    assert!(
        r["last_result"]
            .as_str()
            .unwrap_or("")
            .contains("exit 75: mailbox locked, try later"),
        "{list}"
    );
    assert!(r["next_attempt"].as_f64().is_some());
}

/// The attack: a QMQP client (or a header rewrite) hands a recipient `-oProgram=...` to a
/// program whose argv takes recipients; it would read it as an option. The recipient is
/// bounced with the reason, the others are delivered, the program never sees it.
#[test]
fn pipe_recipient_beginning_with_a_dash_is_bounced_never_passed_as_an_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (script, out) = pipe_script(dir.path());
    let target = format!("pipe:{} -f %s %r", script.display());
    let server = Server::start(&["--deliver", &target]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["ok@example.net", "-oProgram=/bin/sh@example.net"],
        &message("dash")
    )));
    // The message is settled once the original is gone and its bounce delivered.
    assert!(
        wait_for(T, || server.queued().is_empty()
            && read_all(&out).len() == 2),
        "{}",
        server.log_text()
    );
    let all = read_all(&out);
    let original = all
        .iter()
        .find(|m| m.contains("Subject: dash"))
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(original, "ARGS: -f jason@example.net ok@example.net");
    let bounce = all
        .iter()
        .find(|m| m.contains("multipart/report"))
        .expect("a bounce");
    assert!(
        bounce.contains("Final-Recipient: rfc822; -oProgram=/bin/sh@example.net")
            && bounce.contains("would read as an option"),
        "{bounce}"
    );
    assert!(
        all.iter()
            .all(|m| !m.lines().next().unwrap_or("").contains("-oProgram")),
        "{all:?}"
    );
}

/// A qmail-queue-compatible program: message from fd 0, envelope from fd 1, exit by recipient.
fn qmail_queue_script(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("qq");
    std::fs::create_dir_all(&out).expect("mkdir");
    let script = dir.join("qmail-queue");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nf={out}/$(date +%s%N).$$\ncat > \"$f.msg\"\ncat <&1 > \"$f.env\"\n\
             if grep -q Tperm@ \"$f.env\"; then echo 'refused' >&2; rm -f \"$f.msg\" \"$f.env\"; exit 31; fi\n\
             if grep -q Ttemp@ \"$f.env\"; then rm -f \"$f.msg\" \"$f.env\"; exit 71; fi\nexit 0\n",
            out = out.display()
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("0755").arg(&script).status();
    (script, out)
}

#[test]
fn qmail_queue_program_gets_message_on_fd0_and_envelope_on_fd1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (script, out) = qmail_queue_script(dir.path());
    let server = Server::start(&["--deliver", &format!("qmail-queue:{}", script.display())]);
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["bob@example.net", "alice@example.org"],
        &message("qq")
    )));
    // Delivered (exit 0) and removed: the program has written both files and exited.
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    assert_eq!(files(&out).len(), 2);
    let env = files(&out)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "env"))
        .expect("env file");
    assert_eq!(
        std::fs::read(&env).expect("read"),
        b"Fjason@example.net\0Tbob@example.net\0Talice@example.org\0\0"
    );
    let msg = std::fs::read_to_string(env.with_extension("msg")).expect("msg");
    assert!(
        msg.starts_with("Received: ") && msg.ends_with("Subject: qq\n\nHello world.\n"),
        "{msg}"
    );

    // 31 (permanent): a bounce, queued and handed to the same program with the null sender.
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["perm@example.net"],
        &message("perm")
    )));
    assert!(
        wait_for(T, || files(&out).iter().any(
            |p| std::fs::read(p).is_ok_and(|b| b == b"F\0Tjason@example.net\0\0")
        )),
        "{}",
        server.log_text()
    );
    // The refused message and its bounce both leave the queue.
    assert!(
        wait_for(T, || server.queued().is_empty()),
        "{}",
        server.log_text()
    );
    // 71 (temporary): stays queued.
    assert!(is_k(&send(
        server.addr,
        "jason@example.net",
        &["temp@example.net"],
        &message("temp")
    )));
    assert!(
        wait_for(T, || server.log_text().contains("exit 71")),
        "{}",
        server.log_text()
    );
    assert_eq!(server.queued().len(), 1);
}
