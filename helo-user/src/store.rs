//! The state that survives restarts, in an embedded, crash-safe redb database under the state
//! directory: the blocklist, the hash key, the fleet outbox and the fleet position. (The allow list
//! is configuration: `[classifier.allow]` and the relay networks.)
//!
//! Every change is committed (fsync'd) before the caller acknowledges it: a listing the agent
//! replied to, or an operator's `blocklist add` that returned, is on disk even if the agent is
//! killed the next instant.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context, Result};
use helo_common::HashKey;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// `kind/name` → JSON [`Entry`].
const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Fleet changes waiting to be published: sequence → JSON [`FleetChange`].
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("fleet_outbox");
const HASH_KEY: &str = "hash_key";

pub const DB_FILE: &str = "helo.redb";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A greeting name, dropped for every sender.
    Helo,
    /// A client address.
    Source,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Helo => "helo",
            Kind::Source => "source",
        }
    }
}

/// One listed name or address, as it is stored, exported and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    /// The normalised greeting name, or the address.
    pub name: String,
    /// Why: a rule id (`bogus_helo`, …) or the operator's text.
    pub reason: String,
    /// The reply a sender reads when the kernel drops it.
    pub reply: String,
    pub added_unix_s: u64,
    /// 0: never expires.
    pub expires_unix_s: u64,
    /// Who listed it: `agent`, `operator`, or another box's name.
    #[serde(default = "default_origin")]
    pub origin: String,
}

fn default_origin() -> String {
    "operator".into()
}

impl Entry {
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    pub fn expired(&self, now_unix_s: u64) -> bool {
        self.expires_unix_s != 0 && self.expires_unix_s <= now_unix_s
    }

    /// Checks what a hand-written (imported) entry could get wrong.
    pub fn validate(&self) -> Result<()> {
        match self.kind {
            Kind::Helo => {
                if self.name.bytes().any(|b| b.is_ascii_uppercase()) {
                    bail!("name {:?} is not normalised (ASCII lower case)", self.name);
                }
                if self.name.len() > helo_common::greeting::MAX_ARG_LEN || self.name.contains([' ', '\r', '\n']) {
                    bail!("name {:?} cannot be a greeting argument", self.name);
                }
            }
            Kind::Source => {
                source_target(&self.name)?;
            }
        }
        if !self.reply.starts_with(['4', '5']) || self.reply.len() < 4 || self.reply.contains(['\r', '\n']) {
            bail!("reply {:?} is not a one-line 4xx/5xx SMTP reply", self.reply);
        }
        Ok(())
    }
}

/// A change to publish to the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FleetChange {
    Add { entry: Entry },
    Del { kind: Kind, name: String },
}

/// A handle on the database; clones share it (the blocklist's commit thread holds one).
#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<Database>,
}

/// What a source entry's name stands for: one address, or a network (a CIDR, kept in its
/// canonical form: `198.18.99.0/24`, never `198.18.99.7/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceTarget {
    Addr(IpAddr),
    Net(ipnet::IpNet),
}

pub fn source_target(name: &str) -> Result<SourceTarget> {
    if name.contains('/') {
        let net: ipnet::IpNet = name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?;
        if net.to_string() != net.trunc().to_string() {
            bail!("{name:?} has host bits set; write {}", net.trunc());
        }
        Ok(SourceTarget::Net(net))
    } else {
        Ok(SourceTarget::Addr(name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?))
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Entry> {
    serde_json::from_slice(bytes).with_context(|| format!("store entry {key} is corrupt"))
}

impl Store {
    /// Opens (or creates) the store in `state_dir`. Fails if another process holds it.
    pub fn open(state_dir: &Path) -> Result<Self> {
        crate::state::ensure_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(BLOCKS)?;
        tx.open_table(META)?;
        tx.open_table(OUTBOX)?;
        tx.commit()?;
        Ok(Self { db: std::sync::Arc::new(db) })
    }

    /// The hash key, made and stored on first use.
    pub fn hash_key(&self) -> Result<HashKey> {
        let tx = self.db.begin_write()?;
        let key = {
            let mut meta = tx.open_table(META)?;
            let existing = meta.get(HASH_KEY)?.map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => {
                    let bytes: [u8; 16] = bytes.as_slice().try_into().context("stored hash key is not 16 bytes")?;
                    HashKey::from_bytes(bytes)
                }
                None => {
                    let bytes: [u8; 16] = rand::random();
                    meta.insert(HASH_KEY, bytes.as_slice())?;
                    HashKey::from_bytes(bytes)
                }
            }
        };
        tx.commit()?;
        Ok(key)
    }

    /// Inserts or replaces entries, all or none, durably.
    pub fn put_all(&self, entries: &[Entry]) -> Result<()> {
        self.put_all_publishing(entries, false)
    }

    /// As [`Store::put_all`], and with `publish` the same transaction queues them for the fleet,
    /// so a block is never on disk without its publication (or the other way round).
    pub fn put_all_publishing(&self, entries: &[Entry], publish: bool) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut blocks = tx.open_table(BLOCKS)?;
            for e in entries {
                blocks.insert(e.key().as_str(), serde_json::to_vec(e)?.as_slice())?;
            }
            if publish {
                let mut outbox = tx.open_table(OUTBOX)?;
                let mut next = outbox.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                for e in entries {
                    outbox.insert(next, serde_json::to_vec(&FleetChange::Add { entry: e.clone() })?.as_slice())?;
                    next += 1;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queues a change for the fleet.
    pub fn queue(&self, change: &FleetChange) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut outbox = tx.open_table(OUTBOX)?;
            let next = outbox.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            outbox.insert(next, serde_json::to_vec(change)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The oldest queued changes, up to `n`.
    pub fn queued(&self, n: usize) -> Result<Vec<(u64, FleetChange)>> {
        let tx = self.db.begin_read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for item in outbox.iter()?.take(n) {
            let (k, v) = item?;
            out.push((k.value(), serde_json::from_slice(v.value()).context("corrupt outbox entry")?));
        }
        Ok(out)
    }

    pub fn queued_count(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(OUTBOX)?.len()?)
    }

    /// Drops changes once published.
    pub fn unqueue(&self, seqs: &[u64]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut outbox = tx.open_table(OUTBOX)?;
            for s in seqs {
                outbox.remove(s)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta.get(key)?;
        Ok(v.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(key, value.as_bytes())?;
        tx.commit()?;
        Ok(())
    }

    pub fn put(&self, entry: &Entry) -> Result<()> {
        self.put_all(std::slice::from_ref(entry))
    }

    /// Removes entries by key; returns those that were there.
    pub fn remove_all(&self, keys: &[String]) -> Result<Vec<Entry>> {
        let tx = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            let mut blocks = tx.open_table(BLOCKS)?;
            for k in keys {
                if let Some(v) = blocks.remove(k.as_str())? {
                    removed.push(decode(k, v.value())?);
                }
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        let tx = self.db.begin_read()?;
        let blocks = tx.open_table(BLOCKS)?;
        let v = blocks.get(key)?;
        v.map(|v| decode(key, v.value())).transpose()
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        let tx = self.db.begin_read()?;
        let blocks = tx.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for item in blocks.iter()? {
            let (k, v) = item?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(name: &str) -> Entry {
        Entry {
            kind: Kind::Helo,
            name: name.into(),
            reason: "bogus_helo".into(),
            reply: "550 5.7.1 Bogus HELO".into(),
            added_unix_s: 1,
            expires_unix_s: 0,
            origin: "agent".into(),
        }
    }

    #[test]
    fn entries_and_key_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let s = Store::open(dir.path()).unwrap();
            s.put(&entry("localhost")).unwrap();
            s.hash_key().unwrap()
        };
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.hash_key().unwrap(), key);
        assert_eq!(s.entries().unwrap(), vec![entry("localhost")]);
        assert_eq!(s.remove_all(&["helo/localhost".into()]).unwrap().len(), 1);
        assert!(s.entries().unwrap().is_empty());
    }

    #[test]
    fn validation_catches_hand_written_mistakes() {
        assert!(entry("localhost").validate().is_ok());
        assert!(entry("LocalHost").validate().is_err());
        assert!(entry("x y").validate().is_err());
        let mut e = entry("x");
        e.kind = Kind::Source;
        assert!(e.validate().is_err());
        e.name = "198.18.0.1".into();
        assert!(e.validate().is_ok());
        e.reply = "250 ok".into();
        assert!(e.validate().is_err());
    }
}
