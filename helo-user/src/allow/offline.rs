//! `allow add|del|list` with no agent running: the store, and the allow trie still pinned from
//! the last run (which keeps filtering while the agent is down). The next start reads the store,
//! so it agrees either way; when nothing is pinned the caller is told that only the store changed.
//!
//! Which entries the config file holds is known only when the command was given `--config`:
//! without it, an offline `del` cannot tell a file entry from none, and a network is taken out of
//! the pinned trie only if no `--config` says the file allows it.

use anyhow::{bail, Result};

use super::{listing, AllowEntry, AllowKind, Allowed};
use crate::{blocklist::offline::Offline, classify::ClassifierConfig, kernel::allow_trie::PinnedAllow, listing::Target};

/// The offline target: the blocklist's offline view (store, pinned block maps) and the file's
/// classifier configuration if known.
pub struct OfflineAllow<'a> {
    pub blocklist: &'a mut Offline,
    pub file: Option<&'a ClassifierConfig>,
}

impl OfflineAllow<'_> {
    fn file(&self) -> ClassifierConfig {
        self.file.cloned().unwrap_or_default()
    }

    pub fn list(&self) -> Result<Vec<Allowed>> {
        Ok(listing(&self.file(), &self.blocklist.store.allow_entries()?))
    }

    /// Where the change went, said plainly.
    fn note(&self, trie: bool) -> String {
        let pins = self.blocklist.pin_dir().display();
        let config = if self.file.is_none() { " (no --config given: the config file's allow list is not known here)" } else { "" };
        if trie {
            format!("no agent running: changed the store and the allow trie pinned in {pins}{config}")
        } else {
            format!(
                "no agent running and no allow trie pinned in {pins}: changed the store only; the kernel gets it at the next start{config}"
            )
        }
    }

    pub fn add(&mut self, entry: AllowEntry) -> Result<String> {
        self.blocklist.store.put_allow(&entry)?;
        let mut pinned = PinnedAllow::open(self.blocklist.pin_dir())?;
        match entry.kind {
            AllowKind::Net => {
                if let (Some(p), Some(net)) = (pinned.as_mut(), entry.net()) {
                    p.insert(net)?;
                }
            }
            AllowKind::Name => {
                // An allowed name must not stay listed: off the blocklist (store and pinned maps).
                self.blocklist.remove(&Target::greeting(entry.value.clone()))?;
            }
        }
        Ok(self.note(pinned.is_some()))
    }

    pub fn del(&mut self, probe: AllowEntry) -> Result<String> {
        let file = self.file();
        let in_config = probe.in_config(&file);
        if self.blocklist.store.remove_allow(&probe.key())?.is_none() {
            if in_config {
                bail!(
                    "{} {} is allowed by the config file's [classifier.allow], not by `allow add`: edit the file",
                    probe.kind.as_str(),
                    probe.value
                );
            }
            bail!("{} {} is not an operator allow entry", probe.kind.as_str(), probe.value);
        }
        let mut pinned = PinnedAllow::open(self.blocklist.pin_dir())?;
        if let (Some(p), Some(net)) = (pinned.as_mut(), probe.net()) {
            // The file's networks (allow and relay) stay in the trie: the agent put them there.
            let file_nets = crate::classify::Classifier::new(&file).map(|c| c.exempt_networks().collect::<Vec<_>>()).unwrap_or_default();
            if !file_nets.contains(&net) {
                p.remove(net)?;
            }
        }
        let mut note = self.note(pinned.is_some());
        if in_config {
            note.push_str("; the config file's [classifier.allow] still allows it");
        }
        Ok(note)
    }
}
