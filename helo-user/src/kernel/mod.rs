//! The kernel side as the agent sees it: load the embedded XDP object, attach it to a NIC, and
//! read and write its maps through typed handles.
//!
//! - [`filter_tables`]: the loaded program behind the traits of [`tables`];
//! - [`filter`]: the embedded object ([`XDP_OBJECT`]); loading, configuring and attaching the program;
//! - [`events`]: the drop-event ring, read into typed [`events::KernelDrop`]s;
//! - [`maps`]: the typed map handles (blocklists, allow list, flows, counters);
//! - [`allow_trie`]: the allow trie and its flag, also opened from their pins when no agent runs;
//! - [`blocks`]: the blocklist maps alone, also opened from their pins when no agent runs;
//! - [`helo_table`]: the HELO table, mapped into the agent's memory and written there;
//! - [`in_memory`]: the same tables in hash maps, for use without root (no packet is judged);
//! - [`tables`]: what the layers above need from the kernel, as traits ([`Kernel`], [`BlockTables`]);
//! - [`counters`]: the per-outcome packet counters, summed over CPUs;
//! - [`addr`]: conversions between `std::net` addresses and networks and the kernel's 16-byte keys;
//! - [`flags`]: the configuration's flags that let the program skip an empty trie;
//! - `map_remove.rs`: a map removal where an absent key is no error;
//! - [`pin`]: where maps and the XDP link are pinned under bpffs;
//! - [`xdp_query`]: which XDP program an interface runs (rtnetlink, no capability needed).
//!
//! A file imports only files listed below it.

pub mod addr;
pub mod allow_trie;
pub mod blocks;
pub mod counters;
pub mod events;
pub mod filter;
pub mod filter_tables;
pub mod flags;
pub mod helo_table;
pub mod in_memory;
mod map_remove;
pub mod maps;
pub mod pin;
pub mod tables;
pub mod xdp_query;

pub use counters::Counters;
pub use filter::{KernelFilter, LoadOptions, XDP_OBJECT};
pub use in_memory::InMemoryKernel;
pub use maps::KernelMaps;
pub use tables::{BlockTables, Kernel};
