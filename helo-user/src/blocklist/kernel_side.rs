//! How a stored entry sits in the kernel's blocklist maps: its key (a keyed hash of the name's
//! bytes, an address, or a network) and its value (reason, expiry on the monotonic clock). The live
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
        addr::{addr_key, net_key, NetKey},
        tables::{BlockTables, Removed},
    },
    listing::{clock::expiry_on_mono_clock, name, reason, Entry, Match, Target},
};

/// The hash the kernel computes for a stored greeting name.
pub fn helo_hash(key: &HashKey, stored_name: &str) -> u64 {
    hash_normalised(key, &name::bytes(stored_name))
}

pub fn value(e: &Entry) -> BlockEntry {
    BlockEntry {
        reason: reason::kernel_code(&e.reason),
        added_unix_s: e.added_unix_s,
        expires_mono_ns: expiry_on_mono_clock(e.expires_unix_s),
        ..Default::default()
    }
}

pub fn put<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, e: &Entry) -> Result<()> {
    let v = value(e);
    match e.target.matches() {
        Match::Greeting => maps.block_helo(helo_hash(key, e.name()), v),
        Match::Addr(ip) => maps.block_source(ip, v),
        Match::Net(net) => maps.block_source_net(net.addr(), net.prefix_len(), v),
    }
}

/// Removes the target's key; `Ok(false)` if the kernel did not hold it.
pub fn remove<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, t: &Target) -> Result<bool> {
    match t.matches() {
        Match::Greeting => maps.unblock_helo(helo_hash(key, t.name())),
        Match::Addr(ip) => maps.unblock_source(ip),
        Match::Net(net) => maps.unblock_source_net(net.addr(), net.prefix_len()),
    }
}

/// The kernel's value for the target's key, if it holds one.
pub fn get<M: BlockTables + ?Sized>(maps: &M, key: &HashKey, t: &Target) -> Option<BlockEntry> {
    match t.matches() {
        Match::Greeting => maps.helo_entry(helo_hash(key, t.name())),
        Match::Addr(ip) => maps.source_entry(ip),
        Match::Net(net) => maps.source_net_entry(net.addr(), net.prefix_len()),
    }
}

/// Removes from the kernel every entry that none of `entries` stands for.
pub fn retain_only<M: BlockTables + ?Sized>(maps: &mut M, key: &HashKey, entries: &[Entry]) -> Result<Removed> {
    let mut helo: HashSet<u64> = HashSet::new();
    let mut sources: HashSet<AddrKey> = HashSet::new();
    let mut nets: HashSet<NetKey> = HashSet::new();
    for e in entries {
        match e.target.matches() {
            Match::Greeting => {
                helo.insert(helo_hash(key, e.name()));
            }
            Match::Addr(ip) => {
                sources.insert(addr_key(ip));
            }
            Match::Net(net) => {
                nets.insert(net_key(net.addr(), net.prefix_len()));
            }
        }
    }
    maps.retain(&helo, &sources, &nets)
}
