//! Access rules in ucspi-tcp's format (`/etc/qmqp.tcp` and the `/etc/qmqp.cdb` that `tcprules`
//! compiles from it), applied exactly as `tcpserver -x` applies them.
//!
//! This module owns the rules text syntax, the meaning of a compiled rules cdb's values, and
//! the order in which addresses are looked up. The cdb byte format itself is in
//! [`crate::cdb`].
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

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::cdb::{Cdb, CdbError};

/// What a rule does for a connection: the outcome of [`Rules::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection may go on.
    pub allow: bool,
    /// The variables an `allow` rule sets, in rule order (a variable set twice: the last one
    /// counts, as in the environment tcpserver builds). Always empty when denied.
    pub env: Vec<(String, String)>,
    /// The rule's address (the cdb key) that matched, for logs; `None` when no rule matched.
    /// The catch-all rule's key is the empty string.
    pub matched: Option<String>,
}

/// One rule's effect, decoded from its cdb value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    allow: bool,
    env: Vec<(String, String)>,
}

/// A set of access rules, from text or from a `tcprules` cdb.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Key (address form) to action; for a key given twice, the first.
    map: HashMap<Vec<u8>, Action>,
}

/// What is wrong with one line of a rules text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineProblem {
    /// The line has no `:` between address and instructions.
    NoColon,
    /// No `:` in the line is followed by `allow` or `deny`.
    NoAction,
    /// Something other than `,VAR=...` follows the action or a setting.
    ExpectedComma {
        /// What was found instead.
        found: String,
    },
    /// A `,VAR` setting with no `=`.
    MissingEquals,
    /// A setting `,=...` with no variable name.
    EmptyName,
    /// A setting `,VAR=` with nothing after the `=`.
    MissingValue,
    /// The value's quote (the first character after `=`) is never closed.
    Unterminated {
        /// The quote character.
        quote: char,
    },
    /// The line contains a carriage return (a CRLF file).
    CarriageReturn,
    /// The address starts or ends with a blank.
    BlankInAddress,
    /// An address with no `=`, `@` or `:` that is not made of digits and dots (and a range's
    /// `-`): `localhost:allow` where `=localhost:allow` was meant.
    BadIpv4,
    /// A range bound is not a decimal number.
    BadRangeNumber,
    /// A range that covers no number (`low > high`, or `low > 255`).
    EmptyRange,
    /// An IPv6 address or prefix that tcpserver would never print.
    BadIpv6 {
        /// The form to write instead, when there is one.
        canonical: Option<String>,
    },
    /// An IPv4-mapped IPv6 address: such clients are checked as IPv4.
    Ipv4Mapped {
        /// The IPv4 form to write instead.
        ipv4: String,
    },
    /// A host rule with upper case letters: tcpserver's names are lower case.
    UppercaseHost,
    /// A variable's name or value is not UTF-8 (the quote split a character).
    NotUtf8,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::NoColon => write!(f, "no ':' between address and instructions"),
            LineProblem::NoAction => write!(f, "expected 'allow' or 'deny' after the ':'"),
            LineProblem::ExpectedComma { found } => {
                write!(
                    f,
                    "expected ',VAR=\"value\"' or the end of the line, found {found:?}"
                )
            }
            LineProblem::MissingEquals => write!(f, "a setting has no '=' (write ,VAR=\"value\")"),
            LineProblem::EmptyName => write!(f, "a setting has no variable name before '='"),
            LineProblem::MissingValue => {
                write!(
                    f,
                    "a setting has nothing after '=' (write ,VAR=\"\" for an empty value)"
                )
            }
            LineProblem::Unterminated { quote } => {
                write!(f, "the value's quote {quote:?} is never closed")?;
                if *quote != '"' && *quote != '\'' {
                    write!(
                        f,
                        " (the first character after '=' is the quote: write ,VAR=\"value\")"
                    )?;
                }
                Ok(())
            }
            LineProblem::CarriageReturn => {
                write!(
                    f,
                    "carriage return in the line (convert the file to LF line ends)"
                )
            }
            LineProblem::BlankInAddress => write!(f, "blank at the start or end of the address"),
            LineProblem::BadIpv4 => write!(
                f,
                "not an IPv4 address or prefix (digits and dots; host rules start with '=')"
            ),
            LineProblem::BadRangeNumber => write!(f, "a range bound is not a decimal number"),
            LineProblem::EmptyRange => write!(f, "the range covers no number from 0 to 255"),
            LineProblem::BadIpv6 { canonical: Some(c) } => write!(
                f,
                "tcpserver writes this IPv6 address as {c}, so the rule would never match"
            ),
            LineProblem::BadIpv6 { canonical: None } => write!(
                f,
                "not an IPv6 address, nor a prefix of one in lower case ending in ':'"
            ),
            LineProblem::Ipv4Mapped { ipv4 } => {
                write!(f, "IPv4-mapped clients are checked as IPv4: write {ipv4}")
            }
            LineProblem::UppercaseHost => write!(
                f,
                "host names are looked up in lower case, so this rule would never match"
            ),
            LineProblem::NotUtf8 => write!(f, "a variable's name or value is not UTF-8"),
        }
    }
}

/// Why rules could not be read. Each names the file (when there is one) and what is wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum RulesError {
    /// The rules file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A line of a rules text is wrong.
    Line {
        /// The file, when read by [`Rules::load`].
        path: Option<PathBuf>,
        /// The line number, from 1.
        line: usize,
        /// The line as written.
        text: String,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// A text rules file is not UTF-8.
    NotUtf8 {
        /// The file.
        path: Option<PathBuf>,
        /// The line holding the first bad byte, from 1.
        line: usize,
    },
    /// The cdb is corrupt.
    Cdb {
        /// The file, when read by [`Rules::load`].
        path: Option<PathBuf>,
        /// What is wrong.
        source: CdbError,
    },
    /// A cdb rule sets a variable whose name or value is not UTF-8.
    CdbValue {
        /// The file, when read by [`Rules::load`].
        path: Option<PathBuf>,
        /// The rule's key, with bad bytes replaced.
        key: String,
    },
}

impl RulesError {
    fn with_path(mut self, p: &Path) -> RulesError {
        match &mut self {
            RulesError::Read { .. } => {}
            RulesError::Line { path, .. }
            | RulesError::NotUtf8 { path, .. }
            | RulesError::Cdb { path, .. }
            | RulesError::CdbValue { path, .. } => *path = Some(p.to_path_buf()),
        }
        self
    }
}

/// Writes `path: ` or, without a path, `what: `.
fn prefix(f: &mut fmt::Formatter<'_>, path: &Option<PathBuf>, what: &str) -> fmt::Result {
    match path {
        Some(p) => write!(f, "{}: ", p.display()),
        None => write!(f, "{what}: "),
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesError::Read { path, source } => {
                write!(f, "{}: cannot read rules: {source}", path.display())
            }
            RulesError::Line {
                path,
                line,
                text,
                problem,
            } => {
                prefix(f, path, "rules")?;
                write!(f, "line {line}: {problem}: {text:?}")
            }
            RulesError::NotUtf8 { path, line } => {
                prefix(f, path, "rules")?;
                write!(f, "line {line}: not UTF-8")
            }
            RulesError::Cdb { path, source } => {
                prefix(f, path, "rules cdb")?;
                write!(f, "{source}")
            }
            RulesError::CdbValue { path, key } => {
                prefix(f, path, "rules cdb")?;
                write!(f, "the rule for {key:?} sets a variable that is not UTF-8")
            }
        }
    }
}

impl std::error::Error for RulesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RulesError::Read { source, .. } => Some(source),
            RulesError::Cdb { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decodes a rule's cdb value as tcpserver's `found()` does: NUL-terminated items; `D` denies,
/// `+VAR=value` sets a variable; anything else, and bytes after the last NUL, are ignored.
/// A denied rule keeps no variables. `None` when a variable is not UTF-8.
fn decode(data: &[u8]) -> Option<Action> {
    let mut action = Action {
        allow: true,
        env: Vec::new(),
    };
    let mut rest = data;
    while let Some(nul) = rest.iter().position(|&b| b == 0) {
        let item = &rest[..nul];
        match item.first() {
            Some(b'D') => action.allow = false,
            Some(b'+') => {
                let setting = &item[1..];
                if let Some(eq) = setting.iter().position(|&b| b == b'=') {
                    let name = std::str::from_utf8(&setting[..eq]).ok()?;
                    let value = std::str::from_utf8(&setting[eq + 1..]).ok()?;
                    action.env.push((name.to_owned(), value.to_owned()));
                }
            }
            _ => {}
        }
        rest = &rest[nul + 1..];
    }
    if !action.allow {
        // tcpserver sets them and then drops the connection: they never reach a program.
        action.env.clear();
    }
    Some(action)
}

/// The form of `ip` that tcpserver puts in `TCPREMOTEIP` and looks rules up by: dotted
/// decimal for IPv4 and IPv4-mapped IPv6, else the compact IPv6 form of the ucspi-tcp IPv6
/// patch (see the module docs).
pub fn remote_ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ip6_fmt(&v6),
        },
    }
}

/// `ip6_fmt` of the ucspi-tcp IPv6 patch: lower case hex groups, the longest run of zero
/// groups (even of one group; the first of equal runs) written `::`. Unlike RFC 5952, which
/// leaves a single zero group alone.
fn ip6_fmt(ip: &Ipv6Addr) -> String {
    let segs = ip.segments();
    let (mut best_pos, mut best_len) = (0usize, 0usize);
    let mut i = 0;
    while i < 8 {
        if segs[i] == 0 {
            let start = i;
            while i < 8 && segs[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_len = i - start;
                best_pos = start;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(39);
    let mut k = 0;
    while k < 8 {
        if best_len > 0 && k == best_pos {
            if k == 0 {
                out.push(':');
            }
            out.push(':');
            k += best_len;
            continue;
        }
        out.push_str(&format!("{:x}", segs[k]));
        if k < 7 {
            out.push(':');
        }
        k += 1;
    }
    out
}

/// The keys tcpserver tries for a client, in order (see the module docs). `remote_host` is
/// lowered to ASCII lower case, as tcpserver's DNS lookup returns it; an empty name counts as
/// none.
pub fn lookup_keys(ip: IpAddr, remote_host: Option<&str>) -> Vec<String> {
    let ip = remote_ip_string(ip);
    let host = remote_host
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase);
    let mut keys = vec![ip.clone()];
    if let Some(h) = &host {
        keys.push(format!("={h}"));
    }
    let b = ip.as_bytes();
    for len in (1..=b.len()).rev() {
        if b[len - 1] == b'.' || (b[len - 1] == b':' && len > 1) {
            keys.push(ip[..len].to_owned());
        }
    }
    if let Some(h) = &host {
        for (i, c) in h.char_indices() {
            if c == '.' {
                keys.push(format!("={}", &h[i..]));
            }
        }
        keys.push("=".to_owned());
    }
    keys.push(String::new());
    keys
}

/// `tcprules`' `getnum`: decimal digits only, empty is 0. Saturates instead of wrapping.
fn range_number(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.saturating_mul(10).saturating_add(u64::from(c - b'0')))
    })
}

/// The cdb keys `tcprules` makes from one address: several for a range.
fn expand_address(address: &[u8]) -> Result<Vec<Vec<u8>>, LineProblem> {
    let is_ip = !address.contains(&b'=') && !address.contains(&b'@');
    if !is_ip {
        if address.first() == Some(&b'=') && address.iter().any(|c| c.is_ascii_uppercase()) {
            return Err(LineProblem::UppercaseHost);
        }
        return Ok(vec![address.to_vec()]);
    }
    if address.first().is_some_and(|c| c.is_ascii_whitespace())
        || address.last().is_some_and(|c| c.is_ascii_whitespace())
    {
        return Err(LineProblem::BlankInAddress);
    }
    let ipv4_chars = |c: &u8| c.is_ascii_digit() || *c == b'.' || *c == b'-';
    if !address.contains(&b':') && !address.iter().all(ipv4_chars) {
        return Err(LineProblem::BadIpv4);
    }
    if let Some(dash) = address.iter().position(|&c| c == b'-') {
        let left = address[..dash]
            .iter()
            .rposition(|&c| c == b'.')
            .map_or(0, |p| p + 1);
        let right = address[dash + 1..]
            .iter()
            .position(|&c| c == b'.')
            .map_or(address.len(), |p| dash + 1 + p);
        let bot = range_number(&address[left..dash]).ok_or(LineProblem::BadRangeNumber)?;
        let top = range_number(&address[dash + 1..right])
            .ok_or(LineProblem::BadRangeNumber)?
            .min(255);
        if bot > top {
            return Err(LineProblem::EmptyRange);
        }
        return Ok((bot..=top)
            .map(|n| {
                let mut key = address[..left].to_vec();
                key.extend_from_slice(n.to_string().as_bytes());
                key.extend_from_slice(&address[right..]);
                key
            })
            .collect());
    }
    if address.contains(&b':') {
        check_ipv6(address)?;
    }
    Ok(vec![address.to_vec()])
}

/// Refuses IPv6 addresses and prefixes that tcpserver never prints.
fn check_ipv6(address: &[u8]) -> Result<(), LineProblem> {
    let text = String::from_utf8_lossy(address);
    if let Ok(v6) = text.parse::<Ipv6Addr>() {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(LineProblem::Ipv4Mapped {
                ipv4: v4.to_string(),
            });
        }
        let canonical = ip6_fmt(&v6);
        if canonical != text {
            return Err(LineProblem::BadIpv6 {
                canonical: Some(canonical),
            });
        }
        return Ok(());
    }
    let prefix_ok = address.last() == Some(&b':')
        && address
            .iter()
            .all(|&c| c == b':' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if prefix_ok {
        Ok(())
    } else {
        Err(LineProblem::BadIpv6 { canonical: None })
    }
}

/// Parses one rule line as `tcprules` does: `(address, value)`.
fn parse_line(line: &[u8]) -> Result<(&[u8], Vec<u8>), LineProblem> {
    if line.contains(&b'\r') {
        return Err(LineProblem::CarriageReturn);
    }
    if !line.contains(&b':') {
        return Err(LineProblem::NoColon);
    }
    // The IPv6 patch's tcprules: the first colon followed by "allow" or "deny". For IPv4 and
    // host rules that is the first colon, as in plain 0.88 (neither word is hex, so IPv6
    // addresses cannot fool it).
    let colon = (0..line.len())
        .find(|&i| {
            line[i] == b':'
                && (line[i + 1..].starts_with(b"allow") || line[i + 1..].starts_with(b"deny"))
        })
        .ok_or(LineProblem::NoAction)?;
    let address = &line[..colon];
    let mut x = &line[colon + 1..];
    let mut data = Vec::new();
    if let Some(rest) = x.strip_prefix(b"deny") {
        data.extend_from_slice(b"D\0");
        x = rest;
    } else if let Some(rest) = x.strip_prefix(b"allow") {
        x = rest;
    }
    while let Some(&c) = x.first() {
        if c != b',' {
            return Err(LineProblem::ExpectedComma {
                found: String::from_utf8_lossy(x).into_owned(),
            });
        }
        let eq = x
            .iter()
            .position(|&c| c == b'=')
            .ok_or(LineProblem::MissingEquals)?;
        if eq == 1 {
            return Err(LineProblem::EmptyName);
        }
        data.push(b'+');
        data.extend_from_slice(&x[1..=eq]);
        x = &x[eq + 1..];
        let (&quote, rest) = x.split_first().ok_or(LineProblem::MissingValue)?;
        let end = rest.iter().position(|&c| c == quote).ok_or_else(|| {
            // The quote as the character it starts, for the message.
            let shown = std::str::from_utf8(x)
                .ok()
                .and_then(|s| s.chars().next())
                .unwrap_or(char::from(quote));
            LineProblem::Unterminated { quote: shown }
        })?;
        data.extend_from_slice(&rest[..end]);
        data.push(0);
        x = &rest[end + 1..];
    }
    Ok((address, data))
}

impl Rules {
    /// No rules: every client is allowed, with no variables. (tcpserver without `-x`.)
    pub fn allow_all() -> Rules {
        Rules::default()
    }

    /// The server's built-in default when no rules file is configured: allow `127.` (all of
    /// 127.0.0.0/8) and `::1`, deny everyone else. As text:
    ///
    /// ```text
    /// 127.:allow
    /// ::1:allow
    /// :deny
    /// ```
    pub fn loopback_only() -> Rules {
        let mut map = HashMap::new();
        let allow = Action {
            allow: true,
            env: Vec::new(),
        };
        map.insert(b"127.".to_vec(), allow.clone());
        map.insert(b"::1".to_vec(), allow);
        map.insert(
            Vec::new(),
            Action {
                allow: false,
                env: Vec::new(),
            },
        );
        Rules { map }
    }

    /// Parses rules text (the input of `tcprules`). The first rule for an address wins, as
    /// in the cdb `tcprules` would write. Errors name the line (from 1) and what is wrong.
    pub fn from_text(text: &str) -> Result<Rules, RulesError> {
        let mut map = HashMap::new();
        for (idx, raw) in text.split('\n').enumerate() {
            let line = raw.trim_end_matches([' ', '\t']);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let err = |problem| RulesError::Line {
                path: None,
                line: idx + 1,
                text: line.to_owned(),
                problem,
            };
            let (address, data) = parse_line(line.as_bytes()).map_err(err)?;
            let keys = expand_address(address).map_err(err)?;
            let action = decode(&data).ok_or_else(|| err(LineProblem::NotUtf8))?;
            for key in keys {
                map.entry(key).or_insert_with(|| action.clone());
            }
        }
        Ok(Rules { map })
    }

    /// Reads a cdb compiled by `tcprules`. The whole cdb is checked here — every record must
    /// be found through the hash tables, every value must decode — so [`Rules::check`]
    /// cannot meet a corrupt file later.
    pub fn from_cdb(bytes: Vec<u8>) -> Result<Rules, RulesError> {
        let cdb_err = |source| RulesError::Cdb { path: None, source };
        let cdb = Cdb::new(bytes).map_err(cdb_err)?;
        let mut map = HashMap::new();
        for (key, _) in cdb.records().map_err(cdb_err)? {
            if map.contains_key(key) {
                continue;
            }
            // Look the key up as tcpserver would, which also proves the hash tables sound.
            let data = cdb.get(key).map_err(cdb_err)?.ok_or_else(|| {
                cdb_err(CdbError::Unindexed {
                    key: String::from_utf8_lossy(key).into_owned(),
                })
            })?;
            let action = decode(data).ok_or_else(|| RulesError::CdbValue {
                path: None,
                key: String::from_utf8_lossy(key).into_owned(),
            })?;
            map.insert(key.to_vec(), action);
        }
        Ok(Rules { map })
    }

    /// Reads rules from a file, text or cdb. A file is read as a cdb when its name ends in
    /// `.cdb` or when it holds a NUL byte (text rules never do; a cdb's header always does);
    /// otherwise as rules text. Errors name the file.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_cdb = path.extension().is_some_and(|e| e == "cdb") || bytes.contains(&0);
        let rules = if is_cdb {
            Rules::from_cdb(bytes)
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => Rules::from_text(&text),
                Err(e) => {
                    let bad = e.utf8_error().valid_up_to();
                    let line = 1 + e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count();
                    Err(RulesError::NotUtf8 { path: None, line })
                }
            }
        };
        rules.map_err(|e| e.with_path(path))
    }

    /// The number of distinct addresses (cdb keys) with a rule.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no rules at all (every client allowed).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Decides for a client at `ip` whose name (from reverse DNS, as TCPREMOTEHOST) is
    /// `remote_host`: the first rule found in tcpserver's order (see the module docs and
    /// [`lookup_keys`]); no rule: allow with no variables.
    pub fn check(&self, ip: IpAddr, remote_host: Option<&str>) -> Decision {
        for key in lookup_keys(ip, remote_host) {
            if let Some(action) = self.map.get(key.as_bytes()) {
                return Decision {
                    allow: action.allow,
                    env: action.env.clone(),
                    matched: Some(key),
                };
            }
        }
        Decision {
            allow: true,
            env: Vec::new(),
            matched: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
