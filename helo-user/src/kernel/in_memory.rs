//! The kernel's tables in plain hash maps, for an agent (or a test) with no XDP program: what the
//! layers above write is kept and answered by the same rules as the real maps (keys in the
//! kernel's 16-byte form, longest-prefix lookups for networks, the ladder's strike rule, a
//! listed source's `answers`), but no packet is ever judged, so the counters stay at zero.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;
use helo_common::maps::{AddrKey, BlockEntry, Ladder, Strikes};

use super::{
    addr::{addr_key, net_key, NetKey},
    counters::Counters,
    tables::{BlockTables, Kernel, Removed},
};
use crate::modes::AttachMode;

#[derive(Default)]
pub struct InMemoryKernel {
    helo: HashMap<u64, BlockEntry>,
    sources: HashMap<AddrKey, BlockEntry>,
    nets: HashMap<NetKey, BlockEntry>,
    allowed: HashSet<NetKey>,
    flows: HashSet<(SocketAddr, SocketAddr)>,
    ladder: Ladder,
    strikes: HashMap<AddrKey, Strikes>,
}

impl InMemoryKernel {
    /// With the offender ladder's settings, as `KernelFilter::configure_ladder` gives the program.
    pub fn with_ladder(ladder: Ladder) -> Self {
        Self { ladder, ..Default::default() }
    }

    /// A flow whose first payload the program would have seen (released by [`Kernel::release_flow`]).
    pub fn remember_flow(&mut self, client: SocketAddr, server: SocketAddr) {
        self.flows.insert(flow_key(client, server));
    }

    /// How many entries the three blocklist maps hold together.
    pub fn blocklist_len(&self) -> usize {
        self.helo.len() + self.sources.len() + self.nets.len()
    }
}

/// A flow as the flow map keys it: IPv4-mapped addresses as IPv4.
fn flow_key(client: SocketAddr, server: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmapped = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    (unmapped(client), unmapped(server))
}

/// A network's trie key with the host bits cleared, as the trie matches it.
fn canonical(net: IpAddr, prefix: u8) -> NetKey {
    let (len, addr) = net_key(net, prefix);
    (len, masked(addr, len))
}

fn masked(mut addr: [u8; 16], bits: u32) -> [u8; 16] {
    for (i, byte) in addr.iter_mut().enumerate() {
        let kept = bits.saturating_sub(i as u32 * 8).min(8);
        *byte &= if kept == 0 { 0 } else { 0xffu8 << (8 - kept) };
    }
    addr
}

impl BlockTables for InMemoryKernel {
    fn block_helo(&mut self, hash: u64, entry: BlockEntry) -> Result<()> {
        self.helo.insert(hash, entry);
        Ok(())
    }
    fn unblock_helo(&mut self, hash: u64) -> Result<bool> {
        Ok(self.helo.remove(&hash).is_some())
    }
    fn helo_entry(&self, hash: u64) -> Option<BlockEntry> {
        self.helo.get(&hash).copied()
    }
    fn block_source(&mut self, ip: IpAddr, mut entry: BlockEntry) -> Result<()> {
        if entry.answers_left == 0 {
            entry.answers_left = self.ladder.answers;
        }
        self.sources.insert(addr_key(ip), entry);
        Ok(())
    }
    fn unblock_source(&mut self, ip: IpAddr) -> Result<bool> {
        Ok(self.sources.remove(&addr_key(ip)).is_some())
    }
    fn source_entry(&self, ip: IpAddr) -> Option<BlockEntry> {
        self.sources.get(&addr_key(ip)).copied()
    }
    fn block_source_net(&mut self, net: IpAddr, prefix: u8, mut entry: BlockEntry) -> Result<()> {
        if entry.answers_left == 0 {
            entry.answers_left = self.ladder.answers;
        }
        self.nets.insert(canonical(net, prefix), entry);
        Ok(())
    }
    fn unblock_source_net(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        Ok(self.nets.remove(&canonical(net, prefix)).is_some())
    }
    fn source_net_entry(&self, net: IpAddr, prefix: u8) -> Option<BlockEntry> {
        let (len, addr) = net_key(net, prefix);
        (0..=len).rev().find_map(|l| self.nets.get(&(l, masked(addr, l))).copied())
    }
    fn retain(&mut self, helo: &HashSet<u64>, sources: &HashSet<AddrKey>, nets: &HashSet<NetKey>) -> Result<Removed> {
        let before = Removed { helo: self.helo.len(), sources: self.sources.len(), nets: self.nets.len() };
        self.helo.retain(|k, _| helo.contains(k));
        self.sources.retain(|k, _| sources.contains(k));
        self.nets.retain(|k, _| nets.contains(k));
        Ok(Removed {
            helo: before.helo - self.helo.len(),
            sources: before.sources - self.sources.len(),
            nets: before.nets - self.nets.len(),
        })
    }
}

impl Kernel for InMemoryKernel {
    fn strike(&mut self, ip: IpAddr, now_mono_ns: u64) -> Result<Option<u64>> {
        if self.ladder.strikes == 0 {
            return Ok(None);
        }
        let standing = self.strikes.entry(addr_key(ip)).or_default();
        Ok(self.ladder.strike(standing, now_mono_ns))
    }
    fn allow(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        self.allowed.insert(canonical(net, prefix));
        Ok(())
    }
    fn disallow(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        Ok(self.allowed.remove(&canonical(net, prefix)))
    }
    fn release_flow(&mut self, client: SocketAddr, server: SocketAddr) -> Result<bool> {
        Ok(self.flows.remove(&flow_key(client, server)))
    }
    fn counters(&self) -> Result<Counters> {
        Ok(Counters::default())
    }
    fn attach_mode(&self) -> Option<AttachMode> {
        None
    }
    fn program_id(&self) -> Option<u32> {
        None
    }
    fn helo_table_fill(&self) -> Option<(usize, usize)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_found_by_its_longest_listed_prefix_as_in_the_trie() {
        let mut k = InMemoryKernel::default();
        let entry = BlockEntry { reason: 7, ..Default::default() };
        k.block_source_net("198.18.0.0".parse().unwrap(), 15, entry).unwrap();
        assert_eq!(k.source_net_entry("198.19.4.0".parse().unwrap(), 24).map(|e| e.reason), Some(7));
        assert_eq!(k.source_net_entry("198.20.0.0".parse().unwrap(), 24), None);
        // Host bits in the key do not make another network.
        assert!(k.unblock_source_net("198.19.255.255".parse().unwrap(), 15).unwrap());
        assert_eq!(k.source_net_entry("198.19.4.0".parse().unwrap(), 24), None);
    }

    #[test]
    fn strikes_follow_the_kernels_ladder_rule() {
        let s = 1_000_000_000;
        let mut k =
            InMemoryKernel::with_ladder(Ladder { strikes: 3, answers: 2, window_ns: 60 * s, ttl_ns: 600 * s, max_ttl_ns: 3600 * s });
        let ip: IpAddr = "2001:2::9".parse().unwrap();
        assert_eq!(k.strike(ip, s).unwrap(), None);
        assert_eq!(k.strike(ip, 2 * s).unwrap(), None);
        assert_eq!(k.strike(ip, 3 * s).unwrap(), Some(600 * s));
        k.block_source(ip, BlockEntry::default()).unwrap();
        assert_eq!(k.source_entry(ip).unwrap().answers_left, 2);
    }
}
