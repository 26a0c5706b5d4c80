//! The maps the XDP program and the agent share: names, key and value layouts, counter indices,
//! drop events and the run-time configuration.
//!
//! Every type is `#[repr(C)]`, `Copy` and padded explicitly, so the kernel and user space lay it
//! out identically. Addresses are kept as 16 bytes: IPv4 as an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`), so one map and one trie serve both families.

/// Map names, as they appear in the object file and under the pin directory.
pub mod names {
    pub const CONFIG: &str = "HELO_CONFIG";
    pub const PORTS: &str = "HELO_PORTS";
    /// The HELO table (see [`crate::helo_table`]).
    pub const HELO_TABLE: &str = "HELO_TABLE";
    /// The HELO map of earlier versions (an LRU hash): a pin left under this name is moved into
    /// the table at start, then removed.
    pub const OBSOLETE_HELO_BLOCKS: &str = "HELO_BLOCKS";
    pub const SOURCE_BLOCKS: &str = "HELO_SOURCE_BLOCKS";
    pub const SOURCE_NETS: &str = "HELO_SOURCE_NETS";
    pub const ALLOW: &str = "HELO_ALLOW";
    pub const FLOWS: &str = "HELO_FLOW_TABLE";
    /// The flow map's name up to 0.1 (an LRU hash): a pin left under this name is removed.
    pub const OBSOLETE_FLOWS: &str = "HELO_FLOWS";
    pub const COUNTERS: &str = "HELO_COUNTERS";
    pub const EVENTS: &str = "HELO_EVENTS";
    pub const SCRATCH: &str = "HELO_SCRATCH";
    pub const LADDER: &str = "HELO_LADDER";
    pub const STRIKES: &str = "HELO_STRIKES";
}

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "helo";
/// The benchmark reference program in the same object (never attached by the agent).
pub const BASELINE_PROGRAM_NAME: &str = "baseline_drop25";
/// The live-frames generator in the same object (lab and benchmarks only).
pub const GENERATOR_PROGRAM_NAME: &str = "tx_frames";

/// Default capacity of the HELO table, in names; the agent may set another at load.
pub const DEFAULT_HELO_CAPACITY: u32 = 1 << 20;
/// Default capacity of the source map.
pub const DEFAULT_SOURCE_CAPACITY: u32 = 1 << 18;
/// Capacity of the trie of blocked source networks.
pub const SOURCE_NET_CAPACITY: u32 = 65_536;
/// Allow-list trie capacity.
pub const ALLOW_CAPACITY: u32 = 16_384;
/// Sources with strikes on the offender ladder (LRU).
pub const STRIKES_CAPACITY: u32 = 1 << 18;
/// Slots of the flow table (a power of two: [`FlowKey::slot`] masks).
pub const FLOW_CAPACITY: u32 = 1 << 18;
/// Drop-event ring size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Number of TCP ports (the port map is an array indexed by port).
pub const PORT_SLOTS: u32 = 1 << 16;
/// The port filtered by default.
pub const DEFAULT_PORT: u16 = 25;

/// What the kernel does with a listed packet.
pub mod mode {
    /// Not configured yet: the program passes everything (and counts it).
    pub const UNSET: u32 = 0;
    /// Drop listed greetings and sources.
    pub const ENFORCE: u32 = 1;
    /// Count and report, but pass.
    pub const OBSERVE: u32 = 2;
}

/// Single entry of the `HELO_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// SipHash key for greeting arguments.
    pub key: crate::hash::HashKey,
    /// One of [`mode`].
    pub mode: u32,
    /// [`config_flags`]: what the agent knows the program may skip.
    pub flags: u32,
}

/// Bits of [`Config::flags`]. Each says a lookup can only miss, so the program skips it; the agent
/// clears a bit before it writes the first entry that lookup could find, so a bit that is wrongly
/// clear only costs time, never a verdict.
pub mod config_flags {
    /// `HELO_ALLOW` is empty.
    pub const ALLOW_EMPTY: u32 = 1;
    /// `HELO_SOURCE_NETS` is empty.
    pub const SOURCE_NETS_EMPTY: u32 = 2;
}

/// A 16-byte address key; IPv4 is stored IPv4-mapped. Aligned to 8 (its size and bytes are the
/// same) so that the XDP program writes a key on its stack in whole words, not byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub addr: [u8; 16],
}

impl AddrKey {
    /// `::ffff:a.b.c.d` from an IPv4 address in network byte order.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self { addr }
    }

    #[inline(always)]
    pub const fn from_v6(addr: [u8; 16]) -> Self {
        Self { addr }
    }

    /// From the address bytes read as four little-endian words (see [`FlowKey`]).
    #[inline(always)]
    pub fn from_words(words: [u32; 4]) -> Self {
        Self { addr: bytes_of(words) }
    }
}

/// Prefix length of an IPv4 CIDR when stored in the 128-bit allow-list trie.
pub const fn v4_prefix_in_trie(prefix: u32) -> u32 {
    96 + prefix
}

/// Why an entry is listed. Stored in [`BlockEntry::reason`] and carried in drop events.
pub mod reason {
    pub const OPERATOR: u32 = 1;
    pub const BOGUS_HELO: u32 = 2;
    pub const HELO_IS_MY_IP: u32 = 3;
    pub const HELO_MATCHES_RCPT: u32 = 4;
    pub const OPERATOR_DENY: u32 = 5;
    pub const LITERAL_MISMATCH: u32 = 6;
    // 7 was `FLEET`, never written: not to be reused while old pinned maps may hold entries.
    /// Listed by the offender ladder: too many rejected greetings in a window.
    pub const LADDER: u32 = 8;
}

/// Value of both block maps. The agent writes `reason`, `added_unix_s` and `expires_mono_ns`;
/// the kernel bumps `hits` and `last_hit_mono_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    pub reason: u32,
    /// Source entries: how many more connections are let through to be told why (the agent
    /// answers them with a 554 banner carrying the entry's words) before SYNs are dropped.
    pub answers_left: u32,
    /// Wall-clock time the agent listed it (seconds since the Unix epoch).
    pub added_unix_s: u64,
    /// `CLOCK_MONOTONIC` in ns after which the kernel ignores the entry; 0 = no expiry. The agent
    /// removes expired entries; this keeps the kernel right while the agent is down.
    ///
    /// Monotonic rather than boot time because the program reads the coarse monotonic clock, a
    /// few ns, where the exact boot clock cost about 20 ns per listed packet. The two differ only
    /// by time spent suspended, which an edge server does not do; an entry written by an older
    /// agent on the boot clock lives that much longer, never shorter.
    pub expires_mono_ns: u64,
    pub hits: u64,
    /// `CLOCK_MONOTONIC` in ns of the latest hit; 0 = never.
    pub last_hit_mono_ns: u64,
}

impl BlockEntry {
    #[inline(always)]
    pub fn is_live(&self, now_mono_ns: u64) -> bool {
        self.expires_mono_ns == 0 || now_mono_ns < self.expires_mono_ns
    }
}

/// A TCP flow, as seen from the client: source is the client.
///
/// The addresses are [`AddrKey`] bytes kept as four little-endian words each: the XDP program
/// builds the key from two loads per address, mixes and compares it in registers. Kept as byte
/// arrays, LLVM built and read them a byte at a time (a hundred instructions and as many stack
/// spills on every segment that looks up its flow). The layout is the same 36 bytes either way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    saddr: [u32; 4],
    daddr: [u32; 4],
    /// Ports in network byte order, as on the wire.
    pub sport_be: u16,
    pub dport_be: u16,
}

/// Sixteen address bytes as four little-endian words.
#[inline(always)]
const fn words_of(a: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        w[i] = u32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
        i += 1;
    }
    w
}

/// Four little-endian words as the sixteen address bytes.
#[cfg(target_endian = "little")]
#[inline(always)]
fn bytes_of(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: both are 16 bytes of plain data, every bit pattern valid. On a little-endian
    // machine the words' memory is the bytes; written out byte by byte instead, LLVM stores an
    // XDP program's key a byte at a time.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

/// Four little-endian words as the sixteen address bytes.
#[cfg(target_endian = "big")]
#[inline(always)]
fn bytes_of(w: [u32; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_le_bytes();
        a[4 * i] = b[0];
        a[4 * i + 1] = b[1];
        a[4 * i + 2] = b[2];
        a[4 * i + 3] = b[3];
        i += 1;
    }
    a
}

impl FlowKey {
    /// From the addresses' [`AddrKey`] bytes.
    pub const fn new(saddr: [u8; 16], daddr: [u8; 16], sport_be: u16, dport_be: u16) -> Self {
        Self { saddr: words_of(saddr), daddr: words_of(daddr), sport_be, dport_be }
    }

    /// From the addresses' [`AddrKey`] bytes read as little-endian words.
    #[inline(always)]
    pub const fn from_words(saddr: [u32; 4], daddr: [u32; 4], sport_be: u16, dport_be: u16) -> Self {
        Self { saddr, daddr, sport_be, dport_be }
    }

    /// The client's address, as [`AddrKey`] bytes.
    pub fn saddr(&self) -> [u8; 16] {
        bytes_of(self.saddr)
    }

    /// The server's address, as [`AddrKey`] bytes.
    pub fn daddr(&self) -> [u8; 16] {
        bytes_of(self.daddr)
    }

    /// The client's address as a source map key.
    #[inline(always)]
    pub fn source(&self) -> AddrKey {
        AddrKey::from_words(self.saddr)
    }

    /// The flow's slot in the flow table (`HELO_FLOW_TABLE`, [`FLOW_CAPACITY`] slots): a keyed
    /// multiply-xor mix of the 4-tuple, a handful of instructions where the LRU hash map it
    /// replaced ran jhash over the 36 bytes and a `memcmp`. Keyed with the box's secret, so a
    /// sender cannot pick 4-tuples that land on another client's slot; a collision only ever
    /// loses a flow (its greeting goes unjudged by XDP: fail open, the agent still judges it).
    #[inline(always)]
    pub fn slot(&self, key: &crate::HashKey) -> u32 {
        let [s0, s1, d0, d1] = self.words();
        let ports = (self.sport_be as u64) << 16 | self.dport_be as u64;
        let h = (s0 ^ key.k0).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (s1 ^ key.k1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ (d0 ^ key.k1).wrapping_mul(0x1656_67b1_9e37_79f9)
            ^ (d1 ^ key.k0).wrapping_mul(0x85eb_ca77_c2b2_ae63)
            ^ (ports ^ key.k0 ^ key.k1).wrapping_mul(0x27d4_eb2f_1656_67c5);
        // The high bits of a product mix all of its input's bits.
        ((h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & (FLOW_CAPACITY - 1)
    }

    /// The addresses as four little-endian 64-bit words.
    #[inline(always)]
    fn words(&self) -> [u64; 4] {
        let w = |a: &[u32; 4], i: usize| a[i] as u64 | (a[i + 1] as u64) << 32;
        [w(&self.saddr, 0), w(&self.saddr, 2), w(&self.daddr, 0), w(&self.daddr, 2)]
    }

    /// The same flow: compared word by word (a derived `==` becomes a byte-loop `bcmp` call in
    /// the XDP program).
    #[inline(always)]
    pub fn same_as(&self, other: &FlowKey) -> bool {
        let (a, b) = (self.words(), other.words());
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
            && self.sport_be == other.sport_be
            && self.dport_be == other.dport_be
    }
}

/// One slot of the flow table: the flow it holds and its state. A SYN writes its flow into its
/// slot, replacing whatever other flow was there (as an LRU map evicts); the same flow's entry is
/// only replaced once stale ([`FlowState::syn_replaces`]). Aligned to 8 so the key is read in
/// whole words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub flow: FlowKey,
    pub state: FlowState,
    pub _pad: u32,
}

/// Value of the flow map: the sequence number the client's first payload byte will carry, and a
/// word of [`flow_state`] flags and the SYN's time.
///
/// - whether a drop on this flow was already reported to the agent (once is enough to end the
///   session; a retransmitted or replayed greeting adds nothing but load);
/// - whether the flow is established (the client's handshake ACK or its first payload arrived at
///   the remembered sequence number), and when its SYN came: a new SYN for the same 4-tuple
///   replaces the entry only once it is stale ([`FlowState::syn_replaces`]). Otherwise two
///   spoofed packets (a SYN with an ISN of the attacker's choosing, then a listed greeting at
///   ISN + 1) would pass for another client's first payload and get its session ended.
///
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub first_payload_seq: u32,
    /// [`flow_state::REPORTED`] | [`flow_state::ESTABLISHED`] | SYN time in ticks
    /// ([`flow_state::TICK_NS_SHIFT`]) `<< flow_state::TIME_SHIFT`.
    pub state: u32,
}

/// The bits of [`FlowState::state`] and how long an entry is protected from a new SYN.
pub mod flow_state {
    pub const REPORTED: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const TIME_SHIFT: u32 = 2;
    /// A flow's clock ticks every 2^30 ns (about 1.07 s) of the kernel's coarse monotonic clock:
    /// a shift, not a division, and the coarse clock, not the exact one, because a SYN pays for
    /// reading it (the exact clock cost the SYN path about 25 ns in the program-only bench).
    pub const TICK_NS_SHIFT: u32 = 30;
    /// A flow still in its handshake is kept this long against a SYN with another ISN: a real
    /// client retransmits its SYN with the same ISN, and a new connection uses a new port.
    pub const SYN_STALE_TICKS: u32 = 3;
    /// An established flow is kept this long (about 32 minutes; SMTP's longest timeout is 10). After that a
    /// new SYN on the 4-tuple (a port reused by the client) replaces it; before, that new
    /// connection's greeting goes unjudged by XDP (it fails open; the agent still judges it).
    pub const ESTABLISHED_STALE_TICKS: u32 = 1800;
}

impl FlowState {
    /// The entry a SYN at tick `now` makes.
    #[inline(always)]
    pub fn new(first_payload_seq: u32, now: u32) -> Self {
        Self { first_payload_seq, state: now << flow_state::TIME_SHIFT }
    }

    #[inline(always)]
    pub fn established(&self) -> bool {
        self.state & flow_state::ESTABLISHED != 0
    }

    #[inline(always)]
    pub fn reported(&self) -> bool {
        self.state & flow_state::REPORTED != 0
    }

    /// Ticks since the SYN, modulo the 30 bits the time is kept in.
    #[inline(always)]
    pub fn age(&self, now: u32) -> u32 {
        now.wrapping_sub(self.state >> flow_state::TIME_SHIFT) & (u32::MAX >> flow_state::TIME_SHIFT)
    }

    /// Whether a SYN announcing `first_payload_seq` at tick `now` replaces this entry: only a stale
    /// one. A retransmitted SYN (same ISN) changes nothing.
    #[inline(always)]
    pub fn syn_replaces(&self, first_payload_seq: u32, now: u32) -> bool {
        if self.first_payload_seq == first_payload_seq {
            return false;
        }
        let stale_after = if self.established() { flow_state::ESTABLISHED_STALE_TICKS } else { flow_state::SYN_STALE_TICKS };
        self.age(now) >= stale_after
    }
}

/// Indices of the per-CPU counter array: every verdict the program takes lands in exactly one.
pub mod counter {
    pub const PASS_NOT_IP: u32 = 0;
    pub const PASS_NOT_TCP: u32 = 1;
    pub const PASS_OTHER_PORT: u32 = 2;
    pub const PASS_FRAGMENT: u32 = 3;
    pub const PASS_MALFORMED: u32 = 4;
    pub const PASS_NO_PAYLOAD: u32 = 5;
    pub const PASS_NOT_FIRST_PAYLOAD: u32 = 6;
    pub const PASS_NOT_GREETING: u32 = 7;
    pub const PASS_ARG_TOO_LONG: u32 = 8;
    pub const PASS_TRUNCATED: u32 = 9;
    pub const PASS_NOT_LISTED: u32 = 10;
    pub const PASS_ALLOW_LISTED: u32 = 11;
    pub const DROP_HELO: u32 = 12;
    pub const DROP_SOURCE: u32 = 13;
    pub const OBSERVE_HELO: u32 = 14;
    pub const OBSERVE_SOURCE: u32 = 15;
    pub const PASS_UNCONFIGURED: u32 = 16;
    /// Not a verdict: drop events the ring buffer had no room for.
    pub const EVENTS_LOST: u32 = 17;
    /// A listed source's SYN let through so that the agent can tell it why (its answers left).
    pub const PASS_SOURCE_ANSWERED: u32 = 18;
    pub const COUNT: u32 = 19;

    /// Stable, human-readable names, indexed like the counters (used for metrics labels).
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_tcp",
        "pass_other_port",
        "pass_fragment",
        "pass_malformed",
        "pass_no_payload",
        "pass_not_first_payload",
        "pass_not_greeting",
        "pass_arg_too_long",
        "pass_truncated",
        "pass_not_listed",
        "pass_allow_listed",
        "drop_helo",
        "drop_source",
        "observe_helo",
        "observe_source",
        "pass_unconfigured",
        "events_lost",
        "pass_source_answered",
    ];
}

/// Kind of a drop event.
pub mod event_kind {
    pub const HELO: u8 = 1;
    pub const SOURCE: u8 = 2;
}

/// Sent on the ring buffer for every drop (or would-be drop in observe mode). The agent uses it to
/// close the server-side socket of the dropped flow, after writing the entry's reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub flow: FlowKey,
    /// One of [`event_kind`].
    pub kind: u8,
    /// 1 when the packet was passed because the program runs in observe mode.
    pub observed: u8,
    /// 1 when this drop was the strike that put the source on the offender ladder: the kernel
    /// listed it (see [`Ladder`]); the agent records it.
    pub listed_source: u8,
    pub _pad: u8,
    /// The entry's [`reason`].
    pub reason: u32,
    pub _pad2: u32,
    /// The greeting's hash (0 for a source drop).
    pub hash: u64,
    /// `CLOCK_MONOTONIC` (coarse) in ns of the drop.
    pub mono_ns: u64,
}

/// The offender ladder's settings (single entry of `HELO_LADDER`). A source whose greetings are
/// refused `strikes` times within `window_ns` is listed for `ttl_ns`, doubled for each offence
/// after the first, up to `max_ttl_ns`; its next `answers` connections are let through to be told
/// why, then its SYNs are dropped. `strikes == 0` turns the ladder off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ladder {
    pub strikes: u32,
    pub answers: u32,
    pub window_ns: u64,
    pub ttl_ns: u64,
    pub max_ttl_ns: u64,
}

/// Value of the strikes map: one source's standing on the ladder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strikes {
    pub window_start_ns: u64,
    pub count: u32,
    /// How often the source was listed by the ladder before: each offence doubles the next TTL.
    pub offences: u32,
}

impl Ladder {
    /// One strike against a source, at `now_ns` (`CLOCK_MONOTONIC`, as entries' times).
    /// `Some(ttl_ns)` when this strike lists it. The one definition for the kernel (strikes it
    /// sees as drops) and the agent (strikes it gives in user space), on the same map.
    #[inline(always)]
    pub fn strike(&self, s: &mut Strikes, now_ns: u64) -> Option<u64> {
        if self.strikes == 0 {
            return None;
        }
        if s.count == 0 || now_ns.wrapping_sub(s.window_start_ns) > self.window_ns {
            s.window_start_ns = now_ns;
            s.count = 0;
        }
        s.count += 1;
        if s.count < self.strikes {
            return None;
        }
        s.count = 0;
        let doublings = if s.offences > 20 { 20 } else { s.offences };
        s.offences = s.offences.saturating_add(1);
        // Shifts, not a multiplication: BPF has no 128-bit multiply for an overflow check.
        let ttl = if self.ttl_ns > (u64::MAX >> doublings) { u64::MAX } else { self.ttl_ns << doublings };
        Some(if ttl > self.max_ttl_ns { self.max_ttl_ns } else { ttl })
    }
}

// The layouts are part of the contract: a change here must be a deliberate one.
const _: () = assert!(core::mem::size_of::<Config>() == 24);
const _: () = assert!(core::mem::size_of::<AddrKey>() == 16);
const _: () = assert!(core::mem::size_of::<BlockEntry>() == 40);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 36);
const _: () = assert!(core::mem::size_of::<FlowState>() == 8);
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 48);
const _: () = assert!(core::mem::size_of::<DropEvent>() == 64);
const _: () = assert!(core::mem::size_of::<Ladder>() == 32);
const _: () = assert!(core::mem::size_of::<Strikes>() == 16);

#[cfg(feature = "user")]
mod pod {
    //! All of these are repr(C), Copy, and padded explicitly: every bit pattern is valid.
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid Config.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid AddrKey.
    unsafe impl aya::Pod for super::AddrKey {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid BlockEntry.
    unsafe impl aya::Pod for super::BlockEntry {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid FlowKey.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid FlowState.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid FlowSlot.
    unsafe impl aya::Pod for super::FlowSlot {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid DropEvent.
    unsafe impl aya::Pod for super::DropEvent {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid Ladder.
    unsafe impl aya::Pod for super::Ladder {}
    // SAFETY: repr(C), Copy, explicitly padded: any bit pattern is a valid Strikes.
    unsafe impl aya::Pod for super::Strikes {}
    // SAFETY: repr(C), Copy, keys and entries with no padding between: any bit pattern is valid.
    unsafe impl aya::Pod for crate::helo_table::Bucket {}
}

#[cfg(test)]
mod ladder_tests {
    use super::{Ladder, Strikes};

    const S: u64 = 1_000_000_000;

    fn ladder() -> Ladder {
        Ladder { strikes: 3, answers: 2, window_ns: 60 * S, ttl_ns: 600 * S, max_ttl_ns: 3600 * S }
    }

    #[test]
    fn k_strikes_in_the_window_list_the_source_and_reoffenders_wait_longer() {
        let (l, mut s) = (ladder(), Strikes::default());
        assert_eq!(l.strike(&mut s, 10 * S), None);
        assert_eq!(l.strike(&mut s, 20 * S), None);
        assert_eq!(l.strike(&mut s, 30 * S), Some(600 * S));
        // Again: 1200 s, then 2400 s, then the cap.
        let mut t = 1000 * S;
        for want in [1200, 2400, 3600, 3600] {
            let got = (0..3)
                .map(|_| {
                    t += S;
                    l.strike(&mut s, t)
                })
                .last()
                .flatten();
            assert_eq!(got, Some(want * S));
        }
    }

    #[test]
    fn strikes_spread_wider_than_the_window_never_list() {
        // A misconfigured server retrying every 15 minutes.
        let (l, mut s) = (ladder(), Strikes::default());
        for i in 0..100u64 {
            assert_eq!(l.strike(&mut s, i * 900 * S + 1), None);
        }
    }

    #[test]
    fn zero_strikes_is_off() {
        let l = Ladder { strikes: 0, ..ladder() };
        let mut s = Strikes::default();
        assert!((0..10).all(|i| l.strike(&mut s, i).is_none()));
    }
}
