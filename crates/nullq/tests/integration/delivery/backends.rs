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
use crate::support::qmqp::{is_k, message, qmqp_source, send};
use crate::support::server::Server;
use crate::support::{files, run_bounded, wait_for};

const T: Duration = Duration::from_secs(30);

/// What the stand-in saw in one `.sub` file.
#[derive(Debug, Clone)]
struct Submitted {
    return_path: String,
    envelope_to: Vec<String>,
    body_has_envelope_fields: bool,
}

/// A CommuniGate Pro PIPE module stand-in: every 20 ms takes each `*.sub` in `dir`, reads the
/// envelope fields at its top, removes them, and deletes the file; a file whose recipients
/// include `bad-...` is renamed to `.bad` instead, as CGP does when processing fails.
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
                let mut lines = text.lines();
                let mut sub = Submitted {
                    return_path: String::new(),
                    envelope_to: Vec::new(),
                    body_has_envelope_fields: false,
                };
                for line in lines.by_ref() {
                    if let Some(rp) = line.strip_prefix("Return-Path: ") {
                        sub.return_path = rp.to_owned();
                    } else if let Some(to) = line.strip_prefix("Envelope-To: ") {
                        sub.envelope_to.push(to.to_owned());
                    } else {
                        break;
                    }
                }
                sub.body_has_envelope_fields = lines.any(|l| l.starts_with("Envelope-To:"));
                if sub.envelope_to.iter().any(|t| t.starts_with("bad-"))
                    || sub.return_path.is_empty()
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

#[test]
fn cgp_submitted_folder_gets_one_sub_per_message_with_the_qmqp_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let submitted = dir.path().join("Submitted");
    std::fs::create_dir(&submitted).expect("mkdir");
    let server = Server::start(&["--deliver", &format!("cgp:{}", submitted.display())]);
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
        .filter(|s| s.return_path == "<jason@example.net>")
        .count();
    assert_eq!(from_source, 20);
    for s in seen
        .iter()
        .filter(|s| s.return_path == "<jason@example.net>")
    {
        assert_eq!(s.envelope_to, ["postmaster@example.net"]);
        assert!(!s.body_has_envelope_fields);
    }
    assert!(seen.iter().any(|s| s.return_path == "<a@example.net>"
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
            .arg(write_cgp_config(dir.path(), &submitted)),
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

fn write_cgp_config(dir: &Path, submitted: &Path) -> PathBuf {
    let path = dir.join("cgp.toml");
    std::fs::write(
        &path,
        format!("[delivery]\ntarget = \"cgp:{}\"\n", submitted.display()),
    )
    .expect("write");
    path
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
