//! A reference program for benchmarks, never attached by the agent: the same header parsers, then
//! XDP_DROP for anything to port 25. What `helo` costs beyond this is the price of reading the
//! greeting, hashing it and looking it up.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};

use crate::parse;

#[inline(always)]
pub fn drop_port_25(ctx: &XdpContext) -> u32 {
    match parse::parse_segment(ctx) {
        Ok(seg) if seg.tcp.dport == 25 => XDP_DROP,
        _ => XDP_PASS,
    }
}
