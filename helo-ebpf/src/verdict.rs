//! The decision for one frame: allow list, source list, first payload, greeting.
//!
//! Order matters for cost: the cheap checks (port, source) come first, the payload is only copied
//! and scanned for the first payload of a flow whose SYN was seen, and the allow-list trie is only
//! consulted when something would be dropped.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use helo_common::{
    maps::{counter, event_kind, mode, AddrKey, BlockEntry, Config, DropEvent},
    GreetingScanner, Scan, PAYLOAD_WINDOW,
};

use crate::{
    maps::{self, ScanResult},
    parse::{self, Segment},
};

/// XDP action and the counter that records it.
pub type Decision = (u32, u32);

#[inline(always)]
fn pass(counter: u32) -> Decision {
    (XDP_PASS, counter)
}

#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Decision {
    let cfg = match maps::config() {
        Some(cfg) if cfg.mode != mode::UNSET => cfg,
        _ => return pass(counter::PASS_UNCONFIGURED),
    };
    let seg = match parse::parse_segment(ctx) {
        Ok(seg) => seg,
        Err(why) => return pass(why),
    };
    if !maps::port_filtered(seg.tcp.dport) {
        return pass(counter::PASS_OTHER_PORT);
    }
    let now = maps::now_boot_ns();
    let source = AddrKey::from_v6(seg.flow.saddr);
    if let Some(entry) = maps::source_entry(&source, now) {
        return block(&cfg, &seg, entry, event_kind::SOURCE, 0, now);
    }
    if seg.tcp.syn && !seg.tcp.ack {
        // The client's first payload byte will carry ISN + 1.
        maps::remember_flow(&seg.flow, seg.tcp.seq.wrapping_add(1));
        return pass(counter::PASS_NO_PAYLOAD);
    }
    if seg.tcp.payload_len == 0 {
        return pass(counter::PASS_NO_PAYLOAD);
    }
    // Only the first client payload is a greeting; later segments (a mail body line that happens
    // to start with "HELO ", a second greeting after RSET) are the agent's business.
    match maps::flow_first_payload_seq(&seg.flow) {
        Some(seq) if seq == seg.tcp.seq => {}
        _ => return pass(counter::PASS_NOT_FIRST_PAYLOAD),
    }
    match scan_payload(ctx, &seg, &cfg) {
        Scan::Greeting { hash, .. } => match maps::helo_entry(hash, now) {
            Some(entry) => block(&cfg, &seg, entry, event_kind::HELO, hash, now),
            None => pass(counter::PASS_NOT_LISTED),
        },
        Scan::NotGreeting => pass(counter::PASS_NOT_GREETING),
        Scan::ArgTooLong => pass(counter::PASS_ARG_TOO_LONG),
        Scan::Truncated => pass(counter::PASS_TRUNCATED),
    }
}

/// Copies up to [`PAYLOAD_WINDOW`] payload bytes into per-CPU scratch and scans them.
#[inline(always)]
fn scan_payload(ctx: &XdpContext, seg: &Segment, cfg: &Config) -> Scan {
    let Some(scratch) = maps::scratch() else {
        return Scan::Truncated;
    };
    let len = if seg.tcp.payload_len < PAYLOAD_WINDOW { seg.tcp.payload_len } else { PAYLOAD_WINDOW };
    // SAFETY: the scratch value is this CPU's alone for the whole program run, and XDP does not
    // preempt itself. `len` is in 1..=PAYLOAD_WINDOW (the caller checked payload_len > 0); the
    // helper checks the packet bounds itself and fails on a frame shorter than its IP header says.
    unsafe {
        let copied = bpf_xdp_load_bytes(
            ctx.ctx,
            seg.payload_offset as u32,
            &raw mut (*scratch).window as *mut core::ffi::c_void,
            len as u32,
        );
        if copied != 0 {
            return Scan::Truncated;
        }
        (*scratch).scanner = GreetingScanner::new(&cfg.key);
        (*scratch).result = ScanResult::TRUNCATED;
        // bpf_loop has the verifier check the per-byte step once rather than once per byte. The
        // scanner's state lives in the map value, not on the stack, so the verifier sees it as
        // unknown data and does not fork a state for every value it could take.
        bpf_loop(len as u32, scan_byte as *mut core::ffi::c_void, core::ptr::null_mut(), 0);
        (*scratch).result.to_scan()
    }
}

/// One bpf_loop iteration: feed payload byte `index` to the scanner. Returns 1 (stop) once the
/// result is known.
#[inline(never)]
extern "C" fn scan_byte(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = maps::scratch() else {
        return 1;
    };
    let i = index as usize & (PAYLOAD_WINDOW - 1);
    // SAFETY: as in `scan_payload`; `i` is masked into the window.
    unsafe {
        let b = (*scratch).window[i];
        match (*scratch).scanner.step(i, b) {
            Some(result) => {
                (*scratch).result = ScanResult::from_scan(result);
                1
            }
            None => 0,
        }
    }
}

/// A listed source or greeting: drop it (or only report it in observe mode), unless the source is
/// on the allow list.
#[inline(always)]
fn block(cfg: &Config, seg: &Segment, entry: *mut BlockEntry, kind: u8, hash: u64, now: u64) -> Decision {
    if maps::allow_listed(&AddrKey::from_v6(seg.flow.saddr)) {
        return pass(counter::PASS_ALLOW_LISTED);
    }
    let reason = maps::record_hit(entry, now);
    let observed = cfg.mode == mode::OBSERVE;
    maps::report(DropEvent {
        flow: seg.flow,
        kind,
        observed: observed as u8,
        reason,
        hash,
        boot_ns: now,
        ..DropEvent::default()
    });
    match (observed, kind == event_kind::HELO) {
        (true, true) => pass(counter::OBSERVE_HELO),
        (true, false) => pass(counter::OBSERVE_SOURCE),
        (false, true) => (XDP_DROP, counter::DROP_HELO),
        (false, false) => (XDP_DROP, counter::DROP_SOURCE),
    }
}
