//! Fuzz the QMQP request decoder: any bytes, split at a fuzzer-chosen point, under tight limits.
//! It must never panic, never hand out more message bytes than announced, and give the same
//! outcome whether the input arrives whole or in two pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullq_proto::qmqp::{Event, Limits, RequestDecoder, Response};

fn run(pieces: &[&[u8]], limits: &Limits) -> (Option<String>, u64, usize) {
    let mut d = RequestDecoder::new(limits.clone());
    let mut message = 0u64;
    let mut announced = None;
    let mut fields = 0usize;
    for piece in pieces {
        let mut input = *piece;
        while !input.is_empty() {
            match d.feed(input) {
                Err(e) => return (Some(e.kind().to_string()), message, fields),
                Ok((used, event)) => {
                    assert!(used > 0 && used <= input.len());
                    input = &input[used..];
                    match event {
                        Some(Event::MessageStart { len }) => announced = Some(len),
                        Some(Event::Message(b)) => {
                            message += b.len() as u64;
                            assert!(message <= announced.unwrap_or(0));
                            assert!(message <= limits.max_message);
                        }
                        Some(Event::Sender(a)) | Some(Event::Recipient(a)) => {
                            assert!(a.len() <= limits.max_address_len);
                            fields += 1;
                        }
                        Some(Event::End) => return (Some("end".into()), message, fields),
                        Some(Event::Rejected(e)) => return (Some(e.kind().to_string()), message, fields),
                        None => {}
                    }
                }
            }
        }
    }
    (d.eof().err().map(|e| e.kind().to_string()), message, fields)
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message: 512, max_recipients: 4, max_address_len: 64 };
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len().max(1));
    let whole = run(&[data], &limits);
    let parts = run(&[&data[..split], &data[split..]], &limits);
    assert_eq!(whole, parts);
    let _ = Response::decode(data);
});
