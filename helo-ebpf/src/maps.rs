//! The maps shared with the agent, and the small amount of `unsafe` glue around them.
//!
//! Layouts and names come from `helo_common::maps`. Capacities here are defaults; the agent sets
//! the HELO map's capacity at load time.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use helo_common::{
    helo_table::{self, Bucket},
    maps::{
        counter, flow_state, reason, AddrKey, BlockEntry, Config, DropEvent, FlowKey, FlowSlot, FlowState, Ladder, Strikes, ALLOW_CAPACITY,
        DEFAULT_HELO_CAPACITY, DEFAULT_SOURCE_CAPACITY, EVENTS_BYTES, FLOW_CAPACITY, PORT_SLOTS, SOURCE_NET_CAPACITY, STRIKES_CAPACITY,
    },
    words::{WordScan, Words},
    GreetingScanner, HashKey, Scan, PAYLOAD_WINDOW,
};

#[map(name = "HELO_CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Indexed by destination port (host order); non-zero means filtered.
#[map(name = "HELO_PORTS")]
pub static PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);

/// Listed greetings: keyed hash of the normalised argument → entry, in two-choice buckets (see
/// [`helo_table`]). The agent sizes it at load, writes it through a mapping of its own, and
/// evicts the least recently hit when a name's two buckets are full.
#[map(name = "HELO_TABLE")]
pub static HELO_TABLE: Array<Bucket> = Array::with_max_entries(helo_table::bucket_count(DEFAULT_HELO_CAPACITY), BPF_F_MMAPABLE as u32);

/// `HELO_TABLE`'s bucket count minus one, set by the agent at load ([`helo_table::BUCKET_MASK_GLOBAL`]).
/// Read-only data: the verifier knows its value, so a masked index needs no further bounds check.
#[unsafe(no_mangle)]
static HELO_BUCKET_MASK: u32 = 0;

#[map(name = "HELO_SOURCE_BLOCKS")]
pub static SOURCE_BLOCKS: LruHashMap<AddrKey, BlockEntry> = LruHashMap::with_max_entries(DEFAULT_SOURCE_CAPACITY, 0);

/// Blocked source networks (same key form as the allow list), for CIDR entries; single
/// addresses live in the hash map above, which is cheaper to look up.
#[map(name = "HELO_SOURCE_NETS")]
pub static SOURCE_NETS: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(SOURCE_NET_CAPACITY, 0);

/// Allowed networks (IPv4 stored IPv4-mapped, prefix + 96). Their packets always pass.
#[map(name = "HELO_ALLOW")]
pub static ALLOW: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);

/// Flows whose SYN was seen: where their first payload byte will be. A table of slots indexed by
/// [`FlowKey::slot`] rather than a hash map: an array lookup is inlined by the kernel and the key
/// check is five word compares (see the README's cost notes).
#[map(name = "HELO_FLOW_TABLE")]
pub static FLOWS: Array<FlowSlot> = Array::with_max_entries(FLOW_CAPACITY, 0);

/// The offender ladder's settings (see [`Ladder`]); all zero (off) until the agent writes them.
#[map(name = "HELO_LADDER")]
pub static LADDER: Array<Ladder> = Array::with_max_entries(1, 0);

/// Sources' strikes on the ladder. LRU: a source that stops offending is forgotten eventually.
#[map(name = "HELO_STRIKES")]
pub static STRIKES: LruHashMap<AddrKey, Strikes> = LruHashMap::with_max_entries(STRIKES_CAPACITY, 0);

#[map(name = "HELO_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "HELO_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-CPU working memory for the greeting scan: the payload window (512 bytes do not fit on the
/// 512-byte BPF stack) and the scanners' state between bpf_loop iterations.
pub struct Scratch {
    pub window: [u8; PAYLOAD_WINDOW],
    pub scanner: GreetingScanner,
    pub result: ScanResult,
    /// Payload bytes in `window` (slow path); the payload's length (fast path).
    pub len: u32,
    /// Fast path: the payload's offset in the frame, and the word scan's state.
    pub payload_offset: u32,
    pub words: WordScan,
    /// The clock as last read on this CPU, and the jiffy it was read in ([`now_mono_ns`]).
    pub clock_ns: u64,
    pub clock_jiffy: u64,
}

/// [`Scan`] with every byte defined. Storing the enum itself would store its unused payload
/// bytes as undefined registers, which the verifier refuses to read.
#[derive(Clone, Copy)]
pub struct ScanResult {
    kind: u32,
    hash: u64,
}

impl ScanResult {
    const GREETING: u32 = 0;
    const NOT_GREETING: u32 = 1;
    const ARG_TOO_LONG: u32 = 2;
    const TRUNCATED_KIND: u32 = 3;
    const SLOW_KIND: u32 = 4;
    pub const TRUNCATED: Self = Self { kind: Self::TRUNCATED_KIND, hash: 0 };
    /// Not a result: the fast path leaves this payload to the byte scanner.
    pub const SLOW: Self = Self { kind: Self::SLOW_KIND, hash: 0 };

    #[inline(always)]
    pub fn is_slow(self) -> bool {
        self.kind == Self::SLOW_KIND
    }

    #[inline(always)]
    pub fn from_scan(scan: Scan) -> Self {
        match scan {
            Scan::Greeting { hash, .. } => Self { kind: Self::GREETING, hash },
            Scan::NotGreeting => Self { kind: Self::NOT_GREETING, hash: 0 },
            Scan::ArgTooLong => Self { kind: Self::ARG_TOO_LONG, hash: 0 },
            Scan::Truncated => Self::TRUNCATED,
        }
    }

    /// The fast path's answer: its [`Scan`], or [`Self::SLOW`].
    #[inline(always)]
    pub fn from_words(words: Words) -> Self {
        match words {
            Words::Done(scan) => Self::from_scan(scan),
            Words::Slow => Self::SLOW,
        }
    }

    /// Back to a [`Scan`]; the argument's position is not kept (the kernel does not need it).
    #[inline(always)]
    pub fn to_scan(self) -> Scan {
        match self.kind {
            Self::GREETING => Scan::Greeting { hash: self.hash, arg_start: 0, arg_len: 0 },
            Self::NOT_GREETING => Scan::NotGreeting,
            Self::ARG_TOO_LONG => Scan::ArgTooLong,
            _ => Scan::Truncated,
        }
    }
}

#[map(name = "HELO_SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and XDP does not preempt itself.
        unsafe { *slot += 1 };
    }
}

/// The configuration, in place (read, never written, by the program).
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn port_filtered(port: u16) -> bool {
    matches!(PORTS.get(port as u32), Some(v) if *v != 0)
}

/// The entries' clock: `CLOCK_MONOTONIC`, coarse (a tick's resolution is plenty for expiry and
/// the once-a-second event sampling, and reading it costs a few ns where the exact clock cost
/// about 20 in this VM).
///
/// Read at most once per jiffy on each CPU: the coarse clock only moves at a tick, and the
/// jiffies counter (`bpf_jiffies64`, which the verifier inlines into one load) says whether a
/// tick has passed since this CPU last read it. The helper call cost about 13 ns per drop; the
/// cache check is two loads. A value read just as the tick lands may lag by that one tick more:
/// still monotonic on this CPU, and two ticks are nothing to a TTL or a one-second sample.
#[inline(always)]
pub fn now_mono_ns() -> u64 {
    let Some(cache) = scratch() else {
        // SAFETY: a plain helper call with no arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: the scratch value is this CPU's alone for the whole program run, and XDP does not
    // preempt itself (see `Scratch`); the helpers take no arguments.
    unsafe {
        let jiffy = bpf_jiffies64();
        if (*cache).clock_jiffy == jiffy && (*cache).clock_ns != 0 {
            return (*cache).clock_ns;
        }
        let now = bpf_ktime_get_coarse_ns();
        (*cache).clock_ns = now;
        (*cache).clock_jiffy = jiffy;
        now
    }
}

#[inline(always)]
pub fn allow_listed(addr: &AddrKey) -> bool {
    ALLOW.get(Key::new(128, addr.addr)).is_some()
}

/// A block entry as a lookup found it: a pointer into a map value. Only this module builds one,
/// from a successful map lookup, so the pointer is valid for the rest of this program run (map
/// values are not freed under a running program); that is the contract every method relies on.
#[derive(Clone, Copy)]
pub struct EntryRef(*mut BlockEntry);

impl EntryRef {
    #[inline(always)]
    fn is_live(self, now: u64) -> bool {
        // SAFETY: the type's contract (a live map value).
        unsafe { (*self.0).is_live(now) }
    }

    /// Counts a hit; returns the entry's reason and when it was hit before (0: never).
    #[inline(always)]
    pub fn record_hit(self, now: u64) -> (u32, u64) {
        // SAFETY: the type's contract. Two CPUs hitting one entry at the same instant may lose an
        // increment: the per-entry count is for people reading `blocklist list`; exact totals are
        // the per-CPU counters.
        unsafe {
            let e = &mut *self.0;
            let previous = e.last_hit_mono_ns;
            e.hits += 1;
            e.last_hit_mono_ns = now;
            (e.reason, previous)
        }
    }

    /// Whether a listed source's SYN may still pass to be told why; takes one of its answers.
    #[inline(always)]
    pub fn take_answer(self) -> bool {
        // SAFETY: the type's contract. Two CPUs racing here may both take the last answer: one
        // more connection is told why.
        unsafe {
            let e = &mut *self.0;
            if e.answers_left == 0 {
                return false;
            }
            e.answers_left -= 1;
            true
        }
    }
}

/// A flow's state as a lookup found it; the same contract as [`EntryRef`].
#[derive(Clone, Copy)]
pub struct FlowRef(*mut FlowState);

impl FlowRef {
    /// The client's segment at the remembered sequence number arrived (its handshake ACK, or its
    /// first payload): the flow is established and a new SYN no longer replaces it.
    #[inline(always)]
    pub fn mark_established(self) {
        // SAFETY: the type's contract. A racing update on another CPU only sets bits too.
        unsafe { (*self.0).state |= flow_state::ESTABLISHED };
    }

    /// `true` the first time it is asked for this flow: one drop event per flow.
    #[inline(always)]
    fn first_report(self) -> bool {
        // SAFETY: the type's contract. Two CPUs racing here may both report: harmless, the
        // agent's kill is idempotent.
        unsafe {
            let f = &mut *self.0;
            if f.reported() {
                return false;
            }
            f.state |= flow_state::REPORTED;
            true
        }
    }
}

/// A live entry for `addr` (the address itself, or a blocked network holding it, when `nets` says
/// the network trie may hold any), with the time its liveness was checked at.
#[inline(always)]
pub fn source_entry(addr: &AddrKey, nets: bool) -> Option<(EntryRef, u64)> {
    if let Some(e) = SOURCE_BLOCKS.get_ptr_mut(addr) {
        return live(EntryRef(e));
    }
    if !nets {
        return None;
    }
    // The trie hands out a shared reference, but its values are plain map memory that this
    // program may update (the hit counter), like any other map value.
    let e = SOURCE_NETS.get(Key::new(128, addr.addr))? as *const BlockEntry as *mut BlockEntry;
    live(EntryRef(e))
}

/// A live entry for a greeting hash in the HELO table, with the time it was checked at.
#[inline(always)]
pub fn helo_entry(hash: u64) -> Option<(EntryRef, u64)> {
    let key = helo_table::slot_key(hash);
    // SAFETY: a plain read of a global; volatile so that the compiler does not fold the
    // object file's 0 in place of the value the agent sets at load.
    let mask = unsafe { core::ptr::read_volatile(&raw const HELO_BUCKET_MASK) };
    for index in helo_table::candidates(key, mask) {
        let bucket = HELO_TABLE.get_ptr_mut(index)?;
        for slot in 0..helo_table::SLOTS {
            // SAFETY: an array map value, valid for this program run. The agent clears a slot's
            // key before it changes the slot's entry and writes the new key last, so a key read
            // here is this entry's; a lookup racing an eviction may read the evicted entry's
            // fields mid-change, for that one packet.
            unsafe {
                if (*bucket).keys[slot] == key {
                    return live(EntryRef(&raw mut (*bucket).entries[slot]));
                }
            }
        }
    }
    None
}

/// The clock is only read once an entry is found: most packets match nothing, and the helper
/// call is a measurable part of their cost.
#[inline(always)]
fn live(entry: EntryRef) -> Option<(EntryRef, u64)> {
    let now = now_mono_ns();
    entry.is_live(now).then_some((entry, now))
}

/// Whether a drop is worth an event. The agent needs one per flow to end that session: a
/// retransmitted greeting, or a flood replaying one segment, would only cost it CPU. Drops outside
/// a known flow (the SYNs of a listed source) are sampled, at most one per entry per second, for
/// `top`; every packet is still counted, per CPU and per entry.
#[inline(always)]
pub fn worth_reporting(flow: Option<FlowRef>, previous_hit: u64, now: u64) -> bool {
    match flow {
        Some(f) => f.first_report(),
        None => previous_hit == 0 || now.wrapping_sub(previous_hit) >= 1_000_000_000,
    }
}

/// The flow's state, if its slot holds it and `seq` is where its first payload byte goes (the
/// handshake's ACK and the first payload carry it; no later segment does).
#[inline(always)]
pub fn flow_at(flow: &FlowKey, key: &HashKey, seq: u32) -> Option<FlowRef> {
    let slot = FLOWS.get_ptr_mut(flow.slot(key))?;
    // SAFETY: an array map value, valid for this program run. A SYN on another CPU may be
    // rewriting the slot: a torn key matches neither flow (the payload passes, unjudged), and a
    // key with another flow's sequence number fails the sequence check.
    unsafe {
        // The sequence number first: it is one compare, and it rules out every later segment.
        ((*slot).state.first_payload_seq == seq && (*slot).flow.same_as(flow)).then_some(FlowRef(&raw mut (*slot).state))
    }
}

/// A client SYN: remember where its first payload byte will be, unless its slot already holds
/// this 4-tuple and that entry is not stale (see [`FlowState::syn_replaces`]): a spoofed SYN must
/// not re-key an established flow. Another flow in the slot is replaced, as an LRU map evicts.
/// The clock is read here, on SYNs only, and not for a retransmitted SYN.
#[inline(always)]
pub fn remember_flow(flow: &FlowKey, key: &HashKey, first_payload_seq: u32) {
    let Some(slot) = FLOWS.get_ptr_mut(flow.slot(key)) else {
        return;
    };
    // SAFETY: an array map value, valid for this program run; a racing CPU writing the same slot
    // can only lose a flow (see `flow`).
    unsafe {
        if (*slot).flow.same_as(flow) {
            let state = (*slot).state;
            if state.first_payload_seq == first_payload_seq {
                return;
            }
            let now = flow_tick();
            if state.syn_replaces(first_payload_seq, now) {
                (*slot).state = FlowState::new(first_payload_seq, now);
            }
            return;
        }
        (*slot).flow = *flow;
        (*slot).state = FlowState::new(first_payload_seq, flow_tick());
    }
}

/// The flows' clock ([`flow_state::TICK_NS_SHIFT`]).
#[inline(always)]
fn flow_tick() -> u32 {
    (now_mono_ns() >> flow_state::TICK_NS_SHIFT) as u32
}

/// Reports a drop to the agent. A full ring never changes the verdict; the loss is counted.
#[inline(always)]
pub fn report(event: DropEvent) {
    if EVENTS.output::<DropEvent>(&event, 0).is_err() {
        count(counter::EVENTS_LOST);
    }
}

/// This CPU's scratch value.
#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    SCRATCH.get_ptr_mut(0)
}

/// One strike against `source` (its greeting was just dropped). `true` when this strike put it
/// on the offender ladder: then it is listed here, at once, for the ladder's TTL.
#[inline(always)]
pub fn strike(source: &AddrKey, now: u64) -> bool {
    let Some(ladder) = LADDER.get(0) else { return false };
    if ladder.strikes == 0 {
        return false;
    }
    let s = match STRIKES.get_ptr_mut(source) {
        Some(s) => s,
        None => {
            if STRIKES.insert(source, &Strikes::default(), 0).is_err() {
                return false;
            }
            match STRIKES.get_ptr_mut(source) {
                Some(s) => s,
                None => return false,
            }
        }
    };
    // SAFETY: a pointer into a strikes map value, valid for this program run; a race with another
    // CPU striking the same source at the same instant loses one strike at worst.
    let Some(ttl) = ladder.strike(unsafe { &mut *s }, now) else { return false };
    let entry = BlockEntry {
        reason: reason::LADDER,
        answers_left: ladder.answers,
        expires_mono_ns: now.saturating_add(ttl),
        ..BlockEntry::default()
    };
    // BPF_NOEXIST: an entry already there (an operator's) is never overwritten.
    SOURCE_BLOCKS.insert(source, &entry, 1).is_ok()
}
