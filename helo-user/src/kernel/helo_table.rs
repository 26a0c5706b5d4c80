//! The HELO table as the agent holds it: the program's `HELO_TABLE` array, mapped into the
//! agent's memory. Layout, and why a table rather than a kernel hash map: [`helo_common::helo_table`].
//!
//! One process writes the table's keys and entries: the agent, or an offline `blocklist` command
//! while no agent runs (the store's file lock keeps the two apart). The program, on other CPUs
//! and at any moment, reads keys and entries and bumps an entry's hit counters. So a slot is
//! written in an order that keeps every lookup right:
//! - a new name: its entry first, then its key (with release ordering), so the program never
//!   finds a key without its entry;
//! - a slot that changes hands (an eviction, or a cuckoo move onto it): its key is cleared first;
//! - a name moves only from its first bucket to its second (the order the program reads them
//!   in), and is written there before its old slot is reused: a lookup running during the move
//!   finds it in one or the other.
//!
//! Memory shared with the kernel is only touched through raw pointers, with atomic loads and
//! stores for keys and volatile reads and writes for entries: no Rust reference to it is made.

use std::{
    collections::HashSet,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    ptr,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use helo_common::{
    helo_table::{candidates, slot_key, Bucket, SLOTS},
    maps::{names, BlockEntry},
};
use memmap2::{MmapOptions, MmapRaw};

/// `BPF_F_MMAPABLE` (uapi/linux/bpf.h): the map's memory can be mapped by user space.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Buckets an insert's search for a free slot may visit before it evicts instead (five levels
/// of four from each of a name's two buckets, at most).
const SEARCH_BUCKETS: usize = 1024;

/// A slot: bucket index, slot index.
type Slot = (u32, usize);

pub struct HeloTable {
    mem: MmapRaw,
    buckets: u32,
    /// Slots holding a name (counted once at open, then kept by every change).
    used: usize,
    /// Keeps the map alive as long as the mapping is used (the mapping alone would, too; this
    /// makes it explicit).
    _map: MapData,
    /// State of the eviction's random tie-break (xorshift).
    rng: u64,
}

// SAFETY: the mapping is plain shared memory that outlives any thread using the table; every
// access goes through atomics or volatile reads and writes (see the module's notes).
unsafe impl Send for HeloTable {}

impl HeloTable {
    /// Maps the table held by `map`, checking that it is one (an older agent's pins, a map of
    /// another program, would not be).
    pub fn new(map: MapData) -> Result<Self> {
        let info = map.info().context("reading the HELO table's map info")?;
        ensure!(
            info.value_size() as usize == size_of::<Bucket>() && info.map_flags() & BPF_F_MMAPABLE != 0,
            "the HELO table's map has values of {} bytes and flags {:#x}; expected {}-byte buckets, mappable",
            info.value_size(),
            info.map_flags(),
            size_of::<Bucket>()
        );
        let buckets = power_of_two(info.max_entries())?;
        let len = buckets as usize * size_of::<Bucket>();
        let fd = map.fd().as_fd().as_raw_fd();
        // Shared, read-write: the kernel's own pages. A map of this type cannot shrink or go away
        // while mapped.
        let mem = MmapOptions::new().len(len).map_raw(fd).context("mapping the HELO table")?;
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let mut table = Self { mem, buckets, used: 0, _map: map, rng: seed | 1 };
        table.used = table.keys().len();
        Ok(table)
    }

    /// The table pinned at `path`.
    pub fn open_pinned(path: &Path) -> Result<Self> {
        let map = MapData::from_pin(path).with_context(|| format!("opening the pinned HELO table {}", path.display()))?;
        Self::new(map)
    }

    /// The bucket count of the table pinned at `path` (a restarted agent keeps it: the program
    /// it loads must be told the size of the table it reuses).
    pub fn pinned_buckets(path: &Path) -> Result<u32> {
        let map = MapData::from_pin(path).with_context(|| format!("opening the pinned HELO table {}", path.display()))?;
        let info = map.info().context("reading the HELO table's map info")?;
        power_of_two(info.max_entries()).with_context(|| format!("the HELO table pinned at {}", path.display()))
    }

    /// Names the table can hold.
    pub fn slots(&self) -> usize {
        self.buckets as usize * SLOTS
    }

    /// Names it holds.
    pub fn used(&self) -> usize {
        self.used
    }

    fn mask(&self) -> u32 {
        self.buckets - 1
    }

    fn bucket(&self, index: u32) -> *mut Bucket {
        assert!(index < self.buckets);
        // SAFETY: in bounds (checked above) of a mapping of `buckets` buckets.
        unsafe { self.mem.as_mut_ptr().cast::<Bucket>().add(index as usize) }
    }

    fn key_cell(&self, (bucket, slot): Slot) -> &AtomicU64 {
        // SAFETY: the key is an aligned u64 in the mapping (page-aligned, buckets of 8-byte
        // fields), valid while `self` is; the kernel only reads it, and every access of ours is
        // atomic.
        unsafe { AtomicU64::from_ptr(ptr::addr_of_mut!((*self.bucket(bucket)).keys[slot])) }
    }

    fn key_at(&self, at: Slot) -> u64 {
        self.key_cell(at).load(Ordering::Acquire)
    }

    fn entry_at(&self, (bucket, slot): Slot) -> BlockEntry {
        // SAFETY: in the mapping; volatile because the kernel writes the hit counters at any time.
        unsafe { ptr::read_volatile(ptr::addr_of!((*self.bucket(bucket)).entries[slot])) }
    }

    /// Writes a slot so that no lookup sees `key` without `entry`, or the slot's former key with
    /// a half-written entry for longer than the write itself.
    fn put(&self, at: Slot, key: u64, entry: BlockEntry) {
        let cell = self.key_cell(at);
        if cell.load(Ordering::Relaxed) != key {
            cell.store(0, Ordering::Release);
        }
        // SAFETY: in the mapping; volatile as above.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*self.bucket(at.0)).entries[at.1]), entry) };
        cell.store(key, Ordering::Release);
    }

    fn find(&self, key: u64) -> Option<Slot> {
        candidates(key, self.mask()).into_iter().flat_map(slots_in).find(|&at| self.key_at(at) == key)
    }

    fn free_slot(&self, bucket: u32) -> Option<usize> {
        slots_in(bucket).find(|&at| self.key_at(at) == 0).map(|(_, slot)| slot)
    }

    pub fn get(&self, hash: u64) -> Option<BlockEntry> {
        self.find(slot_key(hash)).map(|at| self.entry_at(at))
    }

    /// Lists `hash` (or replaces its entry). When both of its buckets are full and no name can
    /// move aside, one of those eight names is evicted (see [`Self::least_recently_used`]):
    /// `Some(its key)`.
    pub fn insert(&mut self, hash: u64, entry: BlockEntry) -> Option<u64> {
        let key = slot_key(hash);
        if let Some(at) = self.find(key) {
            self.put(at, key, entry);
            return None;
        }
        let [first, second] = candidates(key, self.mask());
        if let Some(at) = [first, second].into_iter().find_map(|b| self.free_slot(b).map(|s| (b, s))) {
            self.put(at, key, entry);
            self.used += 1;
            return None;
        }
        if let Some(path) = self.search(key) {
            // From the free end back: each name is written to its new slot before its old slot
            // is handed to the name behind it.
            for i in (1..path.len()).rev() {
                let (moving, entry) = (self.key_at(path[i - 1]), self.entry_at(path[i - 1]));
                self.put(path[i], moving, entry);
            }
            self.put(path[0], key, entry);
            self.used += 1;
            return None;
        }
        let victim = self.least_recently_used([first, second]);
        let evicted = self.key_at(victim);
        self.put(victim, key, entry);
        Some(evicted)
    }

    /// The shortest chain of slots from one of `key`'s buckets to a free slot, each name on it
    /// moving from its first bucket to its second (a breadth-first search over at most
    /// [`SEARCH_BUCKETS`] buckets), or `None`.
    ///
    /// Only that direction, because the program looks in the first bucket, then the second: a
    /// name written to its second bucket before its first slot is cleared is found by every
    /// lookup, even one that runs during the move. A move the other way could slip past a lookup
    /// (not there yet when the first bucket is read, gone when the second is), and did in
    /// `kernel_helo_table`'s test of a lookup racing the writer.
    fn search(&self, key: u64) -> Option<Vec<Slot>> {
        /// A bucket reached by the search: from which node, by moving which of that node's slots.
        struct Node {
            bucket: u32,
            from: Option<(usize, usize)>,
        }
        let mask = self.mask();
        let [first, second] = candidates(key, mask);
        let mut nodes = vec![Node { bucket: first, from: None }];
        if second != first {
            nodes.push(Node { bucket: second, from: None });
        }
        let mut seen: HashSet<u32> = nodes.iter().map(|n| n.bucket).collect();
        let mut next = 0;
        while next < nodes.len() && nodes.len() < SEARCH_BUCKETS {
            let bucket = nodes[next].bucket;
            for slot in 0..SLOTS {
                let [home, other] = candidates(self.key_at((bucket, slot)), mask);
                if home != bucket || other == bucket {
                    continue; // in its second bucket already, or has only this one
                }
                if let Some(free) = self.free_slot(other) {
                    let mut path = vec![(other, free), (bucket, slot)];
                    let mut at = next;
                    while let Some((parent, parent_slot)) = nodes[at].from {
                        path.push((nodes[parent].bucket, parent_slot));
                        at = parent;
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(other) {
                    nodes.push(Node { bucket: other, from: Some((next, slot)) });
                }
            }
            next += 1;
        }
        None
    }

    /// Of the slots of `buckets`, the one to evict: names never hit go first, the longest listed
    /// first; then the least recently hit. A flood of invented names (what fills a table) evicts
    /// its own kind before the names the program actually drops. Ties: the first found from a
    /// random start.
    fn least_recently_used(&mut self, buckets: [u32; 2]) -> Slot {
        let start = self.random() as usize;
        let slots: Vec<Slot> = buckets.into_iter().flat_map(slots_in).collect();
        (0..slots.len())
            .map(|i| slots[(start + i) % slots.len()])
            .min_by_key(|&at| {
                let e = self.entry_at(at);
                (e.last_hit_mono_ns, e.added_unix_s)
            })
            .expect("eight slots")
    }

    /// Unlists `hash`; `false` when it was not listed.
    pub fn remove(&mut self, hash: u64) -> bool {
        match self.find(slot_key(hash)) {
            Some(at) => {
                self.key_cell(at).store(0, Ordering::Release);
                self.used -= 1;
                true
            }
            None => false,
        }
    }

    /// Every key in the table (a hash, or 1 for a hash of 0: see [`slot_key`]).
    pub fn keys(&self) -> Vec<u64> {
        (0..self.buckets).flat_map(slots_in).map(|at| self.key_at(at)).filter(|&k| k != 0).collect()
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// The slots of one bucket, in the order the program reads them.
fn slots_in(bucket: u32) -> impl Iterator<Item = Slot> {
    (0..SLOTS).map(move |slot| (bucket, slot))
}

/// A HELO table's bucket count, which must be a power of two (the program masks with it).
fn power_of_two(buckets: u32) -> Result<u32> {
    ensure!(buckets.is_power_of_two(), "the HELO table has {buckets} buckets, not a power of two");
    Ok(buckets)
}

/// Moves the greetings of an older agent's pinned HELO map (an LRU hash) into the table, then
/// removes its pin: what was listed stays listed across the upgrade. Returns how many moved.
pub fn move_obsolete_helo_map(dir: &Path, table: &mut HeloTable) -> Result<usize> {
    let path = super::pin::map_path(dir, names::OBSOLETE_HELO_BLOCKS);
    if !path.exists() {
        return Ok(0);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening the older HELO map {}", path.display()))?;
    let old: HashMap<MapData, u64, BlockEntry> =
        HashMap::try_from(Map::LruHashMap(data)).context("the older HELO map is not an LRU hash")?;
    let mut moved = 0;
    for item in old.iter() {
        let (hash, entry) = item.context("reading the older HELO map")?;
        table.insert(hash, entry);
        moved += 1;
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    tracing::info!("moved {moved} listed greetings from the older HELO map into the HELO table");
    Ok(moved)
}
