//! [`Cidr`]: a network as `[[policy.clients]] networks` writes it (`128.164.26.0/24`,
//! `2001:db8::/32`, or one address), parsed once when the file is read.
//!
//! Small enough to keep here rather than take a crate for: parse, print, `contains`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IP network: an address and how many of its leading bits a client must share with it.
/// The address is kept as written (`10.1.2.3/16` is `10.1.0.0/16`: only the prefix counts
/// when matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 32 (IPv4) or 128 (IPv6) for a single address.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Is `ip` in this network? An IPv4-mapped IPv6 client (`::ffff:1.2.3.4`) is its IPv4
    /// address, as the kernel hands it to a dual-stack listener; IPv4 never matches IPv6.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (ip, self.addr) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }

    fn full_length(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX` or a single address; blanks around either part are allowed.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or ADDRESS/PREFIX"))?;
        let max = Cidr::full_length(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    /// A single address as the address alone, else `ADDRESS/PREFIX`: text that parses back
    /// to the same network.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Cidr::full_length(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_print_and_contains() {
        let net: Cidr = "128.164.26.0/24".parse().unwrap();
        assert_eq!(net.prefix(), 24);
        assert!(net.contains(ip("128.164.26.200")));
        assert!(net.contains(ip("::ffff:128.164.26.3")));
        assert!(!net.contains(ip("128.164.27.1")));
        assert!(!net.contains(ip("::1")));
        assert_eq!(net.to_string(), "128.164.26.0/24");
        // Host bits in the address do not matter; the address is kept as written.
        let loose: Cidr = " 10.1.2.3 / 16 ".parse().unwrap();
        assert!(loose.contains(ip("10.1.255.255")));
        assert_eq!(loose.to_string(), "10.1.2.3/16");
        let one: Cidr = "1.2.3.4".parse().unwrap();
        assert_eq!((one.prefix(), one.to_string().as_str()), (32, "1.2.3.4"));
        assert!(one.contains(ip("1.2.3.4")) && !one.contains(ip("1.2.3.5")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("::1")));
        for text in ["128.164.26.0/24", "1.2.3.4", "2001:db8::/32", "::1"] {
            assert_eq!(text.parse::<Cidr>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_networks() {
        assert_eq!(
            "1.2.3.4/33".parse::<Cidr>(),
            Err("\"1.2.3.4/33\": bad prefix length".to_owned())
        );
        assert_eq!(
            "example.net".parse::<Cidr>(),
            Err("\"example.net\" is not an IP address or ADDRESS/PREFIX".to_owned())
        );
        for bad in ["::/129", "1.2.3.4/", "1.2.3.4/-1", "", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
