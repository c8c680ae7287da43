//! predate against notqmail's, case by case: what the child reads and prints, the exit code,
//! and stderr, for children that run, fail, crash or cannot be run.
//!
//! Every expected value below was produced by notqmail's predate (notqmail/notqmail at a7012e4,
//! built from source with conf-qmail set to a scratch directory, `make predate`), run as
//! `env -i PATH=/usr/bin:/bin TZ=ZONE predate ARGS` with the case's input. Its `Date:` line
//! varies with the clock: both here and in the recording it is normalised to `Date: DATE
//! ZONE`, after checking that DATE has predate's form (`1 Dec 2026 12:37:13`: day unpadded,
//! English month, four-digit year, two-digit time); the zone is compared as is. The same
//! comparison was run against the real binary, through the `predate` name of the nullq binary,
//! for every case here.

use std::time::Duration;

use crate::support::host::{run, Host};

const LIMIT: Duration = Duration::from_secs(60);

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    tz: &'static str,
    input: &'static [u8],
    code: i32,
    /// stdout, `Date:` lines normalised.
    out: &'static str,
    err: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "no child",
        args: &[],
        tz: "UTC",
        input: b"",
        code: 100,
        out: "",
        err: "predate: usage: predate child\n",
    },
    Case {
        name: "a date in front of the message",
        args: &["cat"],
        tz: "UTC",
        input: b"Subject: x\n\nbody\n",
        code: 0,
        out: "Date: DATE +0000\nSubject: x\n\nbody\n",
        err: "",
    },
    Case {
        name: "three hours east",
        args: &["cat"],
        tz: "XYZ-3",
        input: b"x",
        code: 0,
        out: "Date: DATE +0300\nx",
        err: "",
    },
    Case {
        name: "five and a half hours west",
        args: &["cat"],
        tz: "XYZ+5:30",
        input: b"x",
        code: 0,
        out: "Date: DATE -0530\nx",
        err: "",
    },
    Case {
        name: "arguments passed on",
        args: &["sh", "-c", "echo \"$0 $1\"; cat", "a", "b"],
        tz: "UTC",
        input: b"x\n",
        code: 0,
        out: "a b\nDate: DATE +0000\nx\n",
        err: "",
    },
    Case {
        name: "the child's exit code",
        args: &["sh", "-c", "cat >/dev/null; exit 7"],
        tz: "UTC",
        input: b"x",
        code: 7,
        out: "",
        err: "",
    },
    Case {
        name: "a child that reads nothing",
        args: &["true"],
        tz: "UTC",
        input: &[b'x'; 300_000],
        code: 0,
        out: "",
        err: "",
    },
    Case {
        name: "a child killed",
        args: &["sh", "-c", "kill -9 $$"],
        tz: "UTC",
        input: b"x",
        code: 111,
        out: "",
        err: "predate: fatal: child crashed\n",
    },
    Case {
        name: "no such program",
        args: &["/nonexistent/program"],
        tz: "UTC",
        input: b"x",
        code: 111,
        out: "",
        err: "predate: fatal: unable to run /nonexistent/program: file does not exist\n",
    },
    Case {
        name: "not in PATH",
        args: &["nonexistentprog"],
        tz: "UTC",
        input: b"x",
        code: 111,
        out: "",
        err: "predate: fatal: unable to run nonexistentprog: file does not exist\n",
    },
    Case {
        name: "a directory",
        args: &["/tmp"],
        tz: "UTC",
        input: b"x",
        code: 111,
        out: "",
        err: "predate: fatal: unable to run /tmp: access denied\n",
    },
    Case {
        name: "not executable",
        args: &["./noexec"],
        tz: "UTC",
        input: b"x",
        code: 111,
        out: "",
        err: "predate: fatal: unable to run ./noexec: access denied\n",
    },
    Case {
        name: "a script without #! runs under /bin/sh, as execvp does",
        args: &["./noshebang", "arg"],
        tz: "UTC",
        input: b"x\n",
        code: 0,
        out: "hi arg\nDate: DATE +0000\nx\n",
        err: "",
    },
];

/// `Date: D Mon YYYY HH:MM:SS ZONE` → `Date: DATE ZONE`; `None` if DATE is not of that form.
fn normalise_date(line: &str) -> Option<String> {
    let words: Vec<&str> = line.strip_prefix("Date: ")?.split(' ').collect();
    let [day, month, year, time, zone] = words[..] else {
        return None;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let day_ok = digits(day) && !day.starts_with('0') && day.parse::<u32>().ok()? <= 31;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: Vec<&str> = time.split(':').collect();
    let time_ok = t.len() == 3 && t.iter().all(|p| p.len() == 2 && digits(p));
    (day_ok && months.contains(&month) && year.len() == 4 && digits(year) && time_ok)
        .then(|| format!("Date: DATE {zone}"))
}

fn normalise(out: &str) -> String {
    out.split_inclusive('\n')
        .map(|line| {
            let (text, end) = match line.strip_suffix('\n') {
                Some(t) => (t, "\n"),
                None => (line, ""),
            };
            match text.starts_with("Date: ") {
                true => normalise_date(text).map_or_else(|| line.to_owned(), |d| d + end),
                false => line.to_owned(),
            }
        })
        .collect()
}

#[test]
fn predate_as_qmails() {
    let mut failures = Vec::new();
    for case in CASES {
        let host = Host::new();
        let dir = host.dir.path();
        std::fs::write(dir.join("noexec"), "echo hi\n").expect("noexec");
        std::fs::write(dir.join("noshebang"), "echo hi \"$1\"; cat\n").expect("script");
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(dir.join("noexec"), mode(0o644)).expect("chmod");
        std::fs::set_permissions(dir.join("noshebang"), mode(0o755)).expect("chmod");
        let mut cmd = host.cmd("predate");
        cmd.env("PATH", "/usr/bin:/bin")
            .env("TZ", case.tz)
            .args(case.args);
        let out = run(cmd, case.input, LIMIT);
        let stdout = normalise(&String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(case.code) || stdout != case.out || err != case.err {
            failures.push(format!(
                "{}: expected {} {:?} {:?}, got {:?} {stdout:?} {err:?}",
                case.name,
                case.code,
                case.out,
                case.err,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_date_form_is_checked() {
    assert_eq!(
        normalise("Date: 1 Dec 2026 12:37:13 +0000\nx"),
        "Date: DATE +0000\nx"
    );
    // A padded day or a weekday is not predate's form and stays as it is, to fail the table.
    for bad in [
        "Date: 01 Dec 2026 12:37:13 +0000\n",
        "Date: Tue, 1 Dec 2026 12:37:13 +0000\n",
        "Date: 1 Dec 2026 12:37 +0000\n",
    ] {
        assert_eq!(normalise(bad), bad);
    }
}
