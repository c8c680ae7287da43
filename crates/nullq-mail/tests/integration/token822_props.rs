//! Property tests of the RFC 822 tokenizer: it never panics on any input, and what it writes
//! is a fixed point (tokenize → emit → tokenize → emit gives the same text again).

use nullq_mail::token822::{addrlist, parse, unparse, Kind};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Bytes biased towards RFC 822 specials, so that comments, quotes, literals, groups and
/// routes are actually formed.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"abcxyz019-+_".to_vec()),
        4 => prop::sample::select(b"()<>@,;:\\\".[] \t\n\r".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..120)
}

proptest! {
    // Failures are replayed from and saved to `token822_props.proptest-regressions` beside this
    // file (by default proptest would use `tests/proptest-regressions/token822_props.txt`, since
    // `main.rs` next to this file is a crate root).
    #![proptest_config(ProptestConfig::with_failure_persistence(
        FileFailurePersistence::WithSource("proptest-regressions")
    ))]

    #[test]
    fn parse_never_panics(input in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&input);
    }

    #[test]
    fn addrlist_and_unparse_never_panic(input in header_bytes(), linelen in 0usize..100) {
        if let Ok(toks) = parse(&input) {
            let _ = unparse(&toks, linelen);
            if let Ok(out) = addrlist(&toks, |a| a.reverse()) {
                let _ = unparse(&out, linelen);
            }
        }
    }

    /// Every header field ends in a newline; for such input what the tokenizer emits is stable.
    /// A backslash inside an atom makes the next byte part of the atom (as in qmail) and emit
    /// does not escape specials in atoms, so such input settles after two rounds; input
    /// without backslashes after one.
    #[test]
    fn emit_is_a_fixed_point(mut input in header_bytes()) {
        input.push(b'\n');
        if let Ok(toks) = parse(&input) {
            let round = |text: &[u8]| -> Result<Vec<u8>, TestCaseError> {
                let toks = parse(text).map_err(|e| {
                    TestCaseError::fail(format!("{e}: emitted text {:?} does not parse", String::from_utf8_lossy(text)))
                })?;
                Ok(unparse(&toks, 80))
            };
            let once = unparse(&toks, 80);
            let twice = round(&once)?;
            let thrice = round(&twice)?;
            prop_assert_eq!(&twice, &thrice);
            if !input.contains(&b'\\') {
                prop_assert_eq!(&once, &twice);
            }
        }
    }

    /// Emitted lines stay within 80 columns unless a single address is longer.
    #[test]
    fn folding_keeps_addresses_whole(names in prop::collection::vec("[a-z]{1,30}", 1..30)) {
        let field = format!("To: {}\n", names.iter().map(|n| format!("{n}@example.net")).collect::<Vec<_>>().join(", "));
        let toks = parse(field.as_bytes()).unwrap();
        let out = String::from_utf8(unparse(&toks, 80)).unwrap();
        prop_assert_eq!(out.replace(",\n  ", ", "), field.clone());
        for line in out.lines().skip(1) {
            prop_assert!(line.starts_with("  "));
        }
    }

    /// An address list survives the right-to-left walk unchanged when nothing is rewritten.
    #[test]
    fn addrlist_identity(names in prop::collection::vec("[a-z]{1,8}", 1..8)) {
        let field = format!("Cc: {}, \"Q {}\" <{}@x.y>, grp: a@b, c;, {}\n", names.join(", "), names[0], names[0], names[0]);
        let toks = parse(field.as_bytes()).unwrap();
        let out = addrlist(&toks, |_| {}).unwrap();
        prop_assert_eq!(unparse(&out, 0), unparse(&toks, 0));
        prop_assert_eq!(out.iter().filter(|t| t.kind == Kind::Comma).count(), toks.iter().filter(|t| t.kind == Kind::Comma).count());
    }
}
