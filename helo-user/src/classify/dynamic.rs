//! Does a name embed its sender's IPv4 address? Access networks name their customers' addresses
//! after the address (`c-76-121-96-159.hsd1.example.net`, `159-96-121-76.dsl.example.org`,
//! `host4c79609f.example.com`); a greeting like that usually comes from a home machine, not a
//! mail server. It is only ever an observation unless an operator opts in.
//!
//! Recognised spellings, for a.b.c.d:
//! - the four octets as consecutive decimal numbers with any separators, forward or reversed;
//! - the twelve-digit zero-padded form `aaabbbcccddd`, forward or reversed;
//! - the eight-hex-digit form, forward or reversed byte order.
//!
//! IPv6 clients are not checked: their names rarely embed the address, and a /64 has too many
//! addresses for the embedding to mean anything.

use std::net::Ipv4Addr;

pub fn embeds_ipv4(name: &[u8], ip: Ipv4Addr) -> bool {
    let octets = ip.octets();
    let mut reversed = octets;
    reversed.reverse();
    embeds_decimal(name, octets, reversed) || embeds_hex(name, octets) || embeds_hex(name, reversed)
}

fn embeds_decimal(name: &[u8], forward: [u8; 4], reversed: [u8; 4]) -> bool {
    // The last four numbers seen, oldest first; `None` for a number that cannot be an octet.
    let mut recent: [Option<u8>; 4] = [None; 4];
    let mut i = 0;
    while i < name.len() {
        if !name[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < name.len() && name[i].is_ascii_digit() {
            i += 1;
        }
        let run = &name[start..i];
        if run.len() == 12 && (is_zero_padded(run, forward) || is_zero_padded(run, reversed)) {
            return true;
        }
        recent.rotate_left(1);
        recent[3] = octet_value(run);
        if recent == forward.map(Some) || recent == reversed.map(Some) {
            return true;
        }
    }
    false
}

fn octet_value(run: &[u8]) -> Option<u8> {
    if run.len() > 3 {
        return None;
    }
    let value = run.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(value).ok()
}

fn is_zero_padded(run: &[u8], octets: [u8; 4]) -> bool {
    run.chunks(3).zip(octets).all(|(chunk, octet)| octet_value(chunk) == Some(octet))
}

fn embeds_hex(name: &[u8], octets: [u8; 4]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut needle = [0u8; 8];
    for (k, octet) in octets.iter().enumerate() {
        needle[2 * k] = HEX[usize::from(octet >> 4)];
        needle[2 * k + 1] = HEX[usize::from(octet & 0xf)];
    }
    name.windows(needle.len()).any(|w| w == needle)
}
