//! The three blocklist maps (the greeting table, source addresses, source networks), taken from the
//! loaded program or opened from their pins when no agent runs: the offline `blocklist add/del`
//! must reach the kernel too, or the store and the kernel disagree after the next start.
//!
//! The network trie's writers also keep its flag in the program's configuration
//! ([`super::flags`]): while the trie is empty, a SYN skips the lookup.

use std::{collections::HashSet, net::IpAddr, path::Path};

use anyhow::{bail, Context, Result};
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData};
use helo_common::{
    helo_table::slot_key,
    maps::{config_flags, names, AddrKey, BlockEntry},
};

use super::{
    addr::{addr_key, net_key, NetKey},
    flags::{set_config_flag, trie_is_empty, ConfigMap},
    helo_table::HeloTable,
    map_remove::remove_if_present,
    tables::{BlockTables, Removed},
};

pub struct BlockMaps {
    pub helo: HeloTable,
    pub sources: HashMap<MapData, AddrKey, BlockEntry>,
    pub nets: LpmTrie<MapData, [u8; 16], BlockEntry>,
    /// The program's configuration, for the network trie's flag (a handle of its own on the map
    /// that [`super::KernelMaps`] configures).
    pub config: ConfigMap,
    /// Connections of a newly listed source let through to be told why before its SYNs are
    /// dropped (the ladder's `answers`; 0 offline, where the agent's settings are not known).
    pub answers: u32,
}

impl BlockMaps {
    /// The maps pinned in `dir`, if the agent ever pinned them there.
    pub fn open_pinned(dir: &Path) -> Result<Option<Self>> {
        if !super::pin::maps_pinned(dir) {
            return Ok(None);
        }
        let open = |name: &str| {
            MapData::from_pin(super::pin::map_path(dir, name))
                .with_context(|| format!("opening the pinned map {name} in {}", dir.display()))
        };
        let table = super::pin::map_path(dir, names::HELO_TABLE);
        if !table.exists() {
            bail!(
                "the maps pinned in {} are an older helo's (no {}): start the agent once, which moves its \
                 greetings into the new table, then run this again",
                dir.display(),
                names::HELO_TABLE
            );
        }
        Ok(Some(Self {
            helo: HeloTable::open_pinned(&table)?,
            sources: HashMap::try_from(Map::LruHashMap(open(names::SOURCE_BLOCKS)?))?,
            nets: LpmTrie::try_from(Map::LpmTrie(open(names::SOURCE_NETS)?))?,
            config: Array::try_from(Map::Array(open(names::CONFIG)?))?,
            answers: 0,
        }))
    }

    /// Sets the network trie's flag from what the trie holds now, after a removal.
    fn flag_nets(&mut self) -> Result<()> {
        set_config_flag(&mut self.config, config_flags::SOURCE_NETS_EMPTY, trie_is_empty(&self.nets))
    }
}

// The blocklist maps' operations exist once, as the trait's: the agent (through KernelFilter),
// the offline commands and the tests all reach them that way.
impl BlockTables for BlockMaps {
    // A full table evicts (see `HeloTable::insert`); like any eviction, the reconcile finds it
    // and counts it.
    fn block_helo(&mut self, hash: u64, entry: BlockEntry) -> Result<()> {
        self.helo.insert(hash, entry);
        Ok(())
    }

    fn unblock_helo(&mut self, hash: u64) -> Result<bool> {
        Ok(self.helo.remove(hash))
    }

    fn helo_entry(&self, hash: u64) -> Option<BlockEntry> {
        self.helo.get(hash)
    }

    fn block_source(&mut self, ip: IpAddr, mut entry: BlockEntry) -> Result<()> {
        if entry.answers_left == 0 {
            entry.answers_left = self.answers;
        }
        self.sources.insert(addr_key(ip), entry, 0).context("inserting into the source map")
    }

    fn unblock_source(&mut self, ip: IpAddr) -> Result<bool> {
        remove_if_present(self.sources.remove(&addr_key(ip)))
    }

    fn source_entry(&self, ip: IpAddr) -> Option<BlockEntry> {
        self.sources.get(&addr_key(ip), 0).ok()
    }

    fn block_source_net(&mut self, net: IpAddr, prefix: u8, mut entry: BlockEntry) -> Result<()> {
        if entry.answers_left == 0 {
            entry.answers_left = self.answers;
        }
        let (len, addr) = net_key(net, prefix);
        // The program must look in the trie before the entry is there to be found.
        set_config_flag(&mut self.config, config_flags::SOURCE_NETS_EMPTY, false)?;
        self.nets.insert(&Key::new(len, addr), entry, 0).context("inserting into the source network trie")
    }

    fn unblock_source_net(&mut self, net: IpAddr, prefix: u8) -> Result<bool> {
        let (len, addr) = net_key(net, prefix);
        let removed = remove_if_present(self.nets.remove(&Key::new(len, addr)))?;
        self.flag_nets()?;
        Ok(removed)
    }

    fn source_net_entry(&self, net: IpAddr, prefix: u8) -> Option<BlockEntry> {
        let (len, addr) = net_key(net, prefix);
        self.nets.get(&Key::new(len, addr), 0).ok()
    }

    // The store is the truth: an entry it does not know (an offline delete, a listing whose
    // commit failed, an older agent's) must not go on dropping senders. Keys are collected before
    // any removal: deleting while walking a hash map restarts the walk.
    fn retain(&mut self, helo: &HashSet<u64>, sources: &HashSet<AddrKey>, nets: &HashSet<NetKey>) -> Result<Removed> {
        let mut removed = Removed::default();
        let listed: HashSet<u64> = helo.iter().map(|&h| slot_key(h)).collect();
        for k in self.helo.keys().into_iter().filter(|k| !listed.contains(k)) {
            removed.helo += self.helo.remove(k) as usize;
        }
        let stale: Vec<AddrKey> = self.sources.keys().filter_map(|k| k.ok()).filter(|k| !sources.contains(k)).collect();
        for k in stale {
            removed.sources += remove_if_present(self.sources.remove(&k))? as usize;
        }
        let stale: Vec<Key<[u8; 16]>> =
            self.nets.keys().filter_map(|k| k.ok()).filter(|k| !nets.contains(&(k.prefix_len(), k.data()))).collect();
        for k in stale {
            removed.nets += remove_if_present(self.nets.remove(&k))? as usize;
        }
        self.flag_nets()?;
        Ok(removed)
    }
}
