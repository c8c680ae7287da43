//! The unit tests of the rules: text and cdb read alike, tcpserver's lookup order and IPv6
//! form, tcprules' ranges and settings, and errors naming the line. (A file of their own: they
//! are longer than the code.)

use std::net::IpAddr;

use crate::parse::{expand_address, parse_line};
use crate::rules::{decode, Action};
use crate::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Rules text → the cdb `tcprules` would write (test writer) → `Rules`.
fn via_cdb(text: &str) -> Rules {
    let mut recs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (address, data) = parse_line(line.as_bytes()).unwrap();
        for key in expand_address(address).unwrap() {
            recs.push((key, data.clone()));
        }
    }
    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, d)| (&k[..], &d[..])).collect();
    Rules::from_cdb(crate::cdb::make(&refs)).unwrap()
}

const SEED: &str = "128.164.26.3:allow\n:deny\n";

#[test]
fn seed_rules() {
    let r = Rules::from_text(SEED).unwrap();
    let d = r.check(ip("128.164.26.3"), None);
    assert!(d.allow);
    assert_eq!(d.matched.as_deref(), Some("128.164.26.3"));
    let d = r.check(ip("128.164.26.4"), Some("host.example.net"));
    assert!(!d.allow);
    assert_eq!(d.matched.as_deref(), Some(""));
    // An IPv4-mapped client is the IPv4 client.
    assert!(r.check(ip("::ffff:128.164.26.3"), None).allow);
    assert!(!r.check(ip("::1"), None).allow);
}

#[test]
fn lookup_order_ipv4_with_host() {
    assert_eq!(
        lookup_keys(ip("1.2.3.4"), Some("Mail.Example.NET")),
        vec![
            "1.2.3.4",
            "=mail.example.net",
            "1.2.3.",
            "1.2.",
            "1.",
            "=.example.net",
            "=.net",
            "=",
            ""
        ]
    );
    assert_eq!(
        lookup_keys(ip("10.0.0.1"), Some("")),
        vec!["10.0.0.1", "10.0.0.", "10.0.", "10.", ""]
    );
}

#[test]
fn lookup_order_ipv6() {
    assert_eq!(
        lookup_keys(ip("2001:db8::7"), None),
        vec!["2001:db8::7", "2001:db8::", "2001:db8:", "2001:", ""]
    );
    assert_eq!(lookup_keys(ip("::1"), None), vec!["::1", "::", ""]);
}

#[test]
fn ipv6_format_is_tcpservers() {
    let cases = [
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:db8::1", "2001:db8::1"),
        // A single zero group is compressed (RFC 5952 would not).
        ("2001:db8:0:1:1:1:1:1", "2001:db8::1:1:1:1:1"),
        // Longest run wins; the first of equal runs.
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ("FE80::ABCD", "fe80::abcd"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
    ];
    for (input, want) in cases {
        assert_eq!(remote_ip_string(ip(input)), want, "{input}");
    }
}

struct Case {
    ip: &'static str,
    host: Option<&'static str>,
    allow: bool,
    matched: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
}

const TABLE_RULES: &str = "\
# comment
128.164.26.3:allow

10.0.0.1-3:allow,RELAYCLIENT=\"\"
10.1.1-3.:allow,X='a b',Y=\"c:d\"
192.168.:deny,WHY=\"ignored\"
192.168.1.:allow
=trusted.example.net:allow,TRUSTED=\"1\"
=.example.net:allow,DOMAIN=\"yes\"
=.bad.example.net:deny
=:deny
2001:db8::7:allow,SIX=\"exact\"
2001:db8:1::allow,SIX=\"prefix\"
::1:allow
fe80::deny
172.16.0.1:allow,A=\"1\"
172.16.0.1:deny
:deny
";

const TABLE: &[Case] = &[
    Case {
        ip: "128.164.26.3",
        host: None,
        allow: true,
        matched: Some("128.164.26.3"),
        env: &[],
    },
    Case {
        ip: "128.164.26.4",
        host: None,
        allow: false,
        matched: Some(""),
        env: &[],
    },
    Case {
        ip: "10.0.0.2",
        host: None,
        allow: true,
        matched: Some("10.0.0.2"),
        env: &[("RELAYCLIENT", "")],
    },
    Case {
        ip: "10.0.0.4",
        host: None,
        allow: false,
        matched: Some(""),
        env: &[],
    },
    Case {
        ip: "10.1.2.200",
        host: None,
        allow: true,
        matched: Some("10.1.2."),
        env: &[("X", "a b"), ("Y", "c:d")],
    },
    Case {
        ip: "10.1.4.1",
        host: None,
        allow: false,
        matched: Some(""),
        env: &[],
    },
    // Longer prefix first.
    Case {
        ip: "192.168.1.9",
        host: None,
        allow: true,
        matched: Some("192.168.1."),
        env: &[],
    },
    Case {
        ip: "192.168.2.9",
        host: None,
        allow: false,
        matched: Some("192.168."),
        env: &[],
    },
    // Exact host comes before IP prefixes; prefixes before domain suffixes.
    Case {
        ip: "192.168.2.9",
        host: Some("trusted.example.net"),
        allow: true,
        matched: Some("=trusted.example.net"),
        env: &[("TRUSTED", "1")],
    },
    Case {
        ip: "192.168.2.9",
        host: Some("other.example.net"),
        allow: false,
        matched: Some("192.168."),
        env: &[],
    },
    Case {
        ip: "8.8.8.8",
        host: Some("other.example.net"),
        allow: true,
        matched: Some("=.example.net"),
        env: &[("DOMAIN", "yes")],
    },
    Case {
        ip: "8.8.8.8",
        host: Some("x.bad.example.net"),
        allow: false,
        matched: Some("=.bad.example.net"),
        env: &[],
    },
    Case {
        ip: "8.8.8.8",
        host: Some("TRUSTED.Example.Net"),
        allow: true,
        matched: Some("=trusted.example.net"),
        env: &[("TRUSTED", "1")],
    },
    Case {
        ip: "8.8.8.8",
        host: Some("elsewhere.org"),
        allow: false,
        matched: Some("="),
        env: &[],
    },
    Case {
        ip: "2001:db8::7",
        host: None,
        allow: true,
        matched: Some("2001:db8::7"),
        env: &[("SIX", "exact")],
    },
    Case {
        ip: "2001:db8:1::5",
        host: None,
        allow: true,
        matched: Some("2001:db8:1:"),
        env: &[("SIX", "prefix")],
    },
    Case {
        ip: "2001:db8:2::5",
        host: None,
        allow: false,
        matched: Some(""),
        env: &[],
    },
    Case {
        ip: "::1",
        host: None,
        allow: true,
        matched: Some("::1"),
        env: &[],
    },
    Case {
        ip: "fe80::1",
        host: None,
        allow: false,
        matched: Some("fe80:"),
        env: &[],
    },
    Case {
        ip: "fe80::1",
        host: Some("x.example.net"),
        allow: false,
        matched: Some("fe80:"),
        env: &[],
    },
    // The first of two rules for one address wins.
    Case {
        ip: "172.16.0.1",
        host: None,
        allow: true,
        matched: Some("172.16.0.1"),
        env: &[("A", "1")],
    },
];

#[test]
fn table_from_text_and_cdb() {
    let from_text = Rules::from_text(TABLE_RULES).unwrap();
    let from_cdb = via_cdb(TABLE_RULES);
    for c in TABLE {
        for (what, rules) in [("text", &from_text), ("cdb", &from_cdb)] {
            let d = rules.check(ip(c.ip), c.host);
            let env: Vec<(String, String)> = c
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                d,
                Decision {
                    allow: c.allow,
                    env,
                    matched: c.matched.map(str::to_owned)
                },
                "{what}: {} {:?}",
                c.ip,
                c.host
            );
        }
    }
}

#[test]
fn allow_all_and_loopback_only() {
    let all = Rules::allow_all();
    let d = all.check(ip("203.0.113.9"), None);
    assert_eq!(
        d,
        Decision {
            allow: true,
            env: vec![],
            matched: None
        }
    );
    let lo = Rules::loopback_only();
    for (a, allow) in [
        ("127.0.0.1", true),
        ("127.255.0.9", true),
        ("::1", true),
        ("::ffff:127.0.0.1", true),
        ("128.0.0.1", false),
        ("::2", false),
        ("10.0.0.1", false),
    ] {
        assert_eq!(lo.check(ip(a), None).allow, allow, "{a}");
    }
    // The same as its documented text.
    let text = Rules::from_text("127.:allow\n::1:allow\n:deny\n").unwrap();
    assert_eq!(text.map, lo.map);
}

#[test]
fn ranges_like_tcprules() {
    let keys = |a: &str| -> Vec<String> {
        expand_address(a.as_bytes())
            .unwrap()
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    };
    assert_eq!(keys("10.0.0.1-3"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(keys("10.0.1-3."), ["10.0.1.", "10.0.2.", "10.0.3."]);
    assert_eq!(keys("1-2."), ["1.", "2."]);
    assert_eq!(keys("10.0.0.-1"), ["10.0.0.0", "10.0.0.1"]);
    assert_eq!(keys("10.0.0.254-300"), ["10.0.0.254", "10.0.0.255"]);
    assert_eq!(expand_address(b"10.0.0.a-3"), Err(LineProblem::BadIpv4));
    assert_eq!(
        expand_address(b"10.0.0.1-2-3"),
        Err(LineProblem::BadRangeNumber)
    );
    assert_eq!(expand_address(b"10.0.0.5-2"), Err(LineProblem::EmptyRange));
    assert_eq!(
        expand_address(b"10.0.0.300-400"),
        Err(LineProblem::EmptyRange)
    );
    // No ranges in host rules.
    assert_eq!(keys("=a-b.example"), ["=a-b.example"]);
}

#[test]
fn settings_like_tcprules() {
    let (_, data) = parse_line(b"1.2.3.4:allow,X='a b',Y=\"c:d\"").unwrap();
    assert_eq!(data, b"+X=a b\0+Y=c:d\0");
    let (_, data) = parse_line(b"1.2.3.4:allow,X=/abc/").unwrap();
    assert_eq!(data, b"+X=abc\0");
    let (a, data) = parse_line(b"1.2.3.4:deny,X=\"1\"").unwrap();
    assert_eq!((a, &data[..]), (&b"1.2.3.4"[..], &b"D\0+X=1\0"[..]));
    let (a, data) = parse_line(b":deny").unwrap();
    assert_eq!((a, &data[..]), (&b""[..], &b"D\0"[..]));
    let (a, _) = parse_line(b"2001:db8::1:allow").unwrap();
    assert_eq!(a, b"2001:db8::1");
    let (a, _) = parse_line(b"1:::allow").unwrap();
    assert_eq!(a, b"1::");
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, LineProblem)] = &[
        ("1.2.3.4", LineProblem::NoColon),
        ("1.2.3.4:Allow", LineProblem::NoAction),
        (
            "1.2.3.4:allowx",
            LineProblem::ExpectedComma { found: "x".into() },
        ),
        (
            "1.2.3.4:allow X=\"1\"",
            LineProblem::ExpectedComma {
                found: " X=\"1\"".into(),
            },
        ),
        ("1.2.3.4:allow,X", LineProblem::MissingEquals),
        ("1.2.3.4:allow,=\"1\"", LineProblem::EmptyName),
        ("1.2.3.4:allow,X=", LineProblem::MissingValue),
        (
            "1.2.3.4:allow,X=abc",
            LineProblem::Unterminated { quote: 'a' },
        ),
        (
            "1.2.3.4:allow,X=\"abc",
            LineProblem::Unterminated { quote: '"' },
        ),
        ("1.2.3.4:allow\r", LineProblem::CarriageReturn),
        (" 1.2.3.4:allow", LineProblem::BlankInAddress),
        ("1.2.3.4 :allow", LineProblem::BlankInAddress),
        (
            "0:0::1:allow",
            LineProblem::BadIpv6 {
                canonical: Some("::1".into()),
            },
        ),
        (
            "2001:DB8::1:allow",
            LineProblem::BadIpv6 {
                canonical: Some("2001:db8::1".into()),
            },
        ),
        ("2001:DB8:allow", LineProblem::BadIpv6 { canonical: None }),
        (
            "::ffff:1.2.3.4:allow",
            LineProblem::Ipv4Mapped {
                ipv4: "1.2.3.4".into(),
            },
        ),
        ("=Host.Example:allow", LineProblem::UppercaseHost),
        ("localhost:allow", LineProblem::BadIpv4),
        ("fe80:deny", LineProblem::BadIpv4),
    ];
    for (line, problem) in cases {
        let text = format!("# first\n\n127.0.0.1:allow\n{line}\n:deny\n");
        match Rules::from_text(&text) {
            Err(RulesError::Line {
                path: None,
                line: 4,
                text,
                problem: p,
            }) => {
                assert_eq!(&p, problem, "{line}");
                assert_eq!(text, line.trim_end_matches(' '));
            }
            other => panic!("{line}: {other:?}"),
        }
    }
    let e = Rules::from_text("1.2.3.4:allow,X=abc").unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules: line 1: the value's quote 'a' is never closed (the first character after \
         '=' is the quote: write ,VAR=\"value\"): \"1.2.3.4:allow,X=abc\""
    );
}

#[test]
fn comments_blanks_and_trailing_space() {
    let r = Rules::from_text("  # indented comment\n\t\n1.2.3.4:allow \t\n:deny").unwrap();
    assert!(r.check(ip("1.2.3.4"), None).allow);
    assert!(!r.check(ip("1.2.3.5"), None).allow);
    assert_eq!(r.len(), 2);
    assert!(Rules::from_text("").unwrap().is_empty());
}

#[test]
fn info_rules_never_match() {
    let r = Rules::from_text("joe@1.2.3.4:deny\njoe@=h.example:deny\n").unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.check(ip("1.2.3.4"), Some("h.example")).allow);
}

#[test]
fn cdb_values_decode_like_tcpserver() {
    assert_eq!(
        decode(b""),
        Some(Action {
            allow: true,
            env: vec![]
        })
    );
    assert_eq!(
        decode(b"D\0"),
        Some(Action {
            allow: false,
            env: vec![]
        })
    );
    // Items without '=' and unknown items are skipped; bytes after the last NUL ignored.
    assert_eq!(
        decode(b"+NOEQ\0?x\0+A=1=2\0+B=\0+C=dangling"),
        Some(Action {
            allow: true,
            env: vec![("A".into(), "1=2".into()), ("B".into(), "".into())]
        })
    );
    assert_eq!(
        decode(b"D\0+A=1\0"),
        Some(Action {
            allow: false,
            env: vec![]
        })
    );
    assert_eq!(decode(b"+A=\xff\0"), None);
    let bad = crate::cdb::make(&[(b"1.2.3.4", b"+A=\xff\0")]);
    assert!(matches!(
        Rules::from_cdb(bad),
        Err(RulesError::CdbValue { .. })
    ));
    assert!(matches!(
        Rules::from_cdb(vec![1, 2]),
        Err(RulesError::Cdb { .. })
    ));
}
