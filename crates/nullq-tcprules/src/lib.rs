//! Access rules in ucspi-tcp's format (`/etc/qmqp.tcp` and the `/etc/qmqp.cdb` that `tcprules`
//! compiles from it), applied exactly as `tcpserver -x` applies them.
//!
//! This crate owns the rules text syntax, the meaning of a compiled rules cdb's values, and
//! the order in which addresses are looked up; `nullq-server` asks it, for each connection,
//! before a byte of QMQP is read. One module each:
//! - [`cdb`]: the constant database's byte format (a reader; a writer for tests);
//! - `parse`: one line of rules text into the cdb keys and value `tcprules` would write;
//! - `lookup`: the keys tcpserver tries for a client, in order, and its form of an address;
//! - `rules`: [`Rules`], from text or cdb, and [`Rules::check`]'s [`Decision`];
//! - `error`: [`RulesError`] and [`LineProblem`], each naming the file and line.
//!
//! # The text format (what `tcprules` reads)
//!
//! One rule a line, `ADDRESS:INSTRUCTIONS`; lines beginning with `#` are comments and blank
//! lines are skipped. Trailing spaces and tabs are ignored.
//!
//! ADDRESS is one of:
//!
//! | address | matches |
//! | --- | --- |
//! | `1.2.3.4` | that IPv4 address |
//! | `1.2.3.` / `1.2.` / `1.` | every address starting so (the prefix must end in a dot) |
//! | `1.2.3.40-55` | a range: one rule per number. As in `tcprules`, the range may stand in any component, and what follows it is kept: `10.0.1-3.` is `10.0.1.`, `10.0.2.`, `10.0.3.`. An upper bound above 255 counts as 255; an empty bound counts as 0 |
//! | `=host.example.net` | a client whose name (TCPREMOTEHOST) is exactly that |
//! | `=.example.net` | a client whose name ends in `.example.net` |
//! | `=` | a client that has a name at all |
//! | (empty) | every client |
//! | `::1`, `2001:db8::7` | that IPv6 address |
//! | `2001:db8:` | every IPv6 address whose written form starts so (ends in `:`) |
//! | `info@1.2.3.4`, `info@=host` | TCPREMOTEINFO (ident) forms: accepted, never match (nullq does no ident lookups) |
//!
//! IPv6 follows the ucspi-tcp 0.88 IPv6 patch (Felix von Leitner's, the one behind the
//! `tcpserver` of most "ucspi-tcp6" packages of the 0.88 line): an address is written in the
//! compact form tcpserver puts in `TCPREMOTEIP` (lowercase hex, the longest run of zero groups
//! — even a single one, the first on a tie — written `::`), and a prefix is any leading part of
//! that form that ends in `:`. IPv4-mapped clients (`::ffff:1.2.3.4`) are checked as IPv4.
//! Debian's `tcprules` (plain 0.88) cannot compile IPv6 rules at all: it splits at the first
//! colon.
//!
//! INSTRUCTIONS are `allow` or `deny`, then zero or more `,VAR=` settings. As in `tcprules`,
//! the first character after `=` is the quote and the value runs to its next occurrence:
//! `,RELAYCLIENT=""`, `,X="a b"`, `,X='it"s'`, even `,X=/v/`. So `,X=abc` is an error (the quote
//! `a` is never closed). `deny` rules may carry settings too; they do nothing.
//!
//! # Where nullq is stricter than `tcprules`
//!
//! These lines make `tcprules` write a rule that can never match, or skip the line in silence;
//! nullq refuses them, naming the line: a line with no `:` at all; an address with leading or
//! trailing blanks; an address that is neither a host rule (`=...`), nor IPv4 digits and
//! dots, nor IPv6 (`localhost:allow`); an empty variable name; a range with no numbers in it (`10.0.0.9-5`); an
//! IPv6 address not in tcpserver's form (`::0:1`, upper case) or IPv4-mapped; a host rule with
//! upper case letters (tcpserver's names are lower case). Carriage returns (CRLF files) are
//! refused, as `tcprules` refuses them.
//!
//! # Lookup order
//!
//! From ucspi-tcp 0.88's `rules.c` (`doit`), the first key present wins:
//!
//! 1. the IP address (`1.2.3.4`);
//! 2. `=host`, when the client has a name;
//! 3. shorter and shorter prefixes of the IP ending in `.` (`1.2.3.`, `1.2.`, `1.`), or for
//!    IPv6 in `:` (longer than one character);
//! 4. when the client has a name: shorter and shorter suffixes of it that start with a dot
//!    (`=.mail.example.net`, `=.example.net`, `=.net`), then `=`;
//! 5. the empty address.
//!
//! No rule found: the connection is allowed with no variables set. (The `info@` forms come
//! before all of these in tcpserver, and only with ident; nullq has no ident.)

pub mod cdb;
mod error;
mod lookup;
mod parse;
mod rules;

pub use error::{LineProblem, RulesError};
pub use lookup::{lookup_keys, remote_ip_string};
pub use rules::{Decision, Rules};

#[cfg(test)]
mod tests;
