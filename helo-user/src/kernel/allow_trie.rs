//! The kernel's allow trie (`HELO_ALLOW`) and its flag in the program's configuration
//! ([`super::flags`]). Written by the agent (start, reload, `allow add|del`) and, with no agent
//! running, by the offline `allow add|del` on the pinned maps: one set of rules for both.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData};
use helo_common::maps::{config_flags, names};
use ipnet::IpNet;

use super::{
    addr::net_key,
    flags::{set_config_flag, trie_is_empty, ConfigMap},
    map_remove::remove_if_present,
};

pub type Trie = LpmTrie<MapData, [u8; 16], u8>;

fn key(net: IpNet) -> Key<[u8; 16]> {
    let (len, addr) = net_key(net.addr(), net.prefix_len());
    Key::new(len, addr)
}

/// Puts `net` in the trie.
pub fn insert(trie: &mut Trie, config: &mut ConfigMap, net: IpNet) -> Result<()> {
    // The program must look in the trie before the entry is there to be found.
    set_config_flag(config, config_flags::ALLOW_EMPTY, false)?;
    trie.insert(&key(net), 1, 0).context("inserting into the allow list")
}

/// Takes `net` out of the trie; `false` if it was not there.
pub fn remove(trie: &mut Trie, config: &mut ConfigMap, net: IpNet) -> Result<bool> {
    let removed = remove_if_present(trie.remove(&key(net)))?;
    set_config_flag(config, config_flags::ALLOW_EMPTY, trie_is_empty(trie))?;
    Ok(removed)
}

/// The allow trie and the program's configuration as pinned by an agent that is not running.
pub struct PinnedAllow {
    pub trie: Trie,
    pub config: ConfigMap,
}

impl PinnedAllow {
    /// The two maps pinned in `dir`, if an agent ever pinned them there.
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        let (trie_path, config_path) = (super::pin::map_path(dir, names::ALLOW), super::pin::map_path(dir, names::CONFIG));
        if !trie_path.exists() || !config_path.exists() {
            return Ok(None);
        }
        let open = |path: &Path| MapData::from_pin(path).with_context(|| format!("opening the pinned map {}", path.display()));
        Ok(Some(Self {
            trie: LpmTrie::try_from(Map::LpmTrie(open(&trie_path)?))?,
            config: Array::try_from(Map::Array(open(&config_path)?))?,
        }))
    }

    pub fn insert(&mut self, net: IpNet) -> Result<()> {
        insert(&mut self.trie, &mut self.config, net)
    }

    pub fn remove(&mut self, net: IpNet) -> Result<bool> {
        remove(&mut self.trie, &mut self.config, net)
    }
}
