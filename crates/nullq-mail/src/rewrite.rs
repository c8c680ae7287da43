//! Address rewriting rules in CommuniGate Pro's Router syntax.
//!
//! This module owns the rule table only: parsing it and mapping one address. Who applies it,
//! and to which addresses, is the caller's business (qmail-inject applies `control/rewrite` to
//! the envelope and to the address fields of the header, after qmail's own rules; the server's
//! delivery policy may apply its own table).
//!
//! One rule a line, as in a Router table, so a site can move its records over unchanged:
//!
//! ```text
//! ; the seed's records
//! <postmaster@host1.example.net> = user@example.net
//! <*@host1.example.net>          = *@example.net
//! host2.example.org              = example.org
//! ```
//!
//! - `<pattern> = replacement`: the pattern is a whole address; it may hold one `*`, which
//!   matches any run of bytes (possibly empty); every `*` in the replacement stands for what it
//!   matched. Letters match without regard to case (addresses' domains are case-blind, and
//!   Router records are too); the matched text keeps the case it had.
//! - `domain = newdomain` (no angle brackets): shorthand for `<*@domain> = *@newdomain`.
//! - The replacement may be written in angle brackets (`= <user@example.net>`).
//! - Empty lines and lines starting with `;` or `#` are comments.
//! - The first rule that matches wins; its result is not rewritten again.

use std::fmt;

/// One rule: a pattern (split at its `*`) and a replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The pattern before its `*`, or the whole pattern when there is none.
    prefix: Vec<u8>,
    /// The pattern after its `*`; `None` when the pattern has no `*`.
    suffix: Option<Vec<u8>>,
    /// The replacement, `*` included where the match goes.
    replacement: Vec<u8>,
}

impl Rule {
    fn apply(&self, addr: &[u8]) -> Option<Vec<u8>> {
        match &self.suffix {
            None => self
                .prefix
                .eq_ignore_ascii_case(addr)
                .then(|| self.replacement.clone()),
            Some(suffix) => {
                if addr.len() < self.prefix.len() + suffix.len() {
                    return None;
                }
                let (head, rest) = addr.split_at(self.prefix.len());
                let (star, tail) = rest.split_at(rest.len() - suffix.len());
                if !head.eq_ignore_ascii_case(&self.prefix) || !tail.eq_ignore_ascii_case(suffix) {
                    return None;
                }
                let mut out = Vec::with_capacity(self.replacement.len() + star.len());
                for &b in &self.replacement {
                    if b == b'*' {
                        out.extend_from_slice(star);
                    } else {
                        out.push(b);
                    }
                }
                Some(out)
            }
        }
    }
}

/// A table of rewriting rules, tried in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteRules {
    rules: Vec<Rule>,
}

/// A line of a rule table that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for RuleError {}

/// Read a rule table (see the module documentation for the syntax).
pub fn parse_rules(text: &str) -> Result<RewriteRules, RuleError> {
    let mut rules = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| RuleError {
            line: n + 1,
            reason: format!("{reason}: {line}"),
        };
        let Some((left, right)) = line.split_once('=') else {
            return Err(err("no `=` between pattern and replacement"));
        };
        let (left, right) = (left.trim(), right.trim());
        let right = match right.strip_prefix('<') {
            Some(r) => r
                .strip_suffix('>')
                .ok_or_else(|| err("replacement lacks its closing `>`"))?,
            None => right,
        };
        if right.is_empty() {
            return Err(err("empty replacement"));
        }
        if right
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>')
        {
            return Err(err("blank or angle bracket inside the replacement"));
        }
        let (pattern, replacement) = match left.strip_prefix('<') {
            Some(l) => {
                let pattern = l
                    .strip_suffix('>')
                    .ok_or_else(|| err("pattern lacks its closing `>`"))?;
                (pattern.to_owned(), right.to_owned())
            }
            None => {
                // A domain record: every address in that domain.
                if left.is_empty()
                    || left.contains(['@', '*', '>'])
                    || left.contains(char::is_whitespace)
                {
                    return Err(err("expected <address> or a domain name before `=`"));
                }
                if right.contains(['@', '*']) {
                    return Err(err("a domain record's replacement is a domain name"));
                }
                (format!("*@{left}"), format!("*@{right}"))
            }
        };
        if pattern.is_empty()
            || pattern.contains(char::is_whitespace)
            || pattern.contains(['<', '>'])
        {
            return Err(err("bad pattern"));
        }
        let rule = match pattern.split_once('*') {
            None => Rule {
                prefix: pattern.into_bytes(),
                suffix: None,
                replacement: replacement.into_bytes(),
            },
            Some((prefix, suffix)) => {
                if suffix.contains('*') {
                    return Err(err("more than one `*` in the pattern"));
                }
                Rule {
                    prefix: prefix.as_bytes().to_vec(),
                    suffix: Some(suffix.as_bytes().to_vec()),
                    replacement: replacement.into_bytes(),
                }
            }
        };
        if rule.suffix.is_none() && rule.replacement.contains(&b'*') {
            return Err(err("`*` in the replacement but not in the pattern"));
        }
        rules.push(rule);
    }
    Ok(RewriteRules { rules })
}

impl RewriteRules {
    /// The rewritten form of `addr` by the first rule that matches, or `None` when none does.
    pub fn rewrite(&self, addr: &str) -> Option<String> {
        // Patterns and replacements are text, and `*` only moves whole runs of bytes, so the
        // result of a text address is text.
        self.rewrite_bytes(addr.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// [`RewriteRules::rewrite`] for an address as bytes (envelope addresses need not be UTF-8).
    pub fn rewrite_bytes(&self, addr: &[u8]) -> Option<Vec<u8>> {
        self.rules.iter().find_map(|r| r.apply(addr))
    }

    /// How many rules the table holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Does the table hold no rule?
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "\
        <postmaster@host1.example.net> = user@example.net\n\
        <*@host1.example.net> = *@example.net\n\
        <postmaster@host2.example.org> = user@example.org\n\
        <*@host2.example.org> = *@example.org\n";

    #[test]
    fn seed_records() {
        let r = parse_rules(SEED).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.rewrite("postmaster@host1.example.net").as_deref(),
            Some("user@example.net")
        );
        assert_eq!(
            r.rewrite("root@host1.example.net").as_deref(),
            Some("root@example.net")
        );
        assert_eq!(
            r.rewrite("Root@HOST1.Example.NET").as_deref(),
            Some("Root@example.net")
        );
        assert_eq!(
            r.rewrite("postmaster@host2.example.org").as_deref(),
            Some("user@example.org")
        );
        assert_eq!(r.rewrite("root@host3.example.net"), None);
        assert_eq!(r.rewrite("root@xhost1.example.net"), None);
        assert_eq!(
            r.rewrite("@host1.example.net").as_deref(),
            Some("@example.net")
        );
    }

    #[test]
    fn syntax() {
        let r =
            parse_rules("; comment\n# also\n\n host1.example.net = example.net \n<a*z> = <*>\n")
                .unwrap();
        assert_eq!(
            r.rewrite("bob@host1.example.net").as_deref(),
            Some("bob@example.net")
        );
        assert_eq!(r.rewrite("abcz").as_deref(), Some("bc"));
        assert_eq!(r.rewrite("az").as_deref(), Some(""));
        assert_eq!(r.rewrite("a"), None);
        for bad in [
            "<a@b>",
            "<a@b> =",
            "<a*b*c> = x",
            "<a@b = c",
            "<a@b> = <c",
            "a@b = c",
            "<a@b> = *@c",
            "dom = x@y",
            "<a b> = c",
            "<a@b> = c d",
        ] {
            let e = parse_rules(&format!("; ok\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
        }
    }

    #[test]
    fn first_match_wins() {
        let r = parse_rules("<*@x> = a@y\n<b@x> = b@z\n").unwrap();
        assert_eq!(r.rewrite("b@x").as_deref(), Some("a@y"));
    }
}
