//! One line of rules text, read as `tcprules` reads it: the address (expanded into one cdb key
//! per address a range covers) and the cdb value its instructions compile to. Stricter than
//! `tcprules` where the crate docs say so.

use std::net::Ipv6Addr;

use crate::error::LineProblem;
use crate::lookup::ip6_fmt;

/// `tcprules`' `getnum`: decimal digits only, empty is 0. Saturates instead of wrapping.
fn range_number(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.saturating_mul(10).saturating_add(u64::from(c - b'0')))
    })
}

/// The cdb keys `tcprules` makes from one address: several for a range.
pub(crate) fn expand_address(address: &[u8]) -> Result<Vec<Vec<u8>>, LineProblem> {
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
pub(crate) fn parse_line(line: &[u8]) -> Result<(&[u8], Vec<u8>), LineProblem> {
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
