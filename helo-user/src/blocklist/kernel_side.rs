//! How a stored entry sits in the kernel's blocklist maps: its key (a keyed hash of the name's
//! bytes, an address, or a network) and its value (reason, expiry on the boot clock). The live
//! agent and the offline admin commands both go through here, so they put an entry where the
//! other looks for it.

use std::collections::HashSet;

use anyhow::Result;
use helo_common::{
    hash_normalised,
    maps::{AddrKey, BlockEntry},
    HashKey,
};

use crate::{
    kernel::{
        addr::addr_key,
        blocks::{net_key, NetKey, Removed},
        tables::BlockTables,
    },
    listing::{clock::expiry_on_boot_clock, name, reason, source_target, Entry, Kind, SourceTarget},
};

/// The hash the kernel computes for a stored greeting name.
pub fn helo_hash(key: &HashKey, stored_name: &str) -> u64 {
    hash_normalised(key, &name::bytes(stored_name))
}

pub fn value(e: &Entry) -> BlockEntry {
    BlockEntry {
        reason: reason::kernel_code(&e.reason),
        added_unix_s: e.added_unix_s,
        expires_boot_ns: expiry_on_boot_clock(e.expires_unix_s),
        ..Default::default()
    }
}

pub fn put<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, e: &Entry) -> Result<()> {
    let v = value(e);
    match e.kind {
        Kind::Helo => maps.block_helo(helo_hash(key, &e.name), v),
        Kind::Source => match source_target(&e.name)? {
            SourceTarget::Addr(ip) => maps.block_source(ip, v),
            SourceTarget::Net(net) => maps.block_source_net(net.addr(), net.prefix_len(), v),
        },
    }
}

/// Removes the entry's key; `Ok(false)` if the kernel did not hold it.
pub fn remove<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, e: &Entry) -> Result<bool> {
    match e.kind {
        Kind::Helo => maps.unblock_helo(helo_hash(key, &e.name)),
        Kind::Source => match source_target(&e.name) {
            Ok(SourceTarget::Addr(ip)) => maps.unblock_source(ip),
            Ok(SourceTarget::Net(net)) => maps.unblock_source_net(net.addr(), net.prefix_len()),
            Err(_) => Ok(false),
        },
    }
}

/// The kernel's value for the entry's key, if it holds one.
pub fn get<M: BlockTables + ?Sized>(maps: &M, key: &HashKey, e: &Entry) -> Option<BlockEntry> {
    match e.kind {
        Kind::Helo => maps.helo_entry(helo_hash(key, &e.name)),
        Kind::Source => match source_target(&e.name).ok()? {
            SourceTarget::Addr(ip) => maps.source_entry(ip),
            SourceTarget::Net(net) => maps.source_net_entry(net.addr(), net.prefix_len()),
        },
    }
}

/// Removes from the kernel every entry that none of `entries` stands for.
pub fn retain_only<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, entries: &[Entry]) -> Result<Removed> {
    let mut helo: HashSet<u64> = HashSet::new();
    let mut sources: HashSet<AddrKey> = HashSet::new();
    let mut nets: HashSet<NetKey> = HashSet::new();
    for e in entries {
        match e.kind {
            Kind::Helo => {
                helo.insert(helo_hash(key, &e.name));
            }
            Kind::Source => match source_target(&e.name) {
                Ok(SourceTarget::Addr(ip)) => {
                    sources.insert(addr_key(ip));
                }
                Ok(SourceTarget::Net(net)) => {
                    nets.insert(net_key(net.addr(), net.prefix_len()));
                }
                Err(_) => {}
            },
        }
    }
    maps.retain(&helo, &sources, &nets)
}
