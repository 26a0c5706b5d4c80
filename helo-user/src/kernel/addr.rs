//! The kernel keys every address as 16 bytes, IPv4 as `::ffff:a.b.c.d`, so that one map and one
//! trie serve both families. These helpers are the only place that mapping is spelled out.

use std::net::{IpAddr, Ipv6Addr};

use helo_common::maps::AddrKey;

pub fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => AddrKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => AddrKey::from_v6(v6.octets()),
    }
}

/// The address a key stands for, IPv4-mapped keys back to IPv4.
pub fn key_addr(key: &AddrKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The trie prefix length for a CIDR of `ip`'s family.
pub fn trie_prefix(ip: IpAddr, prefix: u8) -> u32 {
    match ip {
        IpAddr::V4(_) => helo_common::maps::v4_prefix_in_trie(prefix as u32),
        IpAddr::V6(_) => prefix as u32,
    }
}

/// A network as the tries key it (the source-network trie and the allow trie alike): (trie prefix
/// length, 16-byte address).
pub type NetKey = (u32, [u8; 16]);

pub fn net_key(net: IpAddr, prefix: u8) -> NetKey {
    (trie_prefix(net, prefix), addr_key(net).addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip() {
        for s in ["198.18.0.1", "2001:2::1", "::1", "0.0.0.0"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(key_addr(&addr_key(ip)), ip);
        }
    }

    #[test]
    fn ipv4_is_mapped() {
        let k = addr_key("198.18.0.1".parse().unwrap());
        assert_eq!(k.addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(trie_prefix("198.18.0.0".parse().unwrap(), 15), 111);
    }
}
