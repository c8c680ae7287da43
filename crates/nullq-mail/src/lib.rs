//! nullq-mail: the message-rewriting half of the null client, and the mail formats the server
//! shares with it. Standard library only; no I/O beyond the readers and writers handed in.
//!
//! Where it sits: `sendmail → qmail-inject [this crate rewrites] → qmail-qmqpc ══QMQP══▶ server`;
//! the server reuses [`trace`] for its Received fields and [`rewrite`] for its address policy.
//!
//! - [`token822`]: RFC 822 tokens of address fields, parsed, walked and re-emitted as qmail does;
//! - [`quote`]: quoting of envelope addresses for header text;
//! - [`hfield`]: the header field names qmail-inject knows;
//! - [`headerbody`]: the header/body split, header bounded in memory, body streamed;
//! - [`injector`]: qmail-inject's rewriting of header and envelope;
//! - [`rewrite`]: address rewriting rules in CommuniGate Pro Router syntax;
//! - [`date`]: qmail's date and Message-ID formats;
//! - [`trace`]: the trace fields (`Received`) of a QMQP server, as qmail writes them.
//!
//! Errors are typed per module (a parse error is not an I/O error); the programs map them to
//! qmail's exit codes and messages at their edge.
//!
//! ```
//! use nullq_mail::injector::{Injector, Settings};
//! use std::time::UNIX_EPOCH;
//!
//! let mut s = Settings::new(b"jason", UNIX_EPOCH, 1);
//! s.defaulthost = b"example.net".to_vec();
//! let mut msg = Injector::new(s).unwrap();
//! msg.header_field(b"To: bob, alice@host1\n".to_vec()).unwrap();
//! let header = msg.finish_header(false).unwrap();
//! assert!(header.ends_with(b"To: bob@example.net, alice@host1.defaultdomain\n"));
//! assert_eq!(msg.sender(), Some(&b"jason@example.net"[..]));
//! ```

#![deny(missing_docs)]

pub mod date;
pub mod headerbody;
pub mod hfield;
pub mod injector;
pub mod quote;
pub mod rewrite;
pub mod token822;
pub mod trace;
