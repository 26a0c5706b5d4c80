//! The blocklist: what is listed, kept in three places that this module keeps in step.
//!
//! - the store (durable, written first: nothing is acknowledged before it is on disk);
//! - the kernel maps (hashes and addresses only, with an expiry on the kernel's monotonic clock);
//! - a memory index of greeting hash → entry, so a kernel drop event can be answered with the
//!   entry's own reply text (the kernel only knows the hash).
//!
//! Operator changes (admin socket, fleet, expiry) go to the store first, then the kernel. The
//! agent's own listings go to the kernel first and reach the store through `group_commit.rs`, many
//! per transaction. Either way nothing is acknowledged before it is on disk.

mod enforce;
mod group_commit;
pub mod kernel_side;
mod ladder;
pub mod learned;
pub mod offline;
#[cfg(test)]
mod tests;

pub use self::group_commit::Committed;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use helo_common::HashKey;

use self::group_commit::{GroupCommit, Outcome};
use crate::{
    kernel::Kernel,
    listing::{
        clock::{mono_ns_to_unix_s, unix_now},
        name, Entry, Kind, Match, Origin, Target,
    },
    store::Store,
};

/// An entry with what the kernel knows of it: its hits and the latest one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EntryHits {
    #[serde(flatten)]
    pub entry: Entry,
    pub hits: u64,
    /// Unix time of the latest kernel hit, 0 if none.
    pub last_hit_unix_s: u64,
}

/// Changes counted for metrics.
#[derive(Default, Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChangeCounts {
    pub added: u64,
    pub removed: u64,
    pub expired: u64,
    /// Agent listings the kernel's full tables dropped to make room (found missing by
    /// [`Blocklist::reconcile`]), dropped from the store too.
    #[serde(default)]
    pub evicted: u64,
    /// Store entries found missing from the kernel and put back (operator, fleet and imported
    /// entries are never dropped because the kernel evicted them).
    #[serde(default)]
    pub reconciled_to_kernel: u64,
    /// Kernel entries without a store entry, removed (at start and by the reconcile).
    #[serde(default)]
    pub reconciled_from_kernel: u64,
    /// Listing transactions the store could not commit (their kernel entries were withdrawn).
    #[serde(default)]
    pub store_errors: u64,
    /// Rejections not listed because their source had reached its quota ([`learned`]).
    #[serde(default)]
    pub learned_limited: u64,
}

/// The kernel maps and the memory index, which always change together, and the lock that orders
/// changes: shared with the commit thread, which withdraws what it could not store.
struct Tables {
    kernel: Arc<Mutex<dyn Kernel>>,
    key: HashKey,
    /// Greeting hash → entry, for drop-event replies.
    helo_index: Mutex<HashMap<u64, Entry>>,
    sources: Mutex<HashMap<IpAddr, Entry>>,
    nets: Mutex<HashMap<ipnet::IpNet, Entry>>,
    /// Held by an agent listing for its kernel update and queueing, and by an operator change for
    /// its whole length: changes reach the store in the order they reached the kernel.
    order: Mutex<()>,
    changes: Mutex<ChangeCounts>,
}

impl Tables {
    fn index(&self, e: &Entry) {
        match e.target.matches() {
            Match::Greeting => {
                self.helo_index.lock().unwrap().insert(kernel_side::helo_hash(&self.key, e.name()), e.clone());
            }
            Match::Addr(ip) => {
                self.sources.lock().unwrap().insert(ip, e.clone());
            }
            Match::Net(net) => {
                self.nets.lock().unwrap().insert(net, e.clone());
            }
        }
    }

    /// The indexed entry for `t`, if any.
    fn indexed(&self, t: &Target) -> Option<Entry> {
        match t.matches() {
            Match::Greeting => self.helo_index.lock().unwrap().get(&kernel_side::helo_hash(&self.key, t.name())).cloned(),
            Match::Addr(ip) => self.sources.lock().unwrap().get(&ip).cloned(),
            Match::Net(net) => self.nets.lock().unwrap().get(&net).cloned(),
        }
    }

    fn unindex(&self, t: &Target) {
        match t.matches() {
            Match::Greeting => {
                self.helo_index.lock().unwrap().remove(&kernel_side::helo_hash(&self.key, t.name()));
            }
            Match::Addr(ip) => {
                self.sources.lock().unwrap().remove(&ip);
            }
            Match::Net(net) => {
                self.nets.lock().unwrap().remove(&net);
            }
        }
    }

    fn to_kernel(&self, e: &Entry) -> Result<()> {
        kernel_side::put(&mut *self.kernel.lock().unwrap(), &self.key, e)?;
        self.index(e);
        Ok(())
    }

    fn withdraw_from_kernel(&self, e: &Entry) -> Result<()> {
        kernel_side::remove(&mut *self.kernel.lock().unwrap(), &self.key, &e.target)?;
        self.unindex(&e.target);
        Ok(())
    }

    fn in_kernel(&self, k: &dyn Kernel, e: &Entry) -> bool {
        kernel_side::get(k, &self.key, &e.target).is_some()
    }
}

/// What the commit thread's transactions mean for the kernel and the counters.
struct CommitOutcome {
    tables: Arc<Tables>,
    outbox_ready: Arc<tokio::sync::Notify>,
}

impl Outcome for CommitOutcome {
    fn committed(&self, entries: &[Entry], published: bool, replayed: bool) {
        if published {
            self.outbox_ready.notify_one();
        }
        if replayed {
            let now = unix_now();
            let mut back = 0;
            for e in entries.iter().filter(|e| !e.expired(now)) {
                match self.tables.to_kernel(e) {
                    Ok(()) => back += 1,
                    Err(err) => tracing::error!("blocklist: {} stored but not put back in the kernel: {err:#}", e.key()),
                }
            }
            tracing::debug!("store: {} listings that had failed are stored, {back} back in the kernel", entries.len());
        }
    }

    fn failed(&self, entries: &[Entry], error: &anyhow::Error, first: bool) {
        // No listing the store does not know: the kernel shortcut goes (the senders were or will
        // be answered all the same), and comes back once the entries are stored.
        for e in entries {
            if let Err(err) = self.tables.withdraw_from_kernel(e) {
                tracing::error!("blocklist: could not withdraw {} from the kernel: {err:#}", e.key());
            }
        }
        self.tables.changes.lock().unwrap().store_errors += 1;
        if first {
            tracing::error!(
                "store: cannot commit listings ({error:#}); {} withdrawn from the kernel and kept to retry every \
                 second. Further failures are counted (helo_store_errors_total), not logged, until it works again",
                entries.len()
            );
        }
    }

    fn recovered(&self, failures: u64, lasted: Duration) {
        tracing::warn!(
            "store: working again; {failures} listing transactions failed over {}s, every listing kept for a retry is \
             stored and back in the kernel",
            lasted.as_secs()
        );
    }
}

pub struct Blocklist {
    tables: Arc<Tables>,
    store: Store,
    /// Default time to live of new listings, in seconds, per kind: a reload changes them.
    helo_ttl_s: AtomicU64,
    source_ttl_s: AtomicU64,
    /// Whether local changes are queued for the fleet.
    fleet: Arc<AtomicBool>,
    /// Wakes the fleet publisher when something was queued.
    pub outbox_ready: Arc<tokio::sync::Notify>,
    commits: GroupCommit,
    /// Operator changes holding or waiting for `order`.
    operator_busy: AtomicUsize,
    /// What one source may get listed.
    learned: learned::Limiter,
}

/// An operator change in progress: see [`Blocklist::exclusive`].
struct Exclusive<'a> {
    _order: MutexGuard<'a, ()>,
    busy: &'a AtomicUsize,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Blocklist {
    /// Builds the blocklist over `store` and makes the kernel maps equal to it: every live entry
    /// is loaded, and every kernel entry the store does not hold (an offline delete while the
    /// agent was down, a listing an older agent could not store) is removed. Expired entries are
    /// dropped from the store on the way.
    pub fn open(kernel: Arc<Mutex<dyn Kernel>>, store: Store, key: HashKey, helo_ttl: Duration, source_ttl: Duration) -> Result<Self> {
        let fleet = Arc::new(AtomicBool::new(false));
        let outbox_ready = Arc::new(tokio::sync::Notify::new());
        let tables = Arc::new(Tables {
            kernel,
            key,
            helo_index: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            nets: Mutex::new(HashMap::new()),
            order: Mutex::new(()),
            changes: Mutex::new(ChangeCounts::default()),
        });
        let outcome = CommitOutcome { tables: Arc::clone(&tables), outbox_ready: Arc::clone(&outbox_ready) };
        let commits = GroupCommit::start(store.clone(), Arc::clone(&fleet), outcome)?;
        let list = Self {
            tables,
            store,
            helo_ttl_s: AtomicU64::new(helo_ttl.as_secs()),
            source_ttl_s: AtomicU64::new(source_ttl.as_secs()),
            fleet,
            outbox_ready,
            commits,
            operator_busy: AtomicUsize::new(0),
            learned: learned::Limiter::default(),
        };
        let now = unix_now();
        let (live, expired): (Vec<_>, Vec<_>) = list.store.entries()?.into_iter().partition(|e| !e.expired(now));
        list.store.remove_all(&expired.iter().map(Entry::key).collect::<Vec<_>>())?;
        for e in &live {
            list.tables.to_kernel(e)?;
        }
        let ghosts = {
            let mut k = list.tables.kernel.lock().unwrap();
            kernel_side::retain_only(&mut *k, &list.tables.key, &live)?
        };
        list.tables.changes.lock().unwrap().reconciled_from_kernel += ghosts.total() as u64;
        tracing::info!(
            "blocklist: {} entries loaded into the kernel, {} expired ones removed, {} kernel entries the store did \
             not hold removed ({} helo, {} source, {} network)",
            live.len(),
            expired.len(),
            ghosts.total(),
            ghosts.helo,
            ghosts.sources,
            ghosts.nets
        );
        Ok(list)
    }

    /// Serialises an operator change with the agent's listings: what the agent queued before is
    /// committed first, and no listing slips in until the change is done.
    fn exclusive(&self) -> Exclusive<'_> {
        self.operator_busy.fetch_add(1, Ordering::SeqCst);
        let order = self.tables.order.lock().unwrap();
        self.commits.drain();
        Exclusive { _order: order, busy: &self.operator_busy }
    }

    fn count(&self, f: impl FnOnce(&mut ChangeCounts)) {
        f(&mut self.tables.changes.lock().unwrap());
    }

    /// Returns once every listing queued so far is on disk.
    pub fn sync(&self) {
        self.commits.drain();
    }

    /// Whether an operator change holds the blocklist (an import, say): a listing made now waits
    /// for it, so a caller on an async thread should move off it first.
    pub fn operator_busy(&self) -> bool {
        self.operator_busy.load(Ordering::SeqCst) > 0
    }

    /// Adds (or replaces) entries: store first, all or none, then the kernel. Entries of this
    /// box are queued for the fleet in the same transaction when a fleet is configured.
    pub fn add_all(&self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            e.validate().with_context(|| format!("entry {}", e.key()))?;
        }
        let _x = self.exclusive();
        let publish = self.fleet.load(Ordering::Relaxed);
        self.store.put_all_publishing(entries, publish)?;
        if publish {
            self.outbox_ready.notify_one();
        }
        for e in entries {
            self.tables.to_kernel(e)?;
        }
        self.count(|c| c.added += entries.len() as u64);
        Ok(())
    }

    /// The agent's own listing: in the kernel before this returns, in the store (and the fleet's
    /// outbox) with the next group commit, which the returned [`Committed`] reports. If that
    /// commit fails, the kernel entry is withdrawn again (see [`group_commit`]).
    fn list_now(&self, entry: Entry) -> Result<Committed> {
        entry.validate().with_context(|| format!("entry {}", entry.key()))?;
        let _order = self.tables.order.lock().unwrap();
        // An operator's, imported or fleet entry for the same name stays as it is: replaced by
        // the agent's, it would become evictable and lose its reason, reply and expiry.
        if self.tables.indexed(&entry.target).is_some_and(|e| !e.origin.learned_here()) {
            return Ok(Committed::resolved(true));
        }
        self.tables.to_kernel(&entry)?;
        let committed = self.commits.queue(entry);
        self.count(|c| c.added += 1);
        Ok(committed)
    }

    /// The time to live a new listing of `kind` gets unless told otherwise.
    pub fn default_ttl(&self, kind: Kind) -> Duration {
        Duration::from_secs(match kind {
            Kind::Helo => self.helo_ttl_s.load(Ordering::Relaxed),
            Kind::Source => self.source_ttl_s.load(Ordering::Relaxed),
        })
    }

    /// New default times to live, for listings made from now on (a reload); entries already
    /// listed keep their expiry.
    pub fn set_default_ttls(&self, helo: Duration, source: Duration) {
        self.helo_ttl_s.store(helo.as_secs(), Ordering::Relaxed);
        self.source_ttl_s.store(source.as_secs(), Ordering::Relaxed);
    }

    /// An entry added now, for `ttl` or else the default of its kind.
    pub fn new_entry(&self, target: Target, reason: &str, reply: &str, ttl: Option<Duration>, origin: Origin) -> Entry {
        let ttl = ttl.unwrap_or_else(|| self.default_ttl(target.kind()));
        Entry::new(target, reason, reply, ttl, origin)
    }

    /// From now on, local changes are queued for the fleet.
    pub fn enable_fleet(&self) {
        self.fleet.store(true, Ordering::Relaxed);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies an entry another box published: stored and put in the kernel with its origin, but
    /// not published again.
    pub fn apply_remote(&self, entry: &Entry) -> Result<()> {
        entry.validate()?;
        let _x = self.exclusive();
        self.store.put(entry)?;
        self.tables.to_kernel(entry)?;
        self.count(|c| c.added += 1);
        Ok(())
    }

    /// Lists a greeting argument (as the client sent it, byte for byte) for every sender, with no
    /// per-source bound: sessions should call [`Blocklist::list_greeting_from`].
    pub fn list_greeting(&self, raw_arg: &[u8], rule: &str, reply: &str) -> Result<Committed> {
        self.list_now(self.new_entry(Target::greeting(name::from_wire(raw_arg)), rule, reply, None, Origin::Agent))
    }

    /// At most `per_hour` new learned listings per source and hour (see [`learned`]).
    pub fn with_learned_quota(mut self, per_hour: u32) -> Self {
        self.learned = learned::Limiter::new(per_hour, learned::SOURCES);
        self
    }

    /// [`Blocklist::list_greeting`] for a greeting `client` sent, within the client's quota of new
    /// listings ([`learned`]). Beyond it nothing is listed (and that is counted); the caller
    /// replies all the same.
    pub fn list_greeting_from(&self, client: IpAddr, raw_arg: &[u8], rule: &str, reply: &str) -> Result<Committed> {
        let name = name::from_wire(raw_arg);
        let already = self.tables.helo_index.lock().unwrap().contains_key(&kernel_side::helo_hash(&self.tables.key, &name));
        if !already && !self.learned.admit(client, unix_now()) {
            self.count(|c| c.learned_limited += 1);
            tracing::debug!("{client}: over its quota of new listings; {name} is not listed");
            return Ok(Committed::resolved(true));
        }
        self.list_now(self.new_entry(Target::greeting(name), rule, reply, None, Origin::Agent))
    }

    /// Lists a client address.
    pub fn list_source(&self, ip: IpAddr, rule: &str, reply: &str) -> Result<Committed> {
        self.list_now(self.new_entry(Target::addr(ip), rule, reply, None, Origin::Agent))
    }

    /// Removes entries by key (`helo/NAME`, `source/ADDR`); returns what was removed.
    pub fn remove(&self, keys: &[String]) -> Result<Vec<Entry>> {
        let _x = self.exclusive();
        self.remove_exclusive(keys)
    }

    fn remove_exclusive(&self, keys: &[String]) -> Result<Vec<Entry>> {
        let removed = self.store.remove_all(keys)?;
        for e in &removed {
            self.tables.withdraw_from_kernel(e)?;
        }
        self.count(|c| c.removed += removed.len() as u64);
        Ok(removed)
    }

    pub fn flush(&self) -> Result<usize> {
        let _x = self.exclusive();
        let keys: Vec<String> = self.store.entries()?.iter().map(Entry::key).collect();
        Ok(self.remove_exclusive(&keys)?.len())
    }

    /// Removes what has expired from the store and the kernel.
    pub fn expire(&self) -> Result<usize> {
        let _x = self.exclusive();
        let now = unix_now();
        let keys: Vec<String> = self.store.entries()?.iter().filter(|e| e.expired(now)).map(Entry::key).collect();
        let removed = self.store.remove_all(&keys)?;
        for e in &removed {
            self.tables.withdraw_from_kernel(e)?;
        }
        self.count(|c| c.expired += removed.len() as u64);
        Ok(removed.len())
    }

    /// One entry, if it is listed both in the store and in the kernel.
    pub fn get(&self, target: &Target) -> Result<Option<EntryHits>> {
        let Some(entry) = self.store.get(&target.key())? else { return Ok(None) };
        let k = self.tables.kernel.lock().unwrap();
        let kernel = kernel_side::get(&*k, &self.tables.key, &entry.target);
        Ok(kernel.map(|v| EntryHits { entry, hits: v.hits, last_hit_unix_s: 0 }))
    }

    /// Makes the kernel equal to the store again, both ways, and counts what it fixed:
    /// - a store entry missing from the kernel was evicted by a full table. An agent listing is
    ///   dropped from the store too (counted as evicted); an operator, imported or fleet entry is
    ///   put back (traffic must not be able to erase what an operator listed);
    /// - a kernel entry the store does not hold is removed.
    ///
    /// Costs one map lookup per entry and a walk of the maps, so it runs far less often than
    /// expiry. Returns (evicted, put back, removed from the kernel).
    pub fn reconcile(&self) -> Result<(usize, usize, usize)> {
        let _x = self.exclusive();
        let now = unix_now();
        let entries = self.store.entries()?;
        let (mut gone, mut missing): (Vec<String>, Vec<Entry>) = (Vec::new(), Vec::new());
        {
            let k = self.tables.kernel.lock().unwrap();
            for e in entries.iter().filter(|e| !e.expired(now)) {
                if !self.tables.in_kernel(&*k, e) {
                    if e.origin.learned_here() {
                        gone.push(e.key());
                    } else {
                        missing.push(e.clone());
                    }
                }
            }
        }
        let evicted = self.store.remove_all(&gone)?;
        for e in &evicted {
            self.tables.withdraw_from_kernel(e)?;
        }
        for e in &missing {
            self.tables.to_kernel(e)?;
        }
        let kept: Vec<Entry> = entries.into_iter().filter(|e| !gone.contains(&e.key())).collect();
        let ghosts = kernel_side::retain_only(&mut *self.tables.kernel.lock().unwrap(), &self.tables.key, &kept)?;
        self.count(|c| {
            c.evicted += evicted.len() as u64;
            c.reconciled_to_kernel += missing.len() as u64;
            c.reconciled_from_kernel += ghosts.total() as u64;
        });
        Ok((evicted.len(), missing.len(), ghosts.total()))
    }

    /// Every entry with its kernel hit count and last hit.
    pub fn list(&self) -> Result<Vec<EntryHits>> {
        let k = self.tables.kernel.lock().unwrap();
        let mut out = Vec::new();
        for entry in self.store.entries()? {
            let (hits, last_hit_unix_s) = match kernel_side::get(&*k, &self.tables.key, &entry.target) {
                Some(v) => (v.hits, mono_ns_to_unix_s(v.last_hit_mono_ns)),
                None => (0, 0),
            };
            out.push(EntryHits { entry, hits, last_hit_unix_s });
        }
        Ok(out)
    }

    /// The listed name and the reply for a kernel drop of this greeting hash, if it is listed here.
    pub fn helo_listed(&self, hash: u64) -> Option<(String, String)> {
        self.tables.helo_index.lock().unwrap().get(&hash).map(|e| (e.name().to_owned(), e.reply.clone()))
    }

    /// Entries by kind: (helo, source), networks counted as source entries.
    pub fn counts(&self) -> (usize, usize) {
        let t = &self.tables;
        (t.helo_index.lock().unwrap().len(), t.sources.lock().unwrap().len() + t.nets.lock().unwrap().len())
    }

    pub fn changes(&self) -> ChangeCounts {
        *self.tables.changes.lock().unwrap()
    }

    /// Whether the store's last operation failed (a full disk, say): listings are withdrawn from
    /// the kernel and retried until it works again.
    pub fn store_failing(&self) -> bool {
        self.store.failing()
    }
}
