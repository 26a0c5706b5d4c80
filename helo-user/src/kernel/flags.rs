//! The flags in the program's configuration that let it skip a lookup that can only miss
//! ([`config_flags`]): the allow trie and the source network trie while they are empty.
//!
//! Every writer of those tries keeps its flag true, the agent and the offline commands on the
//! pinned maps alike, by one rule: the flag is cleared before the first entry goes in, and set
//! again once the last one is gone. A flag wrongly clear only costs a lookup; wrongly set, it
//! would lose a verdict, which the order of the writes rules out.

use anyhow::{Context, Result};
use aya::{
    maps::{Array, LpmTrie, MapData},
    Pod,
};
use helo_common::maps::{config_flags, Config};

/// The program's configuration (`HELO_CONFIG`, one entry).
pub type ConfigMap = Array<MapData, Config>;

/// Sets or clears `flag` in the program's configuration (mode and key untouched).
pub fn set_config_flag(config: &mut ConfigMap, flag: u32, on: bool) -> Result<()> {
    let mut c = config.get(&0, 0).context("reading the program's configuration")?;
    let flags = if on { c.flags | flag } else { c.flags & !flag };
    if flags != c.flags {
        c.flags = flags;
        config.set(0, c, 0).context("writing the program's configuration")?;
    }
    Ok(())
}

/// Whether `trie` holds no entry (the first key of a walk: one syscall).
pub fn trie_is_empty<V: Pod>(trie: &LpmTrie<MapData, [u8; 16], V>) -> bool {
    trie.keys().next().is_none()
}

/// The bits of [`config_flags`] that hold for tries whose emptiness is given.
pub fn empty_flags(allow_empty: bool, nets_empty: bool) -> u32 {
    (if allow_empty { config_flags::ALLOW_EMPTY } else { 0 }) | (if nets_empty { config_flags::SOURCE_NETS_EMPTY } else { 0 })
}
