//! Typed handles on the program's maps, taken out of the loaded object once, by name.

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    Ebpf,
};
use helo_common::maps::{config_flags, names, AddrKey, Config, FlowKey, FlowSlot, FlowState, Ladder, Strikes};

use super::{
    addr::{addr_key, net_key, NetKey},
    blocks::BlockMaps,
    counters::Counters,
    flags::trie_is_empty,
    helo_table::HeloTable,
    map_remove::remove_if_present,
};

pub struct KernelMaps {
    pub config: Array<MapData, Config>,
    pub ports: Array<MapData, u8>,
    /// The blocklist maps: greeting hashes, source addresses, source networks.
    pub blocks: BlockMaps,
    pub allow: LpmTrie<MapData, [u8; 16], u8>,
    /// The flow table: slots indexed by [`FlowKey::slot`] under the configured hash key.
    pub flows: Array<MapData, FlowSlot>,
    /// The hash key the program is configured with (its flow slots depend on it), kept here so
    /// a flow is found without reading the configuration back.
    pub(super) hash_key: helo_common::HashKey,
    pub counters: PerCpuArray<MapData, u64>,
    ladder: Array<MapData, Ladder>,
    /// What `ladder` holds, kept here so a strike reads no map (only the agent writes the
    /// ladder's settings, through [`KernelMaps::set_ladder`]).
    ladder_settings: Ladder,
    pub strikes: HashMap<MapData, AddrKey, Strikes>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf.take_map(name).with_context(|| format!("map {name} is missing from the XDP object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn take_helo_table(ebpf: &mut Ebpf) -> Result<HeloTable> {
    match ebpf.take_map(names::HELO_TABLE) {
        Some(aya::maps::Map::Array(data)) => HeloTable::new(data),
        Some(_) => anyhow::bail!("map {} has an unexpected type", names::HELO_TABLE),
        None => anyhow::bail!("map {} is missing from the XDP object", names::HELO_TABLE),
    }
}

impl KernelMaps {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        let config: Array<MapData, Config> = take(ebpf, names::CONFIG)?;
        // Pinned maps reused from a running filter already carry the key.
        let hash_key = config.get(&0, 0).map(|c| c.key).unwrap_or_default();
        // The blocklist maps keep the network trie's flag: a second handle on the same map.
        // (A duplicate of its descriptor: opening it again by id would need CAP_SYS_ADMIN, which
        // the service unit does not grant.)
        let config_fd = std::os::fd::AsFd::as_fd(aya::maps::IterableMap::map(&config).fd())
            .try_clone_to_owned()
            .context("duplicating the configuration map's descriptor")?;
        let blocks_config =
            Array::try_from(aya::maps::Map::Array(MapData::from_fd(config_fd).context("opening the configuration map again")?))?;
        let ladder: Array<MapData, Ladder> = take(ebpf, names::LADDER)?;
        // Pinned maps reused from a running filter already carry settings.
        let ladder_settings = ladder.get(&0, 0).unwrap_or_default();
        Ok(Self {
            config,
            ports: take(ebpf, names::PORTS)?,
            blocks: BlockMaps {
                helo: take_helo_table(ebpf)?,
                sources: take(ebpf, names::SOURCE_BLOCKS)?,
                nets: take(ebpf, names::SOURCE_NETS)?,
                config: blocks_config,
                answers: 0,
            },
            allow: take(ebpf, names::ALLOW)?,
            flows: take(ebpf, names::FLOWS)?,
            hash_key,
            counters: take(ebpf, names::COUNTERS)?,
            ladder,
            ladder_settings,
            strikes: take(ebpf, names::STRIKES)?,
        })
    }

    /// One strike from the agent against `ip`, on the same map and by the same rule as the
    /// kernel's strikes. `Some(ttl_ns)` when this strike puts it on the ladder (the caller lists it).
    pub fn strike(&mut self, ip: IpAddr, now_mono_ns: u64) -> Result<Option<u64>> {
        let ladder = self.ladder_settings;
        if ladder.strikes == 0 {
            return Ok(None);
        }
        let key = addr_key(ip);
        let mut standing = self.strikes.get(&key, 0).unwrap_or_default();
        let listed = ladder.strike(&mut standing, now_mono_ns);
        self.strikes.insert(key, standing, 0).context("recording a strike")?;
        Ok(listed)
    }

    pub fn set_ladder(&mut self, ladder: Ladder) -> Result<()> {
        self.ladder.set(0, ladder, 0).context("writing the ladder's settings")?;
        self.ladder_settings = ladder;
        Ok(())
    }

    pub fn allow(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        super::allow_trie::insert(&mut self.allow, &mut self.config, ipnet::IpNet::new(net, prefix)?)
    }

    pub fn disallow(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        super::allow_trie::remove(&mut self.allow, &mut self.config, ipnet::IpNet::new(net, prefix)?)
    }

    /// The [`config_flags`] bits that hold now: whether the allow trie and the network trie are
    /// empty.
    pub fn empty_flags(&self) -> u32 {
        super::flags::empty_flags(trie_is_empty(&self.allow), trie_is_empty(&self.blocks.nets))
    }

    fn set_config_flag(&mut self, flag: u32, on: bool) -> Result<()> {
        super::flags::set_config_flag(&mut self.config, flag, on)
    }

    /// Makes the allow trie equal to `nets` (the configuration): a network taken out of the
    /// configuration must stop being exempt, even though the trie is pinned and outlives the agent
    /// that put it there. Returns how many stale networks were removed.
    pub fn set_allow(&mut self, nets: impl IntoIterator<Item = ipnet::IpNet>) -> Result<usize> {
        let wanted: std::collections::HashSet<NetKey> = nets.into_iter().map(|n| net_key(n.addr(), n.prefix_len())).collect();
        if !wanted.is_empty() {
            // The program must look in the trie before the entries are there to be found.
            self.set_config_flag(config_flags::ALLOW_EMPTY, false)?;
        }
        for &(len, addr) in &wanted {
            self.allow.insert(&Key::new(len, addr), 1, 0).context("inserting into the allow list")?;
        }
        let stale: Vec<Key<[u8; 16]>> =
            self.allow.keys().filter_map(|k| k.ok()).filter(|k| !wanted.contains(&(k.prefix_len(), k.data()))).collect();
        let mut removed = 0;
        for k in stale {
            removed += remove_if_present(self.allow.remove(&k))? as usize;
        }
        self.set_config_flag(config_flags::ALLOW_EMPTY, trie_is_empty(&self.allow))?;
        Ok(removed)
    }

    pub fn set_port(&mut self, port: u16, filtered: bool) -> Result<()> {
        self.ports.set(port as u32, filtered as u8, 0).context("updating the port map")
    }

    /// The flow map's entry for `flow`, if any.
    pub fn flow_state(&self, flow: FlowKey) -> Option<FlowState> {
        let slot = self.flows.get(&flow.slot(&self.hash_key), 0).ok()?;
        slot.flow.same_as(&flow).then_some(slot.state)
    }

    pub fn remember_flow(&mut self, flow: FlowKey, first_payload_seq: u32) -> Result<()> {
        // No SYN time: as old as the flows' clock, so a SYN replaces it (tests set flows this way).
        let slot = FlowSlot { flow, state: FlowState { first_payload_seq, state: 0 }, _pad: 0 };
        self.flows.set(flow.slot(&self.hash_key), slot, 0).context("recording a flow")
    }

    /// Forgets the flow from `client` to `server`, so that its later copies of the first payload
    /// pass instead of being dropped as a listed greeting. For a connection the agent has already
    /// answered: the client's retransmitted greeting is then acknowledged and read, and both sides
    /// close cleanly instead of the client retransmitting for minutes into a closed window.
    ///
    /// The slot is cleared only if it still holds this flow; a SYN the program records into the
    /// same slot between the read and the write is lost (its greeting passes, unjudged by XDP).
    pub fn release_flow(&mut self, client: std::net::SocketAddr, server: std::net::SocketAddr) -> Result<bool> {
        let flow = FlowKey::new(
            addr_key(client.ip().to_canonical()).addr,
            addr_key(server.ip().to_canonical()).addr,
            client.port().to_be(),
            server.port().to_be(),
        );
        let index = flow.slot(&self.hash_key);
        let slot = self.flows.get(&index, 0).context("reading a flow slot")?;
        if !slot.flow.same_as(&flow) {
            return Ok(false);
        }
        self.flows.set(index, FlowSlot::default(), 0).context("clearing a flow slot")?;
        Ok(true)
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
