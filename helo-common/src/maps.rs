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
    pub const HELO_BLOCKS: &str = "HELO_BLOCKS";
    pub const SOURCE_BLOCKS: &str = "HELO_SOURCE_BLOCKS";
    pub const SOURCE_NETS: &str = "HELO_SOURCE_NETS";
    pub const ALLOW: &str = "HELO_ALLOW";
    pub const FLOWS: &str = "HELO_FLOWS";
    pub const COUNTERS: &str = "HELO_COUNTERS";
    pub const EVENTS: &str = "HELO_EVENTS";
    pub const SCRATCH: &str = "HELO_SCRATCH";
}

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "helo";
/// The benchmark reference program in the same object (never attached by the agent).
pub const BASELINE_PROGRAM_NAME: &str = "baseline_drop25";
/// The live-frames generator in the same object (lab and benchmarks only).
pub const GENERATOR_PROGRAM_NAME: &str = "tx_frames";

/// Default capacity of the HELO hash map (LRU); the agent may set another at load.
pub const DEFAULT_HELO_CAPACITY: u32 = 1 << 20;
/// Default capacity of the source map.
pub const DEFAULT_SOURCE_CAPACITY: u32 = 1 << 18;
/// Capacity of the trie of blocked source networks.
pub const SOURCE_NET_CAPACITY: u32 = 65_536;
/// Allow-list trie capacity.
pub const ALLOW_CAPACITY: u32 = 16_384;
/// Flows whose first payload is still to come (LRU).
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

/// A 16-byte address key; IPv4 is stored IPv4-mapped.
#[repr(C)]
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
    pub const FLEET: u32 = 7;
}

/// Value of both block maps. The agent writes `reason`, `added_unix_s` and `expires_boot_ns`;
/// the kernel bumps `hits` and `last_hit_boot_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    pub reason: u32,
    pub _pad: u32,
    /// Wall-clock time the agent listed it (seconds since the Unix epoch).
    pub added_unix_s: u64,
    /// `CLOCK_BOOTTIME` in ns after which the kernel ignores the entry; 0 = no expiry. The agent
    /// removes expired entries; this keeps the kernel right while the agent is down.
    pub expires_boot_ns: u64,
    pub hits: u64,
    /// `CLOCK_BOOTTIME` in ns of the latest hit; 0 = never.
    pub last_hit_boot_ns: u64,
}

impl BlockEntry {
    #[inline(always)]
    pub fn is_live(&self, now_boot_ns: u64) -> bool {
        self.expires_boot_ns == 0 || now_boot_ns < self.expires_boot_ns
    }
}

/// A TCP flow, as seen from the client: source is the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Ports in network byte order, as on the wire.
    pub sport_be: u16,
    pub dport_be: u16,
}

/// Value of the flow map: the sequence number the client's first payload byte will carry, and
/// whether a drop on this flow was already reported to the agent (once is enough to end the
/// session; a retransmitted or replayed greeting adds nothing but load).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub first_payload_seq: u32,
    pub reported: u32,
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
    pub const COUNT: u32 = 18;

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
    pub _pad: [u8; 2],
    /// The entry's [`reason`].
    pub reason: u32,
    pub _pad2: u32,
    /// The greeting's hash (0 for a source drop).
    pub hash: u64,
    pub boot_ns: u64,
}

// The layouts are part of the contract: a change here must be a deliberate one.
const _: () = assert!(core::mem::size_of::<Config>() == 24);
const _: () = assert!(core::mem::size_of::<AddrKey>() == 16);
const _: () = assert!(core::mem::size_of::<BlockEntry>() == 40);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 36);
const _: () = assert!(core::mem::size_of::<FlowState>() == 8);
const _: () = assert!(core::mem::size_of::<DropEvent>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and padded explicitly: every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::BlockEntry {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::DropEvent {}
}
