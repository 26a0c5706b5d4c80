//! `helo`: the XDP program. It drops, before the TCP stack sees them, the first client segments
//! whose greeting is listed and every segment from a listed source, on the filtered ports.
//!
//! Data flow: [`parse`] walks the headers (Ethernet, VLAN, IPv4/IPv6, TCP) with one forward cursor;
//! [`verdict`] decides on the flow, as a [`decision::Decision`] (allow list, source list, first payload, greeting); [`maps`]
//! holds the shared maps and the counter/event glue. Anything unexpected is passed: the program
//! fails open.
#![no_std]
#![no_main]
// One 8-byte packet load in `parse::read_u64_at`.
#![feature(asm_experimental_arch)]

mod baseline;
mod decision;
mod generator;
mod maps;
mod parse;
mod verdict;

use aya_ebpf::{macros::xdp, programs::XdpContext};

#[xdp]
pub fn helo(ctx: XdpContext) -> u32 {
    let decision = verdict::decide(&ctx);
    maps::count(decision.counter());
    decision.action()
}

/// Benchmark reference (see [`baseline`]); loaded only by `cargo xtask bench`.
#[xdp]
pub fn baseline_drop25(ctx: XdpContext) -> u32 {
    baseline::drop_port_25(&ctx)
}

/// Frame generator (see [`generator`]); used only by the lab and the benchmarks.
#[xdp]
pub fn tx_frames(_ctx: XdpContext) -> u32 {
    generator::transmit()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
