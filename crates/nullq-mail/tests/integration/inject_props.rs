//! Property tests of qmail-inject's rewriting engine: any header field, any recipient argument
//! and any control value is either accepted or refused with qmail's error, never a panic; and
//! what it writes for an accepted message still has one field per line.

use std::time::{Duration, UNIX_EPOCH};

use nullq_mail::injector::{Flags, Injector, Settings};
use nullq_mail::rewrite::parse_rules;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn text() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"abcxyz019-+_".to_vec()),
        4 => prop::sample::select(b"()<>@,;:\\\".[] \t".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..60)
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "To",
        "Cc",
        "Bcc",
        "From",
        "Sender",
        "Reply-To",
        "Resent-To",
        "Resent-Cc",
        "Resent-Bcc",
        "Resent-From",
        "Return-Path",
        "Apparently-To",
        "Errors-To",
        "Return-Receipt-To",
        "Subject",
        "Message-ID",
        "Mail-Followup-To",
        "X-Other",
    ])
}

/// A control value: one line (qmail's control_readline stops at the newline, and so does ours).
fn control_value() -> impl Strategy<Value = Vec<u8>> {
    text().prop_map(|mut v| {
        v.retain(|&b| b != b'\n');
        v
    })
}

fn settings(host: Vec<u8>, flags: Vec<u8>) -> Settings {
    let mut s = Settings::new(b"jason", UNIX_EPOCH + Duration::from_secs(1_053_567_702), 1);
    s.defaulthost = host;
    s.flags = Flags::parse(&flags);
    s.mft = Some(vec![b"list@example.net".to_vec()]);
    s.rules = parse_rules("<*@example.net> = *@example.org\n").unwrap_or_default();
    s
}

proptest! {
    // Failures are replayed from and saved to `inject_props.proptest-regressions` beside this
    // file (by default proptest would use `tests/proptest-regressions/inject_props.txt`, since
    // `main.rs` next to this file is a crate root).
    #![proptest_config(ProptestConfig::with_failure_persistence(
        FileFailurePersistence::WithSource("proptest-regressions")
    ))]

    #[test]
    fn never_panics(
        host in control_value(),
        flags in prop::collection::vec(prop::sample::select(b"csfirmx".to_vec()), 0..4),
        fields in prop::collection::vec((name(), text()), 0..6),
        args in prop::collection::vec(text(), 0..3),
        sender in prop::option::of(text()),
        show in any::<bool>(),
    ) {
        let Ok(mut inj) = Injector::new(settings(host, flags)) else { return Ok(()) };
        if let Some(s) = sender {
            let _ = inj.set_sender(&s);
        }
        for a in &args {
            let _ = inj.add_recipient(a);
        }
        // A backslash before a newline is written back as qmail writes it (`"a\<LF>"`), which
        // breaks the line structure: the line check below is for input without backslashes.
        let mut ok = true;
        for (n, v) in fields {
            let mut f = format!("{n}:").into_bytes();
            f.extend(v.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
            f.push(b'\n');
            ok &= !v.contains(&b'\\');
            ok &= inj.header_field(f).is_ok();
        }
        if let Ok(top) = inj.finish_header(show) {
            // (The -n Return-Path line shows a sender with a quoted newline as qmail does, raw.)
            if ok && !show {
                // Every line is a field or a continuation (starts with a blank).
                for (i, line) in top.split(|&b| b == b'\n').enumerate() {
                    if i > 0 && !line.is_empty() && (line[0] == b' ' || line[0] == b'\t') {
                        continue;
                    }
                    prop_assert!(line.is_empty() || line.contains(&b':'), "{:?}", String::from_utf8_lossy(&top));
                }
                prop_assert!(top.is_empty() || top.ends_with(b"\n"));
            }
            prop_assert!(inj.sender().is_some());
            let _ = inj.recipients(true);
        }
    }
}
