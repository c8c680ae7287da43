//! Fuzz the qmail-queue envelope parser: never panics, and what parses re-encodes to the bytes it
//! took (those after the final NUL are left unread, as qmail-qmqpc leaves them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullq_proto::envelope::QmailEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok((envelope, used)) = QmailEnvelope::parse_prefix(data) {
        assert_eq!(envelope.encode(), &data[..used]);
        assert_eq!(QmailEnvelope::parse(data), Ok(envelope));
    }
});
