//! The lookup order: the keys tcpserver tries for a client, first found wins (ucspi-tcp 0.88's
//! `rules.c`, see the crate docs), and the written form of an address those keys start from.

use std::net::{IpAddr, Ipv6Addr};

/// The form of `ip` that tcpserver puts in `TCPREMOTEIP` and looks rules up by: dotted
/// decimal for IPv4 and IPv4-mapped IPv6, else the compact IPv6 form of the ucspi-tcp IPv6
/// patch (see the crate docs).
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
pub(crate) fn ip6_fmt(ip: &Ipv6Addr) -> String {
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

/// The keys tcpserver tries for a client, in order (see the crate docs). `remote_host` is
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
