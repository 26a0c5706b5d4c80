//! The kernel side as the agent sees it: load the embedded XDP object, attach it to a NIC, and
//! read and write its maps through typed handles.
//!
//! - [`filter`]: loading, configuring and attaching the program;
//! - [`events`]: the drop-event ring, read into typed [`events::KernelDrop`]s;
//! - [`maps`]: the typed map handles (blocklists, allow list, flows, counters);
//! - [`flags`]: the configuration's flags that let the program skip an empty trie;
//! - [`allow_trie`]: the allow trie and its flag, also opened from their pins when no agent runs;
//! - [`blocks`]: the blocklist maps alone, also opened from their pins when no agent runs;
//! - [`addr`]: conversions between `std::net` addresses and the kernel's 16-byte keys;
//! - [`xdp_query`]: which XDP program an interface runs (rtnetlink, no capability needed);
//! - [`tables`]: what the layers above need from the kernel, as traits ([`Kernel`], [`BlockTables`]);
//! - [`in_memory`]: the same in hash maps, for use without root (no packet is judged).

pub mod addr;
pub mod allow_trie;
pub mod blocks;
pub mod events;
pub mod filter;
pub mod flags;
pub mod in_memory;
pub mod maps;
pub mod pin;
pub mod tables;
pub mod xdp_query;

pub use filter::{KernelFilter, LoadOptions};
pub use in_memory::InMemoryKernel;
pub use maps::{Counters, KernelMaps};
pub use tables::{BlockTables, Kernel};

/// The XDP object built by `build.rs` from `helo-ebpf`.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/helo"));
