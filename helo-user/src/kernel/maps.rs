//! Typed handles on the program's maps, taken out of the loaded object once, by name.

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    Ebpf,
};
use helo_common::maps::{config_flags, counter, names, AddrKey, BlockEntry, Config, FlowKey, FlowState};

use super::addr::{addr_key, trie_prefix};

/// Per-outcome packet counts, summed over CPUs, indexed by `helo_common::maps::counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// `(name, count)` for every counter, in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES.iter().copied().zip(self.0.iter().copied())
    }

    /// Counts since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i])))
    }
}

pub struct KernelMaps {
    pub config: Array<MapData, Config>,
    pub ports: Array<MapData, u8>,
    pub helo_blocks: HashMap<MapData, u64, BlockEntry>,
    pub source_blocks: HashMap<MapData, AddrKey, BlockEntry>,
    pub source_nets: LpmTrie<MapData, [u8; 16], BlockEntry>,
    pub allow: LpmTrie<MapData, [u8; 16], u8>,
    pub flows: HashMap<MapData, FlowKey, FlowState>,
    pub counters: PerCpuArray<MapData, u64>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf.take_map(name).with_context(|| format!("map {name} is missing from the XDP object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl KernelMaps {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            config: take(ebpf, names::CONFIG)?,
            ports: take(ebpf, names::PORTS)?,
            helo_blocks: take(ebpf, names::HELO_BLOCKS)?,
            source_blocks: take(ebpf, names::SOURCE_BLOCKS)?,
            source_nets: take(ebpf, names::SOURCE_NETS)?,
            allow: take(ebpf, names::ALLOW)?,
            flows: take(ebpf, names::FLOWS)?,
            counters: take(ebpf, names::COUNTERS)?,
        })
    }

    pub fn block_helo(&mut self, hash: u64, entry: BlockEntry) -> Result<()> {
        self.helo_blocks.insert(hash, entry, 0).context("inserting into the HELO map")
    }

    pub fn unblock_helo(&mut self, hash: u64) -> Result<bool> {
        remove_if_present(self.helo_blocks.remove(&hash))
    }

    pub fn helo_entry(&self, hash: u64) -> Option<BlockEntry> {
        self.helo_blocks.get(&hash, 0).ok()
    }

    pub fn block_source(&mut self, ip: IpAddr, entry: BlockEntry) -> Result<()> {
        self.source_blocks.insert(addr_key(ip), entry, 0).context("inserting into the source map")
    }

    pub fn unblock_source(&mut self, ip: IpAddr) -> Result<bool> {
        remove_if_present(self.source_blocks.remove(&addr_key(ip)))
    }

    pub fn source_entry(&self, ip: IpAddr) -> Option<BlockEntry> {
        self.source_blocks.get(&addr_key(ip), 0).ok()
    }

    /// Lists a source network (a CIDR wider than one address).
    pub fn block_source_net(&mut self, net: IpAddr, prefix: u8, entry: BlockEntry) -> Result<()> {
        // The program must look in the trie before the entry is there to be found.
        self.set_config_flag(config_flags::SOURCE_NETS_EMPTY, false)?;
        let key = Key::new(trie_prefix(net, prefix), addr_key(net).addr);
        self.source_nets.insert(&key, entry, 0).context("inserting into the source network trie")
    }

    pub fn unblock_source_net(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        let key = Key::new(trie_prefix(net, prefix), addr_key(net).addr);
        let removed = remove_if_present(self.source_nets.remove(&key))?;
        self.set_config_flag(config_flags::SOURCE_NETS_EMPTY, self.empty_flags() & config_flags::SOURCE_NETS_EMPTY != 0)?;
        Ok(removed)
    }

    pub fn source_net_entry(&self, net: IpAddr, prefix: u8) -> Option<BlockEntry> {
        let key = Key::new(trie_prefix(net, prefix), addr_key(net).addr);
        // The longest listed prefix within this one: the entry itself when it is listed.
        self.source_nets.get(&key, 0).ok()
    }

    pub fn allow(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        // The program must look in the trie before the entry is there to be found.
        self.set_config_flag(config_flags::ALLOW_EMPTY, false)?;
        let key = Key::new(trie_prefix(net, prefix), addr_key(net).addr);
        self.allow.insert(&key, 1, 0).context("inserting into the allow list")
    }

    pub fn disallow(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        let key = Key::new(trie_prefix(net, prefix), addr_key(net).addr);
        let removed = remove_if_present(self.allow.remove(&key))?;
        self.set_config_flag(config_flags::ALLOW_EMPTY, self.empty_flags() & config_flags::ALLOW_EMPTY != 0)?;
        Ok(removed)
    }

    /// The [`config_flags`] bits that hold now: which tries are empty.
    pub fn empty_flags(&self) -> u32 {
        let mut flags = 0;
        if self.allow.keys().next().is_none() {
            flags |= config_flags::ALLOW_EMPTY;
        }
        if self.source_nets.keys().next().is_none() {
            flags |= config_flags::SOURCE_NETS_EMPTY;
        }
        flags
    }

    /// Sets or clears `flag` in the program's configuration (mode and key untouched).
    fn set_config_flag(&mut self, flag: u32, on: bool) -> Result<()> {
        let mut config = self.config.get(&0, 0).context("reading the program's configuration")?;
        let flags = if on { config.flags | flag } else { config.flags & !flag };
        if flags != config.flags {
            config.flags = flags;
            self.config.set(0, config, 0).context("writing the program's configuration")?;
        }
        Ok(())
    }

    pub fn set_port(&mut self, port: u16, filtered: bool) -> Result<()> {
        self.ports.set(port as u32, filtered as u8, 0).context("updating the port map")
    }

    pub fn remember_flow(&mut self, flow: FlowKey, first_payload_seq: u32) -> Result<()> {
        self.flows.insert(flow, FlowState { first_payload_seq, reported: 0 }, 0).context("inserting a flow")
    }

    pub fn counters(&self) -> Result<Counters> {
        let mut out = Counters::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            let per_cpu = self.counters.get(&(i as u32), 0).context("reading counters")?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

/// `Ok(false)` when the key was not there: removing an absent entry is not an error here.
fn remove_if_present(r: Result<(), aya::maps::MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
