//! A frame generator for the lab and the benchmarks, never attached by the agent: run through
//! BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, it transmits the crafted frame it is given
//! out of the chosen interface, millions of times a second if asked.

use aya_ebpf::bindings::xdp_action::XDP_TX;

#[inline(always)]
pub fn transmit() -> u32 {
    XDP_TX
}
