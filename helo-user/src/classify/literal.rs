//! Address literals as RFC 5321 section 4.1.3 defines them, and bare IP addresses.
//!
//! ```text
//! address-literal  = "[" ( IPv4-address-literal / IPv6-address-literal / General-address-literal ) "]"
//! IPv4-address-literal = Snum 3("." Snum)          ; Snum = 1*3DIGIT, 0..=255
//! IPv6-address-literal = "IPv6:" IPv6-addr
//! General-address-literal = Standardized-tag ":" 1*dcontent
//! IPv6-addr   = IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp
//! IPv6-full   = IPv6-hex 7(":" IPv6-hex)            ; IPv6-hex = 1*4HEXDIG
//! IPv6-comp   = [IPv6-hex *5(":" IPv6-hex)] "::" [IPv6-hex *5(":" IPv6-hex)]
//!               ; "::" stands for at least 2 groups: at most 6 groups besides it
//! IPv6v4-full = IPv6-hex 5(":" IPv6-hex) ":" IPv4-address-literal
//! IPv6v4-comp = [IPv6-hex *3(":" IPv6-hex)] "::" [IPv6-hex *3(":" IPv6-hex) ":"] IPv4-address-literal
//!               ; at most 4 groups besides "::" and the IPv4 part
//! ```
//!
//! This grammar is followed to the letter, because it is stricter and looser than Rust's
//! `FromStr` parsers in different places: `Snum` allows leading zeros (`[001.2.3.4]` is valid), and
//! `::` must stand for at least two groups (`[IPv6:1:2:3:4:5:6:7::]` is not valid here).
//! ABNF literals are case-insensitive, so the `IPv6:` tag is matched in any case; that also keeps
//! the verdict the same after the kernel's lower-casing.
//!
//! The General-address-literal form is syntax without meaning unless its tag is registered with
//! IANA; none besides `IPv6` is, so any other tag is reported as [`LiteralError::UnknownTag`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralError {
    /// Not an address literal under the grammar: `[1.2.3]`, `[::1]`, `[IPv6:1.2.3.4]`, ...
    Malformed,
    /// Well-formed General-address-literal, but with a tag that no RFC defines.
    UnknownTag,
}

/// Parses `[...]`, brackets included.
pub fn parse_address_literal(s: &[u8]) -> Result<IpAddr, LiteralError> {
    let inner = s.strip_prefix(b"[").and_then(|rest| rest.strip_suffix(b"]")).ok_or(LiteralError::Malformed)?;
    if let Some(v4) = parse_ipv4(inner) {
        return Ok(IpAddr::V4(v4));
    }
    if inner.len() >= 5 && inner[..5].eq_ignore_ascii_case(b"ipv6:") {
        return parse_ipv6(&inner[5..]).map(IpAddr::V6).ok_or(LiteralError::Malformed);
    }
    // `[2001:db8::1]` fits the General-address-literal grammar with tag `2001`, but it is an IPv6
    // address without its tag, and is reported as such.
    if is_general_literal(inner) && parse_ipv6(inner).is_none() {
        return Err(LiteralError::UnknownTag);
    }
    Err(LiteralError::Malformed)
}

/// An IP address written without brackets, in any spelling a client might use: RFC 5321's
/// (leading zeros allowed) or the conventional one.
pub fn parse_bare_ip(s: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(s) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = parse_ipv6(s) {
        return Some(IpAddr::V6(v6));
    }
    let text = std::str::from_utf8(s).ok()?;
    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `Snum 3("." Snum)`.
pub fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for octet in &mut octets {
        *octet = parse_snum(parts.next()?)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

fn parse_snum(s: &[u8]) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = s.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(value).ok()
}

fn parse_hex_group(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    s.iter().try_fold(0u16, |acc, &d| {
        let digit = (d as char).to_digit(16)?;
        Some(acc << 4 | digit as u16)
    })
}

/// Up to 8 groups of one side of an IPv6 address. `allow_v4_tail` lets the last element be a
/// dotted IPv4 address, which then counts as two groups.
struct Groups {
    values: [u16; 8],
    hex_groups: usize,
    has_v4: bool,
}

impl Groups {
    fn len(&self) -> usize {
        self.hex_groups + if self.has_v4 { 2 } else { 0 }
    }
}

fn parse_groups(s: &[u8], allow_v4_tail: bool) -> Option<Groups> {
    let mut groups = Groups { values: [0; 8], hex_groups: 0, has_v4: false };
    if s.is_empty() {
        return Some(groups);
    }
    let mut parts = s.split(|&b| b == b':').peekable();
    while let Some(part) = parts.next() {
        let is_last = parts.peek().is_none();
        if is_last && allow_v4_tail && part.contains(&b'.') {
            let v4 = parse_ipv4(part)?.octets();
            let at = groups.hex_groups;
            if at + 2 > 8 {
                return None;
            }
            groups.values[at] = u16::from_be_bytes([v4[0], v4[1]]);
            groups.values[at + 1] = u16::from_be_bytes([v4[2], v4[3]]);
            groups.has_v4 = true;
        } else {
            if groups.hex_groups == 8 {
                return None;
            }
            groups.values[groups.hex_groups] = parse_hex_group(part)?;
            groups.hex_groups += 1;
        }
    }
    Some(groups)
}

/// `IPv6-addr` per RFC 5321.
pub fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    let mut out = [0u16; 8];
    match find_double_colon(s) {
        None => {
            let g = parse_groups(s, true)?;
            let valid = if g.has_v4 { g.hex_groups == 6 } else { g.hex_groups == 8 };
            if !valid {
                return None;
            }
            out = g.values;
        }
        Some(at) => {
            let (head, tail) = (&s[..at], &s[at + 2..]);
            // A second "::", or ":::", makes one side start or end with a colon or hold an empty
            // group, which parse_groups refuses.
            let head = parse_groups(head, false)?;
            let tail = parse_groups(tail, true)?;
            let besides = head.hex_groups + tail.hex_groups;
            let limit = if tail.has_v4 { 4 } else { 6 };
            if besides > limit {
                return None;
            }
            out[..head.hex_groups].copy_from_slice(&head.values[..head.hex_groups]);
            let tail_len = tail.len();
            out[8 - tail_len..].copy_from_slice(&tail.values[..tail_len]);
        }
    }
    Some(Ipv6Addr::from(out))
}

fn find_double_colon(s: &[u8]) -> Option<usize> {
    s.windows(2).position(|w| w == b"::")
}

/// `Standardized-tag ":" 1*dcontent` with `Standardized-tag = Ldh-str`.
fn is_general_literal(inner: &[u8]) -> bool {
    let Some(colon) = inner.iter().position(|&b| b == b':') else {
        return false;
    };
    let (tag, content) = (&inner[..colon], &inner[colon + 1..]);
    let tag_ok =
        !tag.is_empty() && tag.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') && tag.last().is_some_and(u8::is_ascii_alphanumeric);
    let is_dcontent = |b: &u8| matches!(*b, 33..=90 | 94..=126);
    tag_ok && !content.is_empty() && content.iter().all(is_dcontent)
}

/// The address with IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`, deprecated
/// but still a way to write it) IPv6 addresses turned into the IPv4 address they carry, so that
/// every spelling of one host compares equal.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let seg = v6.segments();
            // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4 ones.
            if seg[..6] == [0; 6] && seg[6] != 0 {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
    }
}
