//! Fuzz the qmail-queue envelope parser: never panics, and what parses re-encodes to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullq_proto::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::parse(data) {
        assert_eq!(envelope.encode(), data);
    }
});
