//! `[policy]` and `[[policy.clients]]`: what each client may send (senders, relaying) and how
//! addresses are rewritten. A client's networks are parsed here, when the file is read; the
//! server's policy applies the rest per request.

use std::fmt;
use std::path::PathBuf;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::error::{invalid, keyed, unkeyed, ConfigError};

/// `[policy]`: what clients may send and how addresses are rewritten, checked before `K`.
///
/// A client gets the first `[[policy.clients]]` entry that names it (by `NULLQ_POLICY=name` in
/// its tcprules variables, else by its verified TLS certificate's name, else by network), or
/// the defaults at this level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Address rewriting records in CommuniGate Pro Router syntax, one per string:
    /// `"<*@host1.example.net> = *@example.net"`. Applied before `rewrite_file`'s.
    pub rewrite: Vec<String>,
    /// A file of Router records, one a line (a site's Router table moved over unchanged).
    pub rewrite_file: Option<PathBuf>,
    /// The domains this site delivers for. Empty (the default): every client may send
    /// anywhere, as the seed's setup did. When set, only clients with `relay = true` may send
    /// to other domains. qmail's `rcpthosts`, Postfix's `relay_domains`.
    pub local_domains: Vec<String>,
    /// Allowed envelope senders for clients no entry names: patterns with `*`
    /// (`*@example.net`), `%h` for the client's host name, `<>` for the null sender. Empty:
    /// any sender.
    pub senders: Vec<String>,
    /// Check the header `From:` addresses against `senders` too. Default false.
    pub header_from: bool,
    /// May these clients send to domains outside `local_domains`? Default: yes when
    /// `local_domains` is empty, else no.
    pub relay: Option<bool>,
    /// Client classes, first match wins.
    #[serde(deserialize_with = "clients")]
    pub clients: Vec<ClientPolicy>,
}

/// `[[policy.clients]]`: one class of clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientPolicy {
    /// The class's name, chosen by `NULLQ_POLICY=name` in a tcprules rule.
    pub name: Option<String>,
    /// Networks (`128.164.26.0/24`, `2001:db8::/32`, or one address) whose clients are in
    /// this class.
    #[serde(deserialize_with = "networks")]
    pub networks: Vec<Cidr>,
    /// Names of verified TLS client certificates (`tls.client_ca`) whose clients are in this
    /// class: the certificate's subject CN, else its first DNS name, compared without regard
    /// to case. A certificate name is a stronger identity than an address, so these are
    /// matched before any class's `networks`. A client without a verified certificate never
    /// matches them.
    pub tls_names: Vec<String>,
    /// Allowed envelope senders, as `[policy] senders`. Empty: any.
    pub senders: Vec<String>,
    /// Check the header `From:` too.
    pub header_from: bool,
    /// May relay (send outside `local_domains`)? Default as `[policy] relay`.
    pub relay: Option<bool>,
}

impl PolicyConfig {
    /// The rewriting rules: `rewrite`, then `rewrite_file` (read now).
    pub fn rewrite_rules(&self) -> Result<nullq_mail::rewrite::RewriteRules, ConfigError> {
        let mut text = self.rewrite.join("\n");
        if let Some(path) = &self.rewrite_file {
            let file = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            text.push('\n');
            text.push_str(&file);
        }
        nullq_mail::rewrite::parse_rules(&text)
            .map_err(|e| invalid("policy.rewrite", e.to_string()))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        nullq_mail::rewrite::parse_rules(&self.rewrite.join("\n"))
            .map_err(|e| invalid("policy.rewrite", format!("record {}: {}", e.line, e.reason)))?;
        for d in &self.local_domains {
            if d.trim().is_empty() || d.contains(['@', ' ', '*']) {
                return Err(invalid(
                    "policy.local_domains",
                    format!("{d:?} is not a domain"),
                ));
            }
        }
        let check_senders = |key: &str, senders: &[String]| {
            for s in senders {
                if s.trim().is_empty() || s.contains(char::is_whitespace) {
                    return Err(invalid(key, format!("{s:?} is not a sender pattern")));
                }
            }
            Ok(())
        };
        check_senders("policy.senders", &self.senders)?;
        for (n, c) in self.clients.iter().enumerate() {
            let key = format!("policy.clients[{n}]");
            if c.name.is_none() && c.networks.is_empty() && c.tls_names.is_empty() {
                return Err(invalid(&key, "needs a name, networks or tls_names"));
            }
            if let Some(bad) = c.tls_names.iter().find(|n| {
                n.is_empty() || n.contains(|ch: char| ch.is_whitespace() || ch.is_control())
            }) {
                return Err(invalid(
                    &format!("{key}.tls_names"),
                    format!("{bad:?} is not a certificate name"),
                ));
            }
            check_senders(&format!("{key}.senders"), &c.senders)?;
        }
        Ok(())
    }
}

/// `networks`: each a [`Cidr`]; a bad one is an error of the key `networks`, which
/// [`clients`] prefixes with the entry's place.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| n.parse().map_err(|e: String| keyed("networks", e)))
        .collect()
}

/// `clients`: the entries in order, an entry's [keyed](super::error::keyed) error named
/// `policy.clients[N].KEY`, as the checks after reading name the entry's other keys.
fn clients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ClientPolicy>, D::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<ClientPolicy>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of [[policy.clients]] tables")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            loop {
                match seq.next_element::<ClientPolicy>() {
                    Ok(Some(entry)) => entries.push(entry),
                    Ok(None) => return Ok(entries),
                    Err(e) => {
                        let text = e.to_string();
                        return Err(match unkeyed(&text) {
                            Some((key, problem)) => {
                                keyed(&format!("policy.clients[{}].{key}", entries.len()), problem)
                            }
                            None => e,
                        });
                    }
                }
            }
        }
    }
    d.deserialize_seq(Entries)
}
