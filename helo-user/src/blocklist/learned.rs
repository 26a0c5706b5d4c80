//! A bound on what one source can get the agent to list.
//!
//! Anyone can get a name of their choosing listed by greeting with it. Without a bound, one
//! client inventing names fills the kernel's LRU map and pushes out everything else (the agent's
//! earlier listings; operator entries are put back by the reconcile, but only every few minutes).
//! So a source gets at most [`PER_SOURCE_PER_HOUR`] new listings per hour; beyond that it still
//! reads its rejection, but nothing new is listed, and that is counted.
//!
//! Sources are counted in a bounded LRU table (the `lru` crate), so a flood from many addresses
//! costs bounded memory: a source pushed out of the table starts counting afresh. IPv6 sources are
//! counted per /64, since one host commonly holds a whole /64.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroUsize,
    sync::Mutex,
};

use lru::LruCache;

/// New listings one source may cause per hour.
pub const PER_SOURCE_PER_HOUR: u32 = 20;
/// Sources remembered at once.
pub const SOURCES: usize = 65_536;
const WINDOW_S: u64 = 3600;

pub struct Limiter {
    per_window: u32,
    /// Source → (start of its window, listings in it).
    table: Mutex<LruCache<IpAddr, (u64, u32)>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(PER_SOURCE_PER_HOUR, SOURCES)
    }
}

/// The unit a source is counted in: the address, or its /64 for IPv6.
fn unit(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

impl Limiter {
    pub fn new(per_window: u32, sources: usize) -> Self {
        Self { per_window, table: Mutex::new(LruCache::new(NonZeroUsize::new(sources.max(1)).expect("at least one"))) }
    }

    /// Whether `ip` may cause one more listing at `now_unix_s` (and counts it if so).
    pub fn admit(&self, ip: IpAddr, now_unix_s: u64) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let slot = table.get_or_insert_mut(unit(ip), || (now_unix_s, 0));
        if now_unix_s.saturating_sub(slot.0) >= WINDOW_S {
            *slot = (now_unix_s, 0);
        }
        if slot.1 >= self.per_window {
            return false;
        }
        slot.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_quota_per_hour() {
        let l = Limiter::new(3, 100);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        assert!((0..3).all(|_| l.admit(a, 1000)));
        assert!(!l.admit(a, 1000));
        assert!(!l.admit(a, 1000 + WINDOW_S - 1));
        assert!(l.admit(b, 1000), "another source has its own quota");
        assert!(l.admit(a, 1000 + WINDOW_S), "a new hour, a new quota");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let l = Limiter::new(2, 100);
        assert!(l.admit("2001:2::1".parse().unwrap(), 0));
        assert!(l.admit("2001:2::ffff:1".parse().unwrap(), 0));
        assert!(!l.admit("2001:2::2".parse().unwrap(), 0));
        assert!(l.admit("2001:2:0:1::1".parse().unwrap(), 0), "the next /64 is another source");
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(l.admit("::ffff:198.18.0.9".parse().unwrap(), 0));
        assert!(l.admit("198.18.0.9".parse().unwrap(), 0));
        assert!(!l.admit("198.18.0.9".parse().unwrap(), 0));
    }

    #[test]
    fn the_table_is_bounded() {
        let l = Limiter::new(1, 2);
        for i in 0..1000u32 {
            assert!(l.admit(IpAddr::from(i.to_be_bytes()), 0));
        }
        assert_eq!(l.table.lock().unwrap().len(), 2);
    }
}
