//! What the layers above the kernel need from it, as two narrow traits: [`BlockTables`], the three
//! blocklist maps, and [`Kernel`], the rest a running agent touches (the ladder's strikes, the
//! allow trie, a flow to release, the counters, how the program is attached).
//!
//! The loaded XDP program implements them through its maps ([`super::filter_tables`],
//! [`super::blocks::BlockMaps`]); so does [`super::in_memory::InMemoryKernel`], with plain hash
//! maps, so that the blocklist, the sessions and the admin socket run, and are tested, without
//! root. This file imports none of them: they all import it.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;
use helo_common::maps::{AddrKey, BlockEntry};

use super::{addr::NetKey, counters::Counters};
use crate::modes::AttachMode;

/// What [`BlockTables::retain`] removed, by map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub helo: usize,
    pub sources: usize,
    pub nets: usize,
}

impl Removed {
    pub fn total(&self) -> usize {
        self.helo + self.sources + self.nets
    }
}

/// The blocklist maps: greeting hashes, source addresses, source networks.
pub trait BlockTables: Send {
    fn block_helo(&mut self, hash: u64, entry: BlockEntry) -> Result<()>;
    /// `Ok(false)` when the hash was not listed.
    fn unblock_helo(&mut self, hash: u64) -> Result<bool>;
    fn helo_entry(&self, hash: u64) -> Option<BlockEntry>;
    /// Lists a source. Unless the entry says otherwise, its next connections are answered first.
    fn block_source(&mut self, ip: IpAddr, entry: BlockEntry) -> Result<()>;
    fn unblock_source(&mut self, ip: IpAddr) -> Result<bool>;
    fn source_entry(&self, ip: IpAddr) -> Option<BlockEntry>;
    fn block_source_net(&mut self, net: IpAddr, prefix: u8, entry: BlockEntry) -> Result<()>;
    fn unblock_source_net(&mut self, net: IpAddr, prefix: u8) -> Result<bool>;
    /// The longest listed prefix within this one: the entry itself when it is listed.
    fn source_net_entry(&self, net: IpAddr, prefix: u8) -> Option<BlockEntry>;
    /// Removes every entry whose key is not in the given sets.
    fn retain(&mut self, helo: &HashSet<u64>, sources: &HashSet<AddrKey>, nets: &HashSet<NetKey>) -> Result<Removed>;
}

/// The kernel as a running agent uses it, beyond the blocklist maps.
pub trait Kernel: BlockTables {
    /// One strike from the agent against `ip`, by the kernel's own ladder rule. `Some(ttl_ns)` when
    /// this strike puts it on the ladder (the caller lists it).
    fn strike(&mut self, ip: IpAddr, now_mono_ns: u64) -> Result<Option<u64>>;
    /// Exempts a network from every kernel drop.
    fn allow(&mut self, net: IpAddr, prefix: u8) -> Result<()>;
    fn disallow(&mut self, net: IpAddr, prefix: u8) -> Result<bool>;
    /// Forgets the flow from `client` to `server`, so its later copies of the first payload pass.
    fn release_flow(&mut self, client: SocketAddr, server: SocketAddr) -> Result<bool>;
    /// Packets decided, per outcome.
    fn counters(&self) -> Result<Counters>;
    /// How the program is attached, `None` when it is not.
    fn attach_mode(&self) -> Option<AttachMode>;
    fn program_id(&self) -> Option<u32>;
    /// The HELO table's fill: names held and slots, `None` without a kernel table.
    fn helo_table_fill(&self) -> Option<(usize, usize)>;
}
