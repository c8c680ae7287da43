//! The QMQP request decoder against a table of good and bad requests, and property tests:
//! whatever way the bytes are split, the same events come out, and no input makes it panic.

use nullq_proto::qmqp::{
    check_address, encode_request, request_frame, AddressProblem, Event, Limits, RequestDecoder,
    Response, Status,
};
use nullq_proto::ErrorKind;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// What decoding a whole input gave: the message, sender, recipients, and how it ended.
#[derive(Debug, PartialEq, Eq, Default)]
struct Decoded {
    message: Vec<u8>,
    sender: Option<Vec<u8>>,
    recipients: Vec<Vec<u8>>,
    end: Option<Result<(), ErrorKind>>,
}

/// Feed `input` in pieces of `chunk` bytes, then signal end of input.
fn decode_chunked(input: &[u8], chunk: usize, limits: Limits) -> Decoded {
    let mut decoder = RequestDecoder::new(limits);
    let mut out = Decoded::default();
    for piece in input.chunks(chunk.max(1)) {
        let mut piece = piece;
        while !piece.is_empty() {
            match decoder.feed(piece) {
                Err(e) => {
                    out.end = Some(Err(e.kind().clone()));
                    return out;
                }
                Ok((used, event)) => {
                    piece = &piece[used..];
                    match event {
                        None => {}
                        Some(Event::MessageStart { .. }) => {}
                        Some(Event::Message(bytes)) => out.message.extend_from_slice(bytes),
                        Some(Event::Sender(s)) => out.sender = Some(s),
                        Some(Event::Recipient(r)) => out.recipients.push(r),
                        Some(Event::End) => out.end = Some(Ok(())),
                        Some(Event::Rejected(e)) => out.end = Some(Err(e.kind().clone())),
                    }
                    if out.end.is_some() && !piece.is_empty() {
                        // Bytes after the end must be refused.
                        if let Err(e) = decoder.feed(piece) {
                            out.end = Some(Err(e.kind().clone()));
                        }
                        return out;
                    }
                }
            }
        }
    }
    if out.end.is_none() {
        out.end = Some(decoder.eof().map_err(|e| e.kind().clone()));
    }
    out
}

fn outcome(input: &[u8]) -> Result<(), ErrorKind> {
    let whole = decode_chunked(input, usize::MAX, Limits::default()).end;
    let bytewise = decode_chunked(input, 1, Limits::default()).end;
    assert_eq!(
        whole, bytewise,
        "chunking changed the outcome for {input:?}"
    );
    whole.unwrap_or(Err(ErrorKind::Truncated))
}

#[test]
fn the_seed_example_decodes() {
    let d = decode_chunked(
        b"45:0:,17:jason@example.net,17:jason@example.net,,",
        3,
        Limits::default(),
    );
    assert_eq!(d.message, b"");
    assert_eq!(d.sender.as_deref(), Some(&b"jason@example.net"[..]));
    assert_eq!(d.recipients, vec![b"jason@example.net".to_vec()]);
    assert_eq!(d.end, Some(Ok(())));
}

#[test]
fn malformed_requests_table() {
    use ErrorKind::*;
    let table: &[(&[u8], ErrorKind)] = &[
        (
            b"045:0:,17:jason@example.net,17:jason@example.net,,",
            LeadingZero,
        ),
        (
            b"45:00:,17:jason@example.net,17:jason@example.net,,",
            LeadingZero,
        ),
        (
            b"45:0:,17:jason@example.net,17:jason@example.net,",
            Truncated,
        ),
        (
            b"45:0:,17:jason@example.net;17:jason@example.net,,",
            MissingComma(b';'),
        ),
        (
            b"45:0:,17:jason@example.net,17:jason@example.net,;",
            MissingComma(b';'),
        ),
        (
            b"45;0:,17:jason@example.net,17:jason@example.net,,",
            MissingColon(b';'),
        ),
        (
            b"45:0:,17;jason@example.net,17:jason@example.net,,",
            MissingColon(b';'),
        ),
        (b"x", MissingLengthDigit(b'x')),
        (b":", MissingLength),
        (b"24:0:,17:jason@example.net,,", NoRecipient),
        (b"3:0:,,", NoSender),
        (b"0:,", InnerOverrunsOuter),
        (b"10:20:", InnerOverrunsOuter),
        (b"26:0:,17:jason@example.net,99:", InnerOverrunsOuter),
        (
            b"45:0:,17:jason@example.net,17:jason@example.net,,X",
            TrailingData,
        ),
        (b"45:0:,17:jason@", Truncated),
        (b"", Truncated),
        // A request of 10^12 bytes is well formed so far: it is refused, but only at its end.
        (b"1000000000000:", Truncated),
        (
            b"1000000000000000000:",
            LengthOverLimit {
                length: 1_000_000_000_000_000_000,
                limit: nullq_proto::qmqp::MAX_ANNOUNCED,
            },
        ),
    ];
    for (input, expected) in table {
        let got = outcome(input);
        match (&got, expected) {
            // The exact number read before the cap was passed is an implementation detail.
            (Err(LengthOverLimit { .. }), LengthOverLimit { .. }) => {}
            _ => assert_eq!(
                got,
                Err(expected.clone()),
                "input {:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

#[test]
fn a_request_over_the_whole_request_limit_is_read_to_its_end_and_rejected() {
    let limits = Limits {
        max_message: 10,
        max_recipients: 2,
        max_address_len: 20,
    };
    let max = limits.max_request();
    let message = vec![b'x'; usize::try_from(max).unwrap() * 3];
    let big = encode_request(&message, b"a@b", &[b"c@d".to_vec()]);
    for chunk in [1, 7, 4096, usize::MAX] {
        let d = decode_chunked(&big, chunk, limits.clone());
        assert_eq!(
            d.end,
            Some(Err(ErrorKind::MessageTooBig {
                length: message.len() as u64,
                limit: 10
            })),
            "chunk {chunk}"
        );
        assert!(d.message.is_empty() && d.sender.is_none() && d.recipients.is_empty());
    }
    // Before the message's own length is read, the request's size is the reason a caller that
    // stops reading gives; after it, the message's.
    let mut decoder = RequestDecoder::new(limits.clone());
    let outer = big.iter().position(|&b| b == b':').unwrap() + 1;
    assert_eq!(decoder.feed(&big[..outer]).unwrap(), (outer, None));
    assert!(matches!(
        decoder.rejection().map(|e| e.kind()),
        Some(ErrorKind::RequestTooBig { limit, .. }) if *limit == max
    ));
    assert!(decoder.rejection().unwrap().is_resumable());
    let rest = &big[outer..outer + 100];
    let mut fed = 0;
    while fed < rest.len() {
        let (used, event) = decoder.feed(&rest[fed..]).unwrap();
        assert_eq!(event, None, "nothing of a refused request is handed out");
        fed += used;
    }
    assert!(matches!(
        decoder.rejection().map(|e| e.kind()),
        Some(ErrorKind::MessageTooBig { .. })
    ));
    assert_eq!(
        decoder.eof().map_err(|e| e.kind().clone()),
        Err(ErrorKind::Truncated)
    );
    // Too many recipients can also make a request too big; the precise reason wins at the end.
    let rcpts: Vec<Vec<u8>> = (0..200).map(|i| format!("r{i}@d").into_bytes()).collect();
    let many = encode_request(b"hi", b"a@b", &rcpts);
    assert!(many.len() as u64 > max);
    assert_eq!(
        decode_chunked(&many, 3, limits.clone()).end,
        Some(Err(ErrorKind::TooManyRecipients { limit: 2 }))
    );
    // A request within the limits is not touched by any of this.
    let fits = encode_request(&[b'x'; 10], b"a@b", &[b"c@d".to_vec()]);
    assert_eq!(decode_chunked(&fits, 3, limits).end, Some(Ok(())));
}

#[test]
fn limits_reject_after_reading_the_whole_request() {
    let limits = Limits {
        max_message: 10,
        max_recipients: 2,
        max_address_len: 20,
    };
    let big = encode_request(&[b'x'; 11], b"a@b", &[b"c@d".to_vec()]);
    let d = decode_chunked(&big, 4, limits.clone());
    assert_eq!(
        d.end,
        Some(Err(ErrorKind::MessageTooBig {
            length: 11,
            limit: 10
        }))
    );
    assert!(
        d.message.is_empty(),
        "no byte of a refused message is handed out"
    );

    let many = encode_request(
        b"hi",
        b"a@b",
        &[b"c@d".to_vec(), b"e@f".to_vec(), b"g@h".to_vec()],
    );
    let d = decode_chunked(&many, 5, limits.clone());
    assert_eq!(d.end, Some(Err(ErrorKind::TooManyRecipients { limit: 2 })));

    let long = encode_request(b"hi", &[b'a'; 21], &[b"c@d".to_vec()]);
    let d = decode_chunked(&long, 7, limits.clone());
    assert_eq!(
        d.end,
        Some(Err(ErrorKind::AddressTooLong {
            length: 21,
            limit: 20
        }))
    );

    let ok = encode_request(
        &[b'x'; 10],
        &[b'a'; 20],
        &[b"c@d".to_vec(), b"e@f".to_vec()],
    );
    assert_eq!(decode_chunked(&ok, 3, limits).end, Some(Ok(())));
}

#[test]
fn responses_round_trip_and_refuse_garbage() {
    for status in [Status::Ok, Status::TempFail, Status::PermFail] {
        let r = Response::new(status, "ok 1234 qp 5");
        let wire = r.encode();
        assert_eq!(Response::decode(&wire), Ok(Some((r, wire.len()))));
        assert_eq!(Response::decode(&wire[..wire.len() - 1]), Ok(None));
    }
    assert!(Response::decode(b"3:Xno,").is_err());
    assert!(Response::decode(b"0:,").is_err());
}

#[test]
fn frame_matches_encode() {
    let rcpts = vec![b"b@c".to_vec(), b"d@e".to_vec()];
    let (prefix, suffix) = request_frame(5, b"a@b", &rcpts);
    let framed = [prefix, b"hello".to_vec(), suffix].concat();
    assert_eq!(framed, encode_request(b"hello", b"a@b", &rcpts));
}

/// Every control byte (below 0x20, and DEL) is refused wherever it stands; spaces (a quoted
/// local part), UTF-8 and the empty sender are not.
#[test]
fn addresses_with_a_control_byte_are_refused_and_others_are_not() {
    for b in (0u8..0x20).chain([0x7f]) {
        for address in [
            [&[b][..], b"a@example.net"].concat(),
            [&b"a"[..], &[b], b"b@example.net"].concat(),
            [&b"a@example.net"[..], &[b]].concat(),
        ] {
            for sender in [true, false] {
                assert_eq!(
                    check_address(&address, sender),
                    Err(AddressProblem::ControlCharacter),
                    "{address:?}"
                );
            }
        }
    }
    for good in [
        &b"a@example.net"[..],
        b"\"jo smith\"@example.net",
        "j\u{f6}rg@b\u{fc}cher.example".as_bytes(),
        b"~!#$%&'*+/=?^_`{|}@example.net",
    ] {
        assert_eq!(check_address(good, false), Ok(()), "{good:?}");
    }
    assert_eq!(check_address(b"", true), Ok(()));
    assert_eq!(
        check_address(b"", false),
        Err(AddressProblem::NotLocalAtDomain)
    );
}

proptest! {
    // Failures are replayed from and saved to `qmqp.proptest-regressions` beside this file (by
    // default proptest would use `tests/proptest-regressions/qmqp.txt`, since `main.rs` next to
    // this file is a crate root).
    #![proptest_config(ProptestConfig::with_failure_persistence(
        FileFailurePersistence::WithSource("proptest-regressions")
    ))]

    #[test]
    fn round_trip_under_any_split(
        message in proptest::collection::vec(any::<u8>(), 0..2000),
        sender in proptest::collection::vec(any::<u8>(), 0..50),
        recipients in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..5),
        chunk in 1usize..300,
    ) {
        let wire = encode_request(&message, &sender, &recipients);
        let d = decode_chunked(&wire, chunk, Limits::default());
        prop_assert_eq!(d.end, Some(Ok(())));
        prop_assert_eq!(d.message, message);
        prop_assert_eq!(d.sender, Some(sender));
        prop_assert_eq!(d.recipients, recipients);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        chunk in 1usize..20,
    ) {
        let whole = decode_chunked(&input, usize::MAX, Limits::default()).end;
        let split = decode_chunked(&input, chunk, Limits::default()).end;
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn mutated_requests_never_panic(
        seed_pos in 0usize..60, byte in any::<u8>(), chunk in 1usize..10,
    ) {
        let mut wire = encode_request(b"Subject: x\n\nhi\n", b"a@b.c", &[b"d@e.f".to_vec()]);
        let pos = seed_pos % wire.len();
        wire[pos] = byte;
        let whole = decode_chunked(&wire, usize::MAX, Limits::default()).end;
        let split = decode_chunked(&wire, chunk, Limits::default()).end;
        prop_assert_eq!(whole, split);
    }
}
