//! The state that survives restarts, in an embedded, crash-safe redb database under the state
//! directory: the blocklist, the hash key, the fleet outbox and the fleet position, and the
//! operator's allow entries (`helo allow add`; the config file's `[classifier.allow]` stays in the
//! file). They are kept here rather than in a file of their own because this file is already
//! fsync'd on every change and locked by whichever process holds it: the agent, or an offline
//! admin command, never both.
//!
//! Every change is committed (fsync'd) before the caller acknowledges it: a listing the agent
//! replied to, or an operator's `blocklist add` that returned, is on disk even if the agent is
//! killed the next instant.
//!
//! The file holds the SipHash key, so it is created 0600 whatever the directory's mode (systemd's
//! `StateDirectory=` makes it 0755): whoever reads the key can craft names that collide with a
//! legitimate sender's. A store that is missing or empty while maps are pinned is refused at start
//! ([`refuse_reset`]): a new key would orphan every pinned entry.
//!
//! After an I/O error (a full disk) redb refuses every further operation ("Previous I/O error
//! occurred") until the database is closed and opened again. The store does that itself, before
//! the next operation, so the agent recovers when the filesystem does, without a restart. While
//! the disk stays full every retry reopens it: that is said at most once a minute.

use std::{
    fs::OpenOptions,
    io::ErrorKind,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use helo_common::HashKey;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::listing::{allow::AllowEntry, Entry, Kind};

/// `kind/name` → JSON [`Entry`].
const BLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Fleet changes waiting to be published: sequence → JSON [`FleetChange`].
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("fleet_outbox");
/// `kind/value` → JSON [`AllowEntry`]: the operator's allow entries.
const ALLOW: TableDefinition<&str, &[u8]> = TableDefinition::new("allow");
const HASH_KEY: &str = "hash_key";

pub const DB_FILE: &str = "helo.redb";

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
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Every operation holds the read side for its whole length; a reopen takes the write side,
    /// so the old handle is gone (with its file lock) before the new one opens.
    db: RwLock<Option<Database>>,
    /// Set by a failed redb operation: reopen before the next one.
    poisoned: AtomicBool,
    /// When a reopen was last logged, and how many happened since (a full disk reopens on every
    /// retry, once a second).
    reopen_logged: Mutex<Option<Instant>>,
    reopens_unlogged: AtomicU64,
}

/// At most one `reopened after an error` line this often.
const REOPEN_LOG_EVERY: Duration = Duration::from_secs(60);

fn decode(key: &str, bytes: &[u8]) -> Result<Entry> {
    serde_json::from_slice(bytes).with_context(|| format!("store entry {key} is corrupt"))
}

/// Refuses to start on a store that lost its contents (see the module doc). `pins_present`: maps
/// are pinned, so the kernel holds hashes made with the key this store kept.
///
/// - no file, no pins: a first start, the store is created;
/// - no file, pins: refused (restore the store, or `helo detach` to start afresh);
/// - an empty (0-byte) file: refused, pins or not. redb would take it as a new database, and an
///   empty file is what a failed restore or a truncation leaves, not a first start.
pub fn refuse_reset(state_dir: &Path, pins_present: bool, pin_dir: &Path) -> Result<()> {
    let path = state_dir.join(DB_FILE);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => bail!(
            "the store {} is empty (0 bytes): refusing to start a new blocklist and hash key over it{}. \
             Restore it from a backup, or remove the file to start afresh",
            path.display(),
            if pins_present { format!(" while maps are pinned in {}", pin_dir.display()) } else { String::new() }
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound && pins_present => bail!(
            "the store {} is missing but maps are pinned in {}: their entries were hashed with a key only \
             that store held. Restore the store, or run `helo detach --pin-dir {}` to start afresh",
            path.display(),
            pin_dir.display(),
            pin_dir.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Creates the database file 0600 if it is missing, and takes group and other bits off one that
/// exists (an older version made it 0644).
fn private_file(path: &Path) -> Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
                    .with_context(|| format!("making {} private", path.display()))?;
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn open_db(path: &Path) -> Result<Database> {
    private_file(path)?;
    let db = Database::create(path).with_context(|| format!("opening {}", path.display()))?;
    let tx = db.begin_write()?;
    tx.open_table(BLOCKS)?;
    tx.open_table(META)?;
    tx.open_table(OUTBOX)?;
    tx.open_table(ALLOW)?;
    tx.commit()?;
    Ok(db)
}

/// Whether an error came from redb (as opposed to a corrupt value or a caller's mistake).
fn from_redb(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<redb::Error>()
            || c.is::<redb::StorageError>()
            || c.is::<redb::CommitError>()
            || c.is::<redb::TransactionError>()
            || c.is::<redb::TableError>()
            || c.is::<redb::DatabaseError>()
    })
}

impl Store {
    /// Opens (or creates) the store in `state_dir`. Fails if another process holds it.
    pub fn open(state_dir: &Path) -> Result<Self> {
        crate::state::ensure_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let db = open_db(&path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                db: RwLock::new(Some(db)),
                poisoned: AtomicBool::new(false),
                reopen_logged: Mutex::new(None),
                reopens_unlogged: AtomicU64::new(0),
            }),
        })
    }

    /// [`refuse_reset`], then [`Store::open`]: what the agent and the offline admin commands use.
    pub fn open_guarded(state_dir: &Path, pin_dir: &Path) -> Result<Self> {
        refuse_reset(state_dir, crate::kernel::pin::maps_pinned(pin_dir), pin_dir)?;
        Self::open(state_dir)
    }

    /// Runs `f` on the database, reopening it first if an earlier operation failed in redb.
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        let result = {
            let guard = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
            let db = guard.as_ref().context("the store is closed")?;
            f(db)
        };
        if let Err(e) = &result {
            if from_redb(e) {
                self.inner.poisoned.store(true, Ordering::SeqCst);
            }
        }
        result
    }

    /// Closes and reopens the database: redb keeps failing after an I/O error until then.
    fn reopen(&self) -> Result<()> {
        let mut guard = self.inner.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.inner.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The old handle must be gone first: it holds the file's lock.
        drop(guard.take());
        let db = open_db(&self.inner.path).context("reopening the store after an error")?;
        *guard = Some(db);
        self.inner.poisoned.store(false, Ordering::SeqCst);
        self.log_reopen();
        Ok(())
    }

    fn log_reopen(&self) {
        let mut last = self.inner.reopen_logged.lock().unwrap_or_else(|p| p.into_inner());
        let since = self.inner.reopens_unlogged.swap(0, Ordering::SeqCst);
        if last.is_some_and(|t| t.elapsed() < REOPEN_LOG_EVERY) {
            self.inner.reopens_unlogged.store(since + 1, Ordering::SeqCst);
            tracing::debug!("store: {} reopened after an error", self.inner.path.display());
            return;
        }
        *last = Some(Instant::now());
        let more = if since > 0 { format!(" ({since} more reopens since the last such line)") } else { String::new() };
        tracing::info!("store: {} reopened after an error{more}", self.inner.path.display());
    }

    /// Whether the last operation failed in redb (the next one reopens the database first).
    pub fn failing(&self) -> bool {
        self.inner.poisoned.load(Ordering::SeqCst)
    }

    /// The hash key, if one was ever made (read only: the offline admin commands must not make one).
    pub fn existing_hash_key(&self) -> Result<Option<HashKey>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            let v = meta.get(HASH_KEY)?;
            v.map(|v| {
                let bytes: [u8; 16] = v.value().try_into().context("stored hash key is not 16 bytes")?;
                Ok(HashKey::from_bytes(bytes))
            })
            .transpose()
        })
    }

    /// The hash key, made and stored on first use.
    pub fn hash_key(&self) -> Result<HashKey> {
        self.with(|db| {
            let tx = db.begin_write()?;
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
        })
    }

    /// Inserts or replaces entries, all or none, durably.
    pub fn put_all(&self, entries: &[Entry]) -> Result<()> {
        self.put_all_publishing(entries, false)
    }

    /// As [`Store::put_all`], and with `publish` the same transaction queues them for the fleet,
    /// so a block is never on disk without its publication (or the other way round).
    pub fn put_all_publishing(&self, entries: &[Entry], publish: bool) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                let mut blocks = tx.open_table(BLOCKS)?;
                for e in entries {
                    blocks.insert(e.key().as_str(), serde_json::to_vec(e)?.as_slice())?;
                }
                if publish {
                    let mut outbox = tx.open_table(OUTBOX)?;
                    let first = outbox.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                    for (next, e) in (first..).zip(entries) {
                        outbox.insert(next, serde_json::to_vec(&FleetChange::Add { entry: e.clone() })?.as_slice())?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Queues a change for the fleet.
    pub fn queue(&self, change: &FleetChange) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                let mut outbox = tx.open_table(OUTBOX)?;
                let next = outbox.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                outbox.insert(next, serde_json::to_vec(change)?.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The oldest queued changes, up to `n`.
    pub fn queued(&self, n: usize) -> Result<Vec<(u64, FleetChange)>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let outbox = tx.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for item in outbox.iter()?.take(n) {
                let (k, v) = item?;
                out.push((k.value(), serde_json::from_slice(v.value()).context("corrupt outbox entry")?));
            }
            Ok(out)
        })
    }

    pub fn queued_count(&self) -> Result<u64> {
        self.with(|db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(OUTBOX)?.len()?)
        })
    }

    /// Drops changes once published.
    pub fn unqueue(&self, seqs: &[u64]) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                let mut outbox = tx.open_table(OUTBOX)?;
                for s in seqs {
                    outbox.remove(s)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            let v = meta.get(key)?;
            Ok(v.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(META)?.insert(key, value.as_bytes())?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn put(&self, entry: &Entry) -> Result<()> {
        self.put_all(std::slice::from_ref(entry))
    }

    /// Removes entries by key; returns those that were there.
    pub fn remove_all(&self, keys: &[String]) -> Result<Vec<Entry>> {
        self.with(|db| {
            let tx = db.begin_write()?;
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
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let blocks = tx.open_table(BLOCKS)?;
            let v = blocks.get(key)?;
            v.map(|v| decode(key, v.value())).transpose()
        })
    }

    /// The operator's allow entries.
    pub fn allow_entries(&self) -> Result<Vec<AllowEntry>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(ALLOW)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.push(serde_json::from_slice(v.value()).with_context(|| format!("store allow entry {} is corrupt", k.value()))?);
            }
            Ok(out)
        })
    }

    /// Adds or replaces an operator allow entry, durably.
    pub fn put_allow(&self, entry: &AllowEntry) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(ALLOW)?.insert(entry.key().as_str(), serde_json::to_vec(entry)?.as_slice())?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Removes an operator allow entry by key; returns it if it was there.
    pub fn remove_allow(&self, key: &str) -> Result<Option<AllowEntry>> {
        self.with(|db| {
            let tx = db.begin_write()?;
            let removed = {
                let mut table = tx.open_table(ALLOW)?;
                let v = table.remove(key)?;
                v.map(|v| serde_json::from_slice(v.value())).transpose()?
            };
            tx.commit()?;
            Ok(removed)
        })
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let blocks = tx.open_table(BLOCKS)?;
            let mut out = Vec::new();
            for item in blocks.iter()? {
                let (k, v) = item?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::listing::entry::tests::entry;

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
    fn allow_entries_survive_reopening_apart_from_the_blocklist() {
        let dir = tempfile::tempdir().unwrap();
        let e = AllowEntry::parse("198.18.30.2", None, 5).unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_allow(&e).unwrap();
            s.put_allow(&AllowEntry::parse("box.example", None, 6).unwrap()).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.allow_entries().unwrap().len(), 2);
        assert!(s.entries().unwrap().is_empty());
        assert_eq!(s.remove_allow(&e.key()).unwrap(), Some(e.clone()));
        assert_eq!(s.remove_allow(&e.key()).unwrap(), None);
        assert_eq!(s.allow_entries().unwrap().len(), 1);
    }

    #[test]
    fn the_key_file_is_private_under_an_open_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // systemd's StateDirectory= makes the directory 0755.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Store::open(&state).unwrap();
        s.hash_key().unwrap();
        drop(s);
        for entry in std::fs::read_dir(&state).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", entry.path().display());
        }
        // A store an older version left 0644 is made private when opened.
        let db = state.join(DB_FILE);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&state).unwrap());
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_lost_store_is_refused_not_re_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, pins) = (dir.path().join("state"), dir.path().join("pins"));
        // First start: no store, no pins.
        assert!(refuse_reset(&state, false, &pins).is_ok());
        // No store, but pinned maps: refused, and the message says what to do.
        let err = format!("{:#}", refuse_reset(&state, true, &pins).unwrap_err());
        assert!(err.contains("missing") && err.contains("detach"), "{err}");
        // An empty file, pins or not: refused, and it is left as it was.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(DB_FILE), b"").unwrap();
        for pinned in [false, true] {
            let err = format!("{:#}", refuse_reset(&state, pinned, &pins).unwrap_err());
            assert!(err.contains("empty (0 bytes)"), "{err}");
        }
        assert!(Store::open_guarded(&state, &pins).is_err());
        assert_eq!(std::fs::metadata(state.join(DB_FILE)).unwrap().len(), 0);
        // A real store opens.
        std::fs::remove_file(state.join(DB_FILE)).unwrap();
        let key = Store::open_guarded(&state, &pins).unwrap().hash_key().unwrap();
        assert!(refuse_reset(&state, true, &pins).is_ok());
        assert_eq!(Store::open_guarded(&state, &pins).unwrap().existing_hash_key().unwrap(), Some(key));
    }
}
