//! The loaded program behind the two traits of [`super::tables`]: each call goes to its maps
//! ([`super::blocks::BlockMaps`] for the blocklist, [`super::maps::KernelMaps`] for the rest).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;
use helo_common::maps::{AddrKey, BlockEntry};

use super::{
    addr::NetKey,
    counters::Counters,
    filter::KernelFilter,
    tables::{BlockTables, Kernel, Removed},
};
use crate::modes::AttachMode;

impl BlockTables for KernelFilter {
    fn block_helo(&mut self, hash: u64, entry: BlockEntry) -> Result<()> {
        self.maps.blocks.block_helo(hash, entry)
    }
    fn unblock_helo(&mut self, hash: u64) -> Result<bool> {
        self.maps.blocks.unblock_helo(hash)
    }
    fn helo_entry(&self, hash: u64) -> Option<BlockEntry> {
        self.maps.blocks.helo_entry(hash)
    }
    fn block_source(&mut self, ip: IpAddr, entry: BlockEntry) -> Result<()> {
        self.maps.blocks.block_source(ip, entry)
    }
    fn unblock_source(&mut self, ip: IpAddr) -> Result<bool> {
        self.maps.blocks.unblock_source(ip)
    }
    fn source_entry(&self, ip: IpAddr) -> Option<BlockEntry> {
        self.maps.blocks.source_entry(ip)
    }
    fn block_source_net(&mut self, net: IpAddr, prefix: u8, entry: BlockEntry) -> Result<()> {
        self.maps.blocks.block_source_net(net, prefix, entry)
    }
    fn unblock_source_net(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        self.maps.blocks.unblock_source_net(net, prefix)
    }
    fn source_net_entry(&self, net: IpAddr, prefix: u8) -> Option<BlockEntry> {
        self.maps.blocks.source_net_entry(net, prefix)
    }
    fn retain(&mut self, helo: &HashSet<u64>, sources: &HashSet<AddrKey>, nets: &HashSet<NetKey>) -> Result<Removed> {
        self.maps.blocks.retain(helo, sources, nets)
    }
}

impl Kernel for KernelFilter {
    fn strike(&mut self, ip: IpAddr, now_mono_ns: u64) -> Result<Option<u64>> {
        self.maps.strike(ip, now_mono_ns)
    }
    fn allow(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        self.maps.allow(net, prefix)
    }
    fn disallow(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        self.maps.disallow(net, prefix)
    }
    fn release_flow(&mut self, client: SocketAddr, server: SocketAddr) -> Result<bool> {
        self.maps.release_flow(client, server)
    }
    fn counters(&self) -> Result<Counters> {
        self.maps.counters()
    }
    fn attach_mode(&self) -> Option<AttachMode> {
        KernelFilter::attach_mode(self)
    }
    fn program_id(&self) -> Option<u32> {
        KernelFilter::program_id(self)
    }
    fn helo_table_fill(&self) -> Option<(usize, usize)> {
        let table = &self.maps.blocks.helo;
        Some((table.used(), table.slots()))
    }
}
