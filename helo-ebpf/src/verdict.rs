//! The decision for one frame: allow list, source list, first payload, greeting.
//!
//! Order matters for cost: the port comes first, a source is looked up only at a SYN, the payload
//! is only copied and scanned for the first payload of a flow whose SYN was seen, and the
//! allow-list trie is only consulted when something would be dropped.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use helo_common::{
    maps::{counter, event_kind, mode, AddrKey, BlockEntry, Config, DropEvent, FlowState},
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
    if seg.tcp.syn && !seg.tcp.ack {
        // Sources are judged at their SYN only: a connection that got past it (listed since, by
        // a RCPT-time rule of this very session, say) is the agent's to end, and must be able to
        // read its reply and say QUIT.
        let source = AddrKey::from_v6(seg.flow.saddr);
        if let Some((entry, now)) = maps::source_entry(&source) {
            return block(&cfg, &seg, entry, None, event_kind::SOURCE, 0, now);
        }
        // The client's first payload byte will carry ISN + 1 (unless the 4-tuple's flow is
        // established: a spoofed SYN does not re-key it).
        maps::remember_flow(&seg.flow, seg.tcp.seq.wrapping_add(1));
        return pass(counter::PASS_NO_PAYLOAD);
    }
    if seg.tcp.payload_len == 0 {
        // The handshake's ACK carries ISN + 1: from then on the flow is established.
        if seg.tcp.ack {
            if let Some(f) = maps::flow(&seg.flow) {
                // SAFETY: a flow map value, valid for this program run.
                if unsafe { (*f).first_payload_seq } == seg.tcp.seq {
                    maps::mark_established(f);
                }
            }
        }
        return pass(counter::PASS_NO_PAYLOAD);
    }
    // Only the first client payload is a greeting; later segments (a mail body line that happens
    // to start with "HELO ", a second greeting after RSET) are the agent's business.
    let flow = match maps::flow(&seg.flow) {
        // SAFETY: a flow map value, valid for this program run.
        Some(f) if unsafe { (*f).first_payload_seq } == seg.tcp.seq => f,
        _ => return pass(counter::PASS_NOT_FIRST_PAYLOAD),
    };
    maps::mark_established(flow);
    match scan_payload(ctx, &seg, &cfg) {
        Scan::Greeting { hash, .. } => match maps::helo_entry(hash) {
            Some((entry, now)) => block(&cfg, &seg, entry, Some(flow), event_kind::HELO, hash, now),
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
        (*scratch).len = len as u32;
        // bpf_loop has the verifier check one chunk's steps once rather than once per byte. The
        // scanner's state lives in the map value, not on the stack, so the verifier sees it as
        // unknown data and does not fork a state for every value it could take.
        let chunks = (len + SCAN_CHUNK - 1) / SCAN_CHUNK;
        bpf_loop(chunks as u32, scan_chunk as *mut core::ffi::c_void, core::ptr::null_mut(), 0);
        (*scratch).result.to_scan()
    }
}

/// Bytes fed to the scanner per bpf_loop iteration: fewer callbacks, each still small enough for
/// the verifier to check in one go.
const SCAN_CHUNK: usize = 32;

/// One bpf_loop iteration: feed payload bytes `[chunk * 8, chunk * 8 + 8)` to the scanner.
/// Returns 1 (stop) once the result is known.
#[inline(never)]
extern "C" fn scan_chunk(chunk: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = maps::scratch() else {
        return 1;
    };
    // SAFETY: as in `scan_payload`; every index is masked into the window.
    unsafe {
        let len = (*scratch).len as usize;
        let first = (chunk as usize & (PAYLOAD_WINDOW - 1)) * SCAN_CHUNK;
        for j in 0..SCAN_CHUNK {
            let i = (first + j) & (PAYLOAD_WINDOW - 1);
            if first + j >= len {
                return 1;
            }
            if let Some(result) = (*scratch).scanner.step(i, (*scratch).window[i]) {
                (*scratch).result = ScanResult::from_scan(result);
                return 1;
            }
        }
        0
    }
}

/// A listed source or greeting: drop it (or only report it in observe mode), unless the source is
/// on the allow list.
#[inline(always)]
fn block(cfg: &Config, seg: &Segment, entry: *mut BlockEntry, flow: Option<*mut FlowState>, kind: u8, hash: u64, now: u64) -> Decision {
    if maps::allow_listed(&AddrKey::from_v6(seg.flow.saddr)) {
        return pass(counter::PASS_ALLOW_LISTED);
    }
    let (reason, previous_hit) = maps::record_hit(entry, now);
    let observed = cfg.mode == mode::OBSERVE;
    // SAFETY: `entry` came from `source_entry`/`helo_entry`: a live map value.
    if kind == event_kind::SOURCE && !observed && unsafe { maps::take_answer(entry) } {
        // Not dropped yet: the agent greets this connection with 554 and the entry's words.
        return pass(counter::PASS_SOURCE_ANSWERED);
    }
    if maps::worth_reporting(flow, previous_hit, now) {
        // One strike per refused connection (the first drop of its flow), not per packet.
        let listed = kind == event_kind::HELO && !observed && maps::strike(&AddrKey::from_v6(seg.flow.saddr), now);
        maps::report(DropEvent {
            flow: seg.flow,
            kind,
            observed: observed as u8,
            listed_source: listed as u8,
            reason,
            hash,
            boot_ns: now,
            ..DropEvent::default()
        });
    }
    match (observed, kind == event_kind::HELO) {
        (true, true) => pass(counter::OBSERVE_HELO),
        (true, false) => pass(counter::OBSERVE_SOURCE),
        (false, true) => (XDP_DROP, counter::DROP_HELO),
        (false, false) => (XDP_DROP, counter::DROP_SOURCE),
    }
}
