//! The blocklist: what is listed, kept in three places that this module keeps in step.
//!
//! - the store (durable, written first: nothing is acknowledged before it is on disk);
//! - the kernel maps (hashes and addresses only, with an expiry on the kernel's boot clock);
//! - a memory index of greeting hash → entry, so a kernel drop event can be answered with the
//!   entry's own reply text (the kernel only knows the hash).
//!
//! Operator changes (admin socket, fleet, expiry) go to the store first, then the kernel. The
//! agent's own listings go to the kernel first and reach the store through [`group_commit`], many
//! per transaction. Either way nothing is acknowledged before it is on disk.

mod enforce;
mod ladder;
mod group_commit;

pub use self::group_commit::Committed;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use helo_common::{hash_normalised, maps::{reason, BlockEntry}, normalised_arg, HashKey};

use self::group_commit::GroupCommit;
use crate::{
    kernel::KernelFilter,
    store::{source_target, Entry, Kind, SourceTarget, Store},
};

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `CLOCK_BOOTTIME` in ns: the kernel's clock for entry expiry and hit times.
pub fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The normalised form of a greeting argument, as stored and shown.
pub fn normalise(raw: &str) -> String {
    String::from_utf8_lossy(&normalised_arg(raw.as_bytes()).collect::<Vec<_>>()).into_owned()
}

/// The kernel's reason code for a reason string (a rule id, or anything an operator wrote).
fn reason_code(reason: &str) -> u32 {
    match reason {
        "bogus_helo" => reason::BOGUS_HELO,
        "helo_is_my_ip" => reason::HELO_IS_MY_IP,
        "helo_matches_rcpt" => reason::HELO_MATCHES_RCPT,
        "operator_deny" => reason::OPERATOR_DENY,
        "literal_mismatch" => reason::LITERAL_MISMATCH,
        "offender_ladder" => reason::LADDER,
        _ => reason::OPERATOR,
    }
}

/// An entry with what the kernel knows of it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Listed {
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
    /// Entries the kernel's LRU maps dropped to make room (found missing by [`Blocklist::reconcile`]).
    #[serde(default)]
    pub evicted: u64,
}

pub struct Blocklist {
    kernel: Arc<Mutex<KernelFilter>>,
    store: Store,
    key: HashKey,
    pub helo_ttl: Duration,
    pub source_ttl: Duration,
    /// Greeting hash → entry, for drop-event replies.
    helo_index: Mutex<HashMap<u64, Entry>>,
    sources: Mutex<HashMap<IpAddr, Entry>>,
    nets: Mutex<HashMap<ipnet::IpNet, Entry>>,
    changes: Mutex<ChangeCounts>,
    /// Whether local changes are queued for the fleet.
    fleet: Arc<AtomicBool>,
    /// Wakes the fleet publisher when something was queued.
    pub outbox_ready: Arc<tokio::sync::Notify>,
    commits: GroupCommit,
    /// Held by an agent listing for its kernel update and queueing, and by an operator change for
    /// its whole length: changes reach the store in the order they reached the kernel.
    order: Mutex<()>,
    /// Operator changes holding or waiting for `order`.
    operator_busy: AtomicUsize,
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
    /// Builds the blocklist over `store` and loads every live entry into the kernel (expired ones
    /// are dropped from the store on the way).
    pub fn open(kernel: Arc<Mutex<KernelFilter>>, store: Store, key: HashKey, helo_ttl: Duration, source_ttl: Duration) -> Result<Self> {
        let fleet = Arc::new(AtomicBool::new(false));
        let outbox_ready = Arc::new(tokio::sync::Notify::new());
        let commits = GroupCommit::start(store.clone(), Arc::clone(&fleet), {
            let outbox_ready = Arc::clone(&outbox_ready);
            move |published| {
                if published {
                    outbox_ready.notify_one();
                }
            }
        })?;
        let list = Self {
            kernel,
            store,
            key,
            helo_ttl,
            source_ttl,
            helo_index: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            nets: Mutex::new(HashMap::new()),
            changes: Mutex::new(ChangeCounts::default()),
            fleet,
            outbox_ready,
            commits,
            order: Mutex::new(()),
            operator_busy: AtomicUsize::new(0),
        };
        let now = unix_now();
        let (live, expired): (Vec<_>, Vec<_>) = list.store.entries()?.into_iter().partition(|e| !e.expired(now));
        list.store.remove_all(&expired.iter().map(Entry::key).collect::<Vec<_>>())?;
        for e in &live {
            list.to_kernel(e)?;
        }
        log::info!("blocklist: {} entries loaded into the kernel, {} expired ones removed", live.len(), expired.len());
        Ok(list)
    }

    fn kernel_entry(e: &Entry) -> BlockEntry {
        let expires_boot_ns = if e.expires_unix_s == 0 {
            0
        } else {
            boot_now_ns() + e.expires_unix_s.saturating_sub(unix_now()) * 1_000_000_000
        };
        BlockEntry { reason: reason_code(&e.reason), added_unix_s: e.added_unix_s, expires_boot_ns, ..Default::default() }
    }

    fn to_kernel(&self, e: &Entry) -> Result<()> {
        let value = Self::kernel_entry(e);
        let mut k = self.kernel.lock().unwrap();
        match e.kind {
            Kind::Helo => {
                let hash = hash_normalised(&self.key, e.name.as_bytes());
                k.maps.block_helo(hash, value)?;
                self.helo_index.lock().unwrap().insert(hash, e.clone());
            }
            Kind::Source => match source_target(&e.name)? {
                SourceTarget::Addr(ip) => {
                    k.maps.block_source(ip, value)?;
                    self.sources.lock().unwrap().insert(ip, e.clone());
                }
                SourceTarget::Net(net) => {
                    k.maps.block_source_net(net.addr(), net.prefix_len(), value)?;
                    self.nets.lock().unwrap().insert(net, e.clone());
                }
            },
        }
        Ok(())
    }

    fn from_kernel(&self, e: &Entry) -> Result<()> {
        let mut k = self.kernel.lock().unwrap();
        match e.kind {
            Kind::Helo => {
                let hash = hash_normalised(&self.key, e.name.as_bytes());
                k.maps.unblock_helo(hash)?;
                self.helo_index.lock().unwrap().remove(&hash);
            }
            Kind::Source => match source_target(&e.name) {
                Ok(SourceTarget::Addr(ip)) => {
                    k.maps.unblock_source(ip)?;
                    self.sources.lock().unwrap().remove(&ip);
                }
                Ok(SourceTarget::Net(net)) => {
                    k.maps.unblock_source_net(net.addr(), net.prefix_len())?;
                    self.nets.lock().unwrap().remove(&net);
                }
                Err(_) => {}
            },
        }
        Ok(())
    }

    /// The kernel's value for a source entry.
    fn kernel_source(k: &KernelFilter, name: &str) -> Option<BlockEntry> {
        match source_target(name).ok()? {
            SourceTarget::Addr(ip) => k.maps.source_entry(ip),
            SourceTarget::Net(net) => k.maps.source_net_entry(net.addr(), net.prefix_len()),
        }
    }

    /// Serialises an operator change with the agent's listings: what the agent queued before is
    /// committed first, and no listing slips in until the change is done.
    fn exclusive(&self) -> Exclusive<'_> {
        self.operator_busy.fetch_add(1, Ordering::SeqCst);
        let order = self.order.lock().unwrap();
        self.commits.drain();
        Exclusive { _order: order, busy: &self.operator_busy }
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
            self.to_kernel(e)?;
        }
        self.changes.lock().unwrap().added += entries.len() as u64;
        Ok(())
    }

    /// The agent's own listing: in the kernel before this returns, in the store (and the fleet's
    /// outbox) with the next group commit, which the returned [`Committed`] reports.
    fn list_now(&self, entry: Entry) -> Result<Committed> {
        entry.validate().with_context(|| format!("entry {}", entry.key()))?;
        let _order = self.order.lock().unwrap();
        self.to_kernel(&entry)?;
        let committed = self.commits.queue(entry);
        self.changes.lock().unwrap().added += 1;
        Ok(committed)
    }

    pub fn new_entry(&self, kind: Kind, name: String, reason: &str, reply: &str, ttl: Option<Duration>, origin: &str) -> Entry {
        let now = unix_now();
        let ttl = ttl.unwrap_or(match kind {
            Kind::Helo => self.helo_ttl,
            Kind::Source => self.source_ttl,
        });
        Entry {
            kind,
            name,
            reason: reason.to_owned(),
            reply: reply.to_owned(),
            added_unix_s: now,
            expires_unix_s: if ttl.is_zero() { 0 } else { now + ttl.as_secs() },
            origin: origin.to_owned(),
        }
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
        self.to_kernel(entry)?;
        self.changes.lock().unwrap().added += 1;
        Ok(())
    }

    /// Lists a greeting argument (as the client sent it) for every sender.
    pub fn block_helo(&self, raw_arg: &[u8], rule: &str, reply: &str) -> Result<Committed> {
        let name = String::from_utf8_lossy(&normalised_arg(raw_arg).collect::<Vec<_>>()).into_owned();
        self.list_now(self.new_entry(Kind::Helo, name, rule, reply, None, "agent"))
    }

    /// Lists a client address.
    pub fn block_source(&self, ip: IpAddr, rule: &str, reply: &str) -> Result<Committed> {
        self.list_now(self.new_entry(Kind::Source, ip.to_canonical().to_string(), rule, reply, None, "agent"))
    }

    /// Removes entries by key (`helo/NAME`, `source/ADDR`); returns what was removed.
    pub fn remove(&self, keys: &[String]) -> Result<Vec<Entry>> {
        let _x = self.exclusive();
        self.remove_exclusive(keys)
    }

    fn remove_exclusive(&self, keys: &[String]) -> Result<Vec<Entry>> {
        let removed = self.store.remove_all(keys)?;
        for e in &removed {
            self.from_kernel(e)?;
        }
        self.changes.lock().unwrap().removed += removed.len() as u64;
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
            self.from_kernel(e)?;
        }
        self.changes.lock().unwrap().expired += removed.len() as u64;
        Ok(removed.len())
    }

    /// One entry, if it is listed both in the store and in the kernel.
    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<Listed>> {
        let Some(entry) = self.store.get(&format!("{}/{name}", kind.as_str()))? else { return Ok(None) };
        let k = self.kernel.lock().unwrap();
        let kernel = match kind {
            Kind::Helo => k.maps.helo_entry(hash_normalised(&self.key, name.as_bytes())),
            Kind::Source => Self::kernel_source(&k, name),
        };
        Ok(kernel.map(|v| Listed { entry, hits: v.hits, last_hit_unix_s: 0 }))
    }

    /// Finds entries the kernel's LRU maps evicted to make room (the maps were full) and drops them
    /// from the store too, so `list` and the metrics tell the truth. Costs one map lookup per
    /// entry, so it runs far less often than expiry.
    pub fn reconcile(&self) -> Result<usize> {
        let _x = self.exclusive();
        let now = unix_now();
        let mut gone = Vec::new();
        {
            let k = self.kernel.lock().unwrap();
            for e in self.store.entries()?.into_iter().filter(|e| !e.expired(now)) {
                let present = match e.kind {
                    Kind::Helo => k.maps.helo_entry(hash_normalised(&self.key, e.name.as_bytes())).is_some(),
                    Kind::Source => Self::kernel_source(&k, &e.name).is_some(),
                };
                if !present {
                    gone.push(e);
                }
            }
        }
        let removed = self.store.remove_all(&gone.iter().map(Entry::key).collect::<Vec<_>>())?;
        for e in &removed {
            self.from_kernel(e)?;
        }
        self.changes.lock().unwrap().evicted += removed.len() as u64;
        Ok(removed.len())
    }

    /// Every entry with its kernel hit count and last hit.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let boot_now = boot_now_ns();
        let unix = unix_now();
        let k = self.kernel.lock().unwrap();
        let mut out = Vec::new();
        for entry in self.store.entries()? {
            let kernel = match entry.kind {
                Kind::Helo => k.maps.helo_entry(hash_normalised(&self.key, entry.name.as_bytes())),
                Kind::Source => Self::kernel_source(&k, &entry.name),
            };
            let (hits, last_hit_unix_s) = match kernel {
                Some(v) if v.last_hit_boot_ns > 0 => {
                    (v.hits, unix.saturating_sub(boot_now.saturating_sub(v.last_hit_boot_ns) / 1_000_000_000))
                }
                Some(v) => (v.hits, 0),
                None => (0, 0),
            };
            out.push(Listed { entry, hits, last_hit_unix_s });
        }
        Ok(out)
    }

    /// The listed name and the reply for a kernel drop of this greeting hash, if it is listed here.
    pub fn helo_listed(&self, hash: u64) -> Option<(String, String)> {
        self.helo_index.lock().unwrap().get(&hash).map(|e| (e.name.clone(), e.reply.clone()))
    }

    pub fn source_reply(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        if let Some(e) = self.sources.lock().unwrap().get(&ip) {
            return Some(e.reply.clone());
        }
        // The most specific listed network holding the address, as the kernel matched it.
        let nets = self.nets.lock().unwrap();
        nets.iter().filter(|(n, _)| n.contains(&ip)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, e)| e.reply.clone())
    }

    /// Entries by kind: (helo, source), networks counted as source entries.
    pub fn counts(&self) -> (usize, usize) {
        (self.helo_index.lock().unwrap().len(), self.sources.lock().unwrap().len() + self.nets.lock().unwrap().len())
    }

    pub fn changes(&self) -> ChangeCounts {
        *self.changes.lock().unwrap()
    }
}
