//! What the XDP program (`helo-ebpf`) and the agent (`helo`) must agree on, bit for bit.
//!
//! Everything here is `no_std`, allocation-free and written so that the eBPF verifier accepts it:
//! loops have constant bounds and buffers have fixed sizes. The kernel and user space call the very
//! same functions, so a name the agent blocks hashes to exactly the key the kernel looks up.
//!
//! - [`greeting`]: finds `HELO`/`EHLO` and its argument at the start of a TCP payload, and hashes the
//!   normalised argument as it goes;
//! - [`words`]: the same reading eight bytes at a time, for the common `HELO name` shape (the XDP
//!   program's fast path), checked against the scanner;
//! - [`hash`]: SipHash-2-4, streamed one byte or one word at a time;
//! - [`helo_table`]: where a listed greeting's hash lives in the XDP program's table;
//! - [`maps`]: map names, key and value layouts, counter indices, events and configuration.
#![no_std]

pub mod greeting;
pub mod hash;
pub mod helo_table;
pub mod maps;
pub mod words;

pub use greeting::{hash_helo_arg, hash_normalised, normalised_arg, scan_greeting, GreetingScanner, Scan, PAYLOAD_WINDOW};
pub use hash::{HashKey, SipHasher24};
