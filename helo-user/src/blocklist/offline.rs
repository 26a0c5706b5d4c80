//! The blocklist with no agent running: the store, and the kernel maps still pinned from the last
//! run (which keep dropping while the agent is down). An offline `add` or `del` changes both, so
//! a deleted name stops being dropped at once and a restart finds them equal; when nothing is
//! pinned, only the store changes and the caller is told so.

use std::path::{Path, PathBuf};

use anyhow::Result;
use helo_common::HashKey;

use super::kernel_side;
use crate::{
    kernel::blocks::BlockMaps,
    listing::{Entry, Target},
    store::Store,
};

pub struct Offline {
    pub store: Store,
    /// The pinned maps and the key their entries were hashed with, when both exist.
    kernel: Option<(BlockMaps, HashKey)>,
    /// Why `kernel` is `None`.
    no_kernel: &'static str,
    pin_dir: PathBuf,
}

impl Offline {
    /// The store in `state_dir` (refused if it lost its contents while maps are pinned), and the
    /// maps pinned in `pin_dir` if there are any.
    pub fn open(state_dir: &Path, pin_dir: &Path) -> Result<Self> {
        let store = Store::open_guarded(state_dir, pin_dir)?;
        let (kernel, no_kernel) = match (BlockMaps::open_pinned(pin_dir)?, store.existing_hash_key()?) {
            (Some(maps), Some(key)) => (Some((maps, key)), ""),
            (None, _) => (None, "no maps pinned in"),
            (Some(_), None) => (None, "the store has no hash key yet (no agent ever ran on it), so it cannot reach the maps pinned in"),
        };
        Ok(Self { store, kernel, no_kernel, pin_dir: pin_dir.to_owned() })
    }

    /// Where the agent pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Said after a change: where it went.
    pub fn note(&self) -> String {
        match &self.kernel {
            Some(_) => format!("no agent running: changed the store and the maps pinned in {}", self.pin_dir.display()),
            None => format!(
                "no agent running and {} {}: changed the store only; the kernel gets it at the next start",
                self.no_kernel,
                self.pin_dir.display()
            ),
        }
    }

    /// Stores entries (all or none), then puts them in the pinned maps.
    pub fn add_all(&mut self, entries: &[Entry]) -> Result<()> {
        self.store.put_all(entries)?;
        if let Some((maps, key)) = &mut self.kernel {
            for e in entries {
                kernel_side::put(maps, key, e)?;
            }
        }
        Ok(())
    }

    /// Removes `target` from the store and the pinned maps; returns how many places held it (so
    /// an entry only the kernel still held, a ghost of an older delete, can be removed too).
    pub fn remove(&mut self, target: &Target) -> Result<usize> {
        let stored = self.store.remove_all(&[target.key()])?.len();
        let in_kernel = match &mut self.kernel {
            Some((maps, key)) => kernel_side::remove(maps, key, target)? as usize,
            None => 0,
        };
        Ok(stored.max(in_kernel))
    }

    /// Empties the store and the pinned blocklist maps.
    pub fn flush(&mut self) -> Result<usize> {
        let keys: Vec<String> = self.store.entries()?.iter().map(Entry::key).collect();
        let n = self.store.remove_all(&keys)?.len();
        if let Some((maps, key)) = &mut self.kernel {
            kernel_side::retain_only(maps, key, &[])?;
        }
        Ok(n)
    }
}
