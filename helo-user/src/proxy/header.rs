//! The PROXY protocol v2 header (haproxy's spec, section 2.2): binary, so no text parsing on the
//! MTA's side, and it carries IPv4 and IPv6 alike.

use std::net::{IpAddr, SocketAddr};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
/// `PP2_TYPE_UNIQUE_ID` (spec 2.2.5): an opaque id of the connection, up to 128 bytes.
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// The header for a TCP connection from `client` to `server`, carrying `unique_id` (cut to 128
/// bytes) as a TLV when it is not empty. Mixed families (an IPv4 client on a dual-stack socket)
/// are sent as IPv6 with the IPv4 address mapped.
pub fn encode(client: SocketAddr, server: SocketAddr, unique_id: &[u8]) -> Vec<u8> {
    let id = &unique_id[..unique_id.len().min(128)];
    let tlv = if id.is_empty() { 0 } else { 3 + id.len() };
    let mut h = Vec::with_capacity(16 + 36 + tlv);
    h.extend_from_slice(&SIGNATURE);
    h.push(V2_PROXY);
    match (client.ip().to_canonical(), server.ip().to_canonical()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            h.push(TCP_OVER_IPV4);
            h.extend_from_slice(&(12 + tlv as u16).to_be_bytes());
            h.extend_from_slice(&c.octets());
            h.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(TCP_OVER_IPV6);
            h.extend_from_slice(&(36 + tlv as u16).to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(s).octets());
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    if !id.is_empty() {
        h.push(PP2_TYPE_UNIQUE_ID);
        h.extend_from_slice(&(id.len() as u16).to_be_bytes());
        h.extend_from_slice(id);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_spec_layout() {
        let h = encode("198.18.0.1:40000".parse().unwrap(), "198.18.0.2:25".parse().unwrap(), b"");
        assert_eq!(h.len(), 28);
        assert_eq!(&h[..12], b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a");
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..24], &[198, 18, 0, 1, 198, 18, 0, 2]);
        assert_eq!(&h[24..], &[0x9c, 0x40, 0, 25]);
    }

    #[test]
    fn ipv6_and_mixed_families() {
        let h = encode("[2001:2::1]:1".parse().unwrap(), "[2001:2::2]:25".parse().unwrap(), b"");
        assert_eq!(h.len(), 52);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        let mixed = encode("198.18.0.1:1".parse().unwrap(), "[2001:2::2]:25".parse().unwrap(), b"");
        assert_eq!(&mixed[16..32], &"::ffff:198.18.0.1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn the_session_id_travels_as_a_unique_id_tlv() {
        let h = encode("198.18.0.1:40000".parse().unwrap(), "198.18.0.2:25".parse().unwrap(), b"00000000deadbeef");
        assert_eq!(&h[14..16], &(12u16 + 3 + 16).to_be_bytes(), "the length covers the TLV");
        assert_eq!(h.len(), 16 + 12 + 3 + 16);
        assert_eq!(&h[28..31], &[0x05, 0, 16]);
        assert_eq!(&h[31..], b"00000000deadbeef");
    }
}
