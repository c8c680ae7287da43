//! The wire formats of nullq, with no I/O: the first crate on the data path
//! `client ══QMQP══▶ session → spool → delivery`.
//!
//! - [`netstring`]: `<length>:<bytes>,` and its strict length parser;
//! - [`qmqp`]: the QMQP request decoder (incremental, events, limits) and encoders, responses;
//! - [`envelope`]: the qmail-queue envelope (`F`sender`\0T`rcpt`\0\0`);
//! - [`exit`]: qmail-queue's exit codes, the error protocol of every program that queues mail;
//! - [`smtp`]: the pure parts of an SMTP client (replies, EHLO capabilities, base64, dot-stuffing),
//!   shared by the server's `smtp://` backend and the null client's `smtp://` relay;
//! - [`DecodeError`]: one error type for the peer's bytes, with the offset and a reason a person
//!   reads in a QMQP `D` answer. "Need more bytes" is a return value, never an error.
//!
//! Nothing here reads a socket or a file, so all of it is covered by unit, property and fuzz
//! tests.
//!
//! ```
//! use nullq_proto::qmqp::{encode_request, Event, Limits, RequestDecoder};
//!
//! // The seed's example: an empty message from and to jason@example.net.
//! let wire = encode_request(b"", b"jason@example.net", &[b"jason@example.net".to_vec()]);
//! assert_eq!(wire, b"45:0:,17:jason@example.net,17:jason@example.net,,");
//!
//! let mut decoder = RequestDecoder::new(Limits::default());
//! let mut input = &wire[..];
//! let mut events = Vec::new();
//! while let (used, Some(event)) = decoder.feed(input).unwrap() {
//!     input = &input[used..];
//!     let end = event == Event::End;
//!     events.push(format!("{event:?}"));
//!     if end { break; }
//! }
//! assert_eq!(events.len(), 4); // MessageStart, Sender, Recipient, End
//! ```

#![deny(missing_docs)]

pub mod envelope;
mod error;
pub mod exit;
pub mod netstring;
pub mod qmqp;
pub mod smtp;

pub use error::{DecodeError, ErrorKind};
