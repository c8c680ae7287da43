//! The site's policy, answering the seed's three wishes: which envelope senders a client may
//! use (checked before `K`), where it may send (relay control), and address rewriting in
//! CommuniGate Pro Router syntax (applied before delivery).
//!
//! Order and meaning (also in `docs/delivery.md`):
//! 1. **Class.** A client gets the `[[policy.clients]]` entry named by `NULLQ_POLICY` in its
//!    tcprules variables, else the first entry whose `tls_names` hold its verified TLS client
//!    certificate's name (`inbound::tls`: subject CN, else first DNS name; any case), else
//!    the first entry whose `networks` hold its address, else the `[policy]` defaults. Variables override the class: `NULLQ_SENDERS="p1,p2"` replaces its
//!    sender patterns, `RELAYCLIENT` (any value, as qmail-smtpd reads it) lets it relay,
//!    `NULLQ_HOST` names the client for `%h`.
//! 2. **Sender.** With patterns, the envelope sender *as sent* must match one (`*` is any run,
//!    letters match in any case, `%h` is the client's host name, `<>` is the null sender); with
//!    `header_from`, so must every address in the header's `From:`. Else `D` (#5.7.1).
//! 3. **Rewriting.** The Router records ([`nullq_mail::rewrite`]) map each envelope address
//!    (the null sender excepted) and each address in `From:`, `To:`, `Cc:`, `Reply-To:` (and
//!    their `Resent-` forms); the first record that matches wins, and its result is not
//!    rewritten again. The spool keeps what the client sent; the rewriting is applied by the
//!    delivery runner to what it hands the backend, so the queue shows the original.
//! 4. **Relay.** With `local_domains` set, a client that may not relay must send only to
//!    those domains (or below them), judged on each recipient *after* rewriting (where the
//!    message will really go). Else `D` (#5.7.1).

use std::sync::Arc;

use nullq_config::server::{Cidr, PolicyConfig};
use nullq_mail::token822::{self, Token};

use crate::inbound::peer::Peer;
use crate::process::logging::escape;
use crate::rewriting::{split_header, Rewriting, RewritingError};

/// The tcprules variables the policy reads (`nullq qmqpd` copies them from its environment).
pub const ENV_VARS: &[&str] = &["NULLQ_POLICY", "NULLQ_SENDERS", "NULLQ_HOST", "RELAYCLIENT"];

/// How much of the message's start a session keeps for the header `From:` check.
pub const HEAD_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Class {
    name: Option<String>,
    networks: Vec<Cidr>,
    tls_names: Vec<String>,
    senders: Vec<String>,
    header_from: bool,
    relay: bool,
}

/// The policy of a server, built from `[policy]`.
#[derive(Debug, Clone)]
pub struct Policy {
    rewriting: Arc<Rewriting>,
    local_domains: Vec<String>,
    default: Class,
    clients: Vec<Class>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::permissive()
    }
}

/// Does `addr` match `pattern` (`*` any run of bytes, ASCII letters in any case)?
pub fn matches(pattern: &[u8], addr: &[u8]) -> bool {
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return pattern.eq_ignore_ascii_case(addr);
    };
    let (prefix, rest) = (&pattern[..star], &pattern[star + 1..]);
    if addr.len() < prefix.len() || !addr[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    let addr = &addr[prefix.len()..];
    // Try every split point for the star (patterns are short, addresses under 1000 bytes).
    (0..=addr.len()).any(|i| matches(rest, &addr[i..]))
}

fn domain_of(addr: &[u8]) -> Option<String> {
    let at = addr.iter().rposition(|&b| b == b'@')?;
    Some(String::from_utf8_lossy(&addr[at + 1..]).to_ascii_lowercase())
}

fn env<'a>(peer: &'a Peer, name: &str) -> Option<&'a str> {
    peer.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Policy {
    /// Everyone may send anything anywhere, nothing is rewritten (the seed's setup).
    pub fn permissive() -> Policy {
        Policy {
            rewriting: Arc::new(Rewriting::none()),
            local_domains: Vec::new(),
            default: Class {
                name: None,
                networks: Vec::new(),
                tls_names: Vec::new(),
                senders: Vec::new(),
                header_from: false,
                relay: true,
            },
            clients: Vec::new(),
        }
    }

    /// The policy `[policy]` describes (reads `rewrite_file`).
    pub fn from_config(config: &PolicyConfig) -> Result<Policy, RewritingError> {
        let rewriting = Arc::new(Rewriting::from_config(config)?);
        let relay_default = config.local_domains.is_empty();
        let default = Class {
            name: None,
            networks: Vec::new(),
            tls_names: Vec::new(),
            senders: config.senders.clone(),
            header_from: config.header_from,
            relay: config.relay.unwrap_or(relay_default),
        };
        let mut clients = Vec::new();
        for c in &config.clients {
            clients.push(Class {
                name: c.name.clone(),
                networks: c.networks.clone(),
                tls_names: c.tls_names.clone(),
                senders: c.senders.clone(),
                header_from: c.header_from,
                relay: c.relay.or(config.relay).unwrap_or(relay_default),
            });
        }
        Ok(Policy {
            rewriting,
            local_domains: config
                .local_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            default,
            clients,
        })
    }

    /// The site's address rewriting (shared with the delivery runner, which applies it).
    pub fn rewriting(&self) -> &Arc<Rewriting> {
        &self.rewriting
    }

    /// Does any class check the header `From:` (so sessions must keep the message's start)?
    pub fn wants_header(&self) -> bool {
        self.default.header_from || self.clients.iter().any(|c| c.header_from)
    }

    fn class_of(&self, peer: &Peer) -> &Class {
        if let Some(name) = env(peer, "NULLQ_POLICY") {
            if let Some(c) = self
                .clients
                .iter()
                .find(|c| c.name.as_deref() == Some(name))
            {
                return c;
            }
        }
        if let Some(cert) = peer.tls_name() {
            if let Some(c) = self
                .clients
                .iter()
                .find(|c| c.tls_names.iter().any(|n| n.eq_ignore_ascii_case(cert)))
            {
                return c;
            }
        }
        if let Some(ip) = peer.ip {
            if let Some(c) = self
                .clients
                .iter()
                .find(|c| c.networks.iter().any(|n| n.contains(ip)))
            {
                return c;
            }
        }
        &self.default
    }

    fn is_local(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| {
            domain == d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }

    /// Check a request before it is committed: `Err(text)` is the `D` answer. `head` is the
    /// start of the message (only read when a `From:` check applies).
    pub fn check(
        &self,
        peer: &Peer,
        sender: &[u8],
        recipients: &[Vec<u8>],
        head: &[u8],
    ) -> Result<(), String> {
        let class = self.class_of(peer);
        let from_env: Vec<String>;
        let patterns: &[String] = match env(peer, "NULLQ_SENDERS") {
            Some(list) => {
                from_env = list
                    .split([',', ' '])
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                &from_env
            }
            None => &class.senders,
        };
        if !patterns.is_empty() {
            let host = env(peer, "NULLQ_HOST").map(str::to_owned).or_else(|| {
                (!peer.host.is_empty() && peer.host != "unknown").then(|| peer.host.clone())
            });
            let allowed = |addr: &[u8]| {
                patterns.iter().any(|p| {
                    if p == "<>" {
                        return addr.is_empty();
                    }
                    if p.contains("%h") {
                        return host
                            .as_deref()
                            .is_some_and(|h| matches(p.replace("%h", h).as_bytes(), addr));
                    }
                    !addr.is_empty() && matches(p.as_bytes(), addr)
                })
            };
            if !allowed(sender) {
                return Err(format!(
                    "sorry, the envelope sender <{}> is not allowed from your host (#5.7.1)",
                    escape(sender)
                ));
            }
            if class.header_from {
                for addr in header_addresses(head, "from") {
                    if !allowed(&addr) {
                        return Err(format!(
                            "sorry, the From: address <{}> is not allowed from your host (#5.7.1)",
                            escape(&addr)
                        ));
                    }
                }
            }
        }
        let relay = class.relay || env(peer, "RELAYCLIENT").is_some();
        if !self.local_domains.is_empty() && !relay {
            for r in recipients {
                let rewritten = self.rewriting.rewrite_address(r);
                let local = domain_of(&rewritten).is_some_and(|d| self.is_local(&d));
                if !local {
                    return Err(format!(
                        "sorry, relaying to <{}> is not allowed from your host (#5.7.1)",
                        escape(r)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The addresses in the header fields called `name` (lowercase) of `head`.
fn header_addresses(head: &[u8], name: &str) -> Vec<Vec<u8>> {
    let (fields, _) = split_header(head);
    let mut found = Vec::new();
    for (s, e) in fields {
        let field = &head[s..e];
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        if !String::from_utf8_lossy(&field[..colon])
            .trim()
            .eq_ignore_ascii_case(name)
        {
            continue;
        }
        if let Ok(tokens) = token822::parse(field) {
            let _ = token822::addrlist(&tokens, |reversed: &mut Vec<Token>| {
                let mut forward = reversed.clone();
                forward.reverse();
                found.push(token822::unquote(&forward));
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_policy() -> Policy {
        Policy::from_config(&PolicyConfig {
            rewrite: vec![
                "<postmaster@host1.example.net> = user@example.net".into(),
                "<*@host1.example.net> = *@example.net".into(),
            ],
            ..PolicyConfig::default()
        })
        .unwrap()
    }

    fn peer(ip: &str, env: &[(&str, &str)]) -> Peer {
        Peer {
            ip: ip.parse().ok(),
            host: "unknown".into(),
            ip_text: None,
            info: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls: None,
        }
    }

    #[test]
    fn seed_records_rewrite_envelope_and_header() {
        let p = seed_policy();
        assert_eq!(
            p.rewriting()
                .rewrite_address(b"postmaster@host1.example.net"),
            b"user@example.net"
        );
        assert_eq!(
            p.rewriting().rewrite_address(b"jason@host1.example.net"),
            b"jason@example.net"
        );
        assert_eq!(
            p.rewriting().rewrite_address(b"bob@elsewhere.org"),
            b"bob@elsewhere.org"
        );
        assert_eq!(p.rewriting().rewrite_address(b""), b"");
        let msg = b"Received: from x\n  by y\nFrom: \"Jason M\" <jason@host1.example.net>\nTo: postmaster@host1.example.net,\n  bob@elsewhere.org\nSubject: to: jason@host1.example.net\n\nFrom: jason@host1.example.net\n";
        let out = p.rewriting().rewrite_header(msg).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Received: from x\n  by y\nFrom: \"Jason M\" <jason@example.net>\nTo: user@example.net, bob@elsewhere.org\nSubject: to: jason@host1.example.net\n\nFrom: jason@host1.example.net\n"
        );
        assert_eq!(
            p.rewriting()
                .rewrite_header(b"To: bob@elsewhere.org\n\nhi\n"),
            None
        );
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches(b"*@example.net", b"jason@Example.NET"));
        assert!(!matches(b"*@example.net", b"jason@host1.example.net"));
        assert!(matches(b"*@*.example.net", b"jason@host1.example.net"));
        assert!(matches(
            b"root@host1.example.net",
            b"ROOT@host1.example.net"
        ));
        assert!(!matches(b"a*b", b"ac"));
    }

    #[test]
    fn senders_relay_and_classes() {
        let p = Policy::from_config(&PolicyConfig {
            local_domains: vec!["example.net".into()],
            senders: vec!["*@example.net".into(), "*@%h".into()],
            clients: vec![nullq_config::server::ClientPolicy {
                networks: vec!["10.1.0.0/16".parse().unwrap()],
                senders: vec!["*@host1.example.net".into()],
                relay: Some(true),
                ..Default::default()
            }],
            ..PolicyConfig::default()
        })
        .unwrap();
        let rc = vec![b"postmaster@example.net".to_vec()];
        let anyone = peer("192.0.2.1", &[]);
        assert!(p.check(&anyone, b"jason@example.net", &rc, b"").is_ok());
        assert!(p
            .check(&anyone, b"jason@evil.org", &rc, b"")
            .unwrap_err()
            .contains("#5.7.1"));
        assert!(p.check(&anyone, b"", &rc, b"").is_err());
        let relay = vec![b"bob@gmail.example".to_vec()];
        assert!(p
            .check(&anyone, b"jason@example.net", &relay, b"")
            .unwrap_err()
            .contains("relaying"));
        assert!(p
            .check(
                &peer("192.0.2.1", &[("RELAYCLIENT", "")]),
                b"jason@example.net",
                &relay,
                b""
            )
            .is_ok());
        let named = peer("192.0.2.1", &[("NULLQ_HOST", "lou.example.net")]);
        assert!(p.check(&named, b"adm@lou.example.net", &rc, b"").is_ok());
        let inside = peer("10.1.2.3", &[]);
        assert!(p
            .check(&inside, b"root@host1.example.net", &relay, b"")
            .is_ok());
        assert!(p.check(&inside, b"jason@example.net", &rc, b"").is_err());
        let sub = vec![b"x@mail.example.net".to_vec()];
        assert!(p.check(&anyone, b"jason@example.net", &sub, b"").is_ok());
        let env_senders = peer("192.0.2.1", &[("NULLQ_SENDERS", "*@other.org")]);
        assert!(p.check(&env_senders, b"a@other.org", &rc, b"").is_ok());
    }

    #[test]
    fn header_from_check() {
        let p = Policy::from_config(&PolicyConfig {
            senders: vec!["*@example.net".into()],
            header_from: true,
            ..PolicyConfig::default()
        })
        .unwrap();
        assert!(p.wants_header());
        let rc = vec![b"a@example.net".to_vec()];
        let anyone = peer("127.0.0.1", &[]);
        assert!(p
            .check(
                &anyone,
                b"a@example.net",
                &rc,
                b"From: A <a@example.net>\n\nx"
            )
            .is_ok());
        let e = p
            .check(
                &anyone,
                b"a@example.net",
                &rc,
                b"From: Boss <boss@evil.org>\n\nx",
            )
            .unwrap_err();
        assert!(e.contains("From:"), "{e}");
        assert!(!Policy::permissive().wants_header());
    }

    #[test]
    fn a_certificate_name_picks_its_class_before_the_network() {
        use nullq_config::server::ClientPolicy;
        let p = Policy::from_config(&PolicyConfig {
            senders: vec!["nobody@example.net".into()],
            clients: vec![
                ClientPolicy {
                    networks: vec!["127.0.0.0/8".parse().unwrap()],
                    senders: vec!["*@net.example.net".into()],
                    ..ClientPolicy::default()
                },
                ClientPolicy {
                    tls_names: vec!["Host1.Example.NET".into()],
                    senders: vec!["*@host1.example.net".into()],
                    ..ClientPolicy::default()
                },
            ],
            ..PolicyConfig::default()
        })
        .unwrap();
        let rc = vec![b"a@example.net".to_vec()];
        let tls = |client: Option<&str>| {
            let mut p = peer("127.0.0.1", &[]);
            p.tls = Some(crate::inbound::peer::TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                client: client.map(str::to_owned),
            });
            p
        };
        let named = tls(Some("host1.example.net"));
        assert!(p.check(&named, b"u@host1.example.net", &rc, b"").is_ok());
        assert!(p.check(&named, b"u@net.example.net", &rc, b"").is_err());
        // Without a certificate name (plain, or TLS without one): the network's class.
        for other in [
            peer("127.0.0.1", &[]),
            tls(None),
            tls(Some("host2.example.net")),
        ] {
            assert!(p.check(&other, b"u@net.example.net", &rc, b"").is_ok());
            assert!(p.check(&other, b"u@host1.example.net", &rc, b"").is_err());
        }
        assert_eq!(
            named.tls_text(),
            "TLSv1.3/TLS13_AES_256_GCM_SHA384/host1.example.net"
        );
        assert_eq!(peer("127.0.0.1", &[]).tls_text(), "-");
    }
}
