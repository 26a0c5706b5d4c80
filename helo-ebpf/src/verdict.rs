//! The decision for one frame: allow list, source list, first payload, greeting.
//!
//! Order matters for cost: the port comes first, a source is looked up only at a SYN, a payload
//! whose first bytes rule out a greeting is passed before any map lookup, the greeting is read
//! only from the first payload of a flow whose SYN was seen, and the allow-list trie is only
//! consulted when something would be dropped (and not at all while the agent says it is empty;
//! the network trie likewise, at a SYN, only while it may hold a network).
//!
//! The greeting is read in one of two ways. The fast path ([`helo_common::words`]) reads the
//! common shape (`HELO name`, one space) eight bytes per step straight from the packet; anything
//! else goes the slow path: up to 512 bytes copied to scratch and fed to the byte scanner.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use helo_common::{
    maps::{config_flags, event_kind, mode, Config, DropEvent, FlowKey},
    words::{starts_like_greeting, WordScan, Words, MAX_STEPS},
    GreetingScanner, Scan, PAYLOAD_WINDOW,
};

use crate::{
    decision::{Decision, Dropped, Pass},
    maps::{self, EntryRef, FlowRef, ScanResult},
    parse::{self, Segment},
};

#[inline(always)]
fn pass(why: Pass) -> Decision {
    Decision::Pass(why)
}

#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Decision {
    let cfg = match maps::config() {
        Some(cfg) if cfg.mode != mode::UNSET => cfg,
        _ => return pass(Pass::Unconfigured),
    };
    let seg = match parse::parse_segment(ctx) {
        Ok(seg) => seg,
        Err(why) => return pass(why),
    };
    if !maps::port_filtered(seg.tcp.dport) {
        return pass(Pass::OtherPort);
    }
    if seg.tcp.syn && !seg.tcp.ack {
        let Some(flow) = seg.flow_key(ctx) else {
            return pass(Pass::Truncated);
        };
        // Sources are judged at their SYN only: a connection that got past it (listed since, by
        // a RCPT-time rule of this very session, say) is the agent's to end, and must be able to
        // read its reply and say QUIT.
        let source = flow.source();
        let nets = cfg.flags & config_flags::SOURCE_NETS_EMPTY == 0;
        if let Some((entry, now)) = maps::source_entry(&source, nets) {
            return block(cfg, &flow, entry, None, event_kind::SOURCE, 0, now);
        }
        // The client's first payload byte will carry ISN + 1 (unless the 4-tuple's flow is
        // established: a spoofed SYN does not re-key it).
        maps::remember_flow(&flow, &cfg.key, seg.tcp.seq.wrapping_add(1));
        return pass(Pass::NoPayload);
    }
    if seg.tcp.payload_len == 0 {
        // The handshake's ACK carries ISN + 1: from then on the flow is established.
        if seg.tcp.ack {
            if let Some(f) = seg.flow_key(ctx).and_then(|key| maps::flow_at(&key, &cfg.key, seg.tcp.seq)) {
                f.mark_established();
            }
        }
        return pass(Pass::NoPayload);
    }
    // Most payloads (mail data, every later segment) do not start like a greeting: pass them
    // before the flow lookup.
    let first = payload_word(ctx, &seg, 0);
    if let Some(first) = first {
        if !starts_like_greeting(first) {
            return pass(Pass::NotGreeting);
        }
    }
    // Only the first client payload is a greeting; later segments (a mail body line that happens
    // to start with "HELO ", a second greeting after RSET) are the agent's business.
    let Some(key) = seg.flow_key(ctx) else {
        return pass(Pass::Truncated);
    };
    let Some(flow) = maps::flow_at(&key, &cfg.key, seg.tcp.seq) else {
        return pass(Pass::NotFirstPayload);
    };
    flow.mark_established();
    let fast = match first {
        Some(first) => scan_fast(ctx, &seg, cfg, first),
        None => ScanResult::SLOW,
    };
    let scan = if fast.is_slow() { scan_payload(ctx, &seg, cfg) } else { fast.to_scan() };
    match scan {
        Scan::Greeting { hash, .. } => match maps::helo_entry(hash) {
            Some((entry, now)) => block(cfg, &key, entry, Some(flow), event_kind::HELO, hash, now),
            None => pass(Pass::NotListed),
        },
        Scan::NotGreeting => pass(Pass::NotGreeting),
        Scan::ArgTooLong => pass(Pass::ArgTooLong),
        Scan::Truncated => pass(Pass::Truncated),
    }
}

/// The eight payload bytes at `off` (little-endian), read in place; `None` when they are not all
/// in the payload's first [`PAYLOAD_WINDOW`] bytes or the frame.
#[inline(always)]
fn payload_word(ctx: &XdpContext, seg: &Segment, off: usize) -> Option<u64> {
    word_at(ctx.data(), ctx.data_end(), seg.payload_offset, seg.tcp.payload_len, off)
}

/// [`payload_word`] from the packet's bounds, the payload's offset and its length.
#[inline(always)]
fn word_at(data: usize, data_end: usize, payload_offset: usize, payload_len: usize, off: usize) -> Option<u64> {
    // Both bounds are also what lets the verifier accept the access.
    if off > PAYLOAD_WINDOW - 8 || off + 8 > payload_len {
        return None;
    }
    parse::read_u64_at(data, data_end, payload_offset, off)
}

/// What the fast path's callback needs from [`scan_fast`]: the context, for the packet.
#[repr(C)]
struct FastScan {
    xdp: *mut xdp_md,
}

/// The greeting read eight bytes per step in place ([`helo_common::words`]), or
/// [`ScanResult::SLOW`] for a shape it leaves to the byte scanner.
///
/// The first [`INLINE_WORDS`] words are read inline, with the state in locals: most names end
/// there (`rad.internal` takes two words, a 30-byte name four), and this spares them a callback's
/// call and return and the state's trip through map memory (xdp-cost, 30-byte drop: 129 ns with
/// every word in callbacks, 117 now). Longer arguments go on in a `bpf_loop` (the kernel inlines
/// the loop), one callback per [`WORDS_PER_STEP`] words, with the state in the per-CPU scratch
/// value: the verifier checks those steps once, as for the byte scanner, instead of every word,
/// and then every way out of the word loop through the rest of the program. (The verifier's
/// count went from about 158,000 instructions processed to 314,000 with the inline words, of its
/// 1,000,000.)
#[inline(always)]
fn scan_fast(ctx: &XdpContext, seg: &Segment, cfg: &Config, first: u64) -> ScanResult {
    let mut words = match WordScan::begin(first, seg.tcp.payload_len, &cfg.key) {
        Ok(words) => words,
        Err(Words::Done(scan)) => return ScanResult::from_scan(scan),
        Err(Words::Slow) => return ScanResult::SLOW,
    };
    // The inline words step a local state, which LLVM keeps in registers and, for the first word,
    // knows (nothing held, nothing read yet); only a longer argument moves it to the scratch value.
    let (data, data_end) = (ctx.data(), ctx.data_end());
    for _ in 0..INLINE_WORDS {
        if let Some(done) = words.step(|off| word_at(data, data_end, seg.payload_offset, seg.tcp.payload_len, off)) {
            return ScanResult::from_words(done);
        }
    }
    let Some(scratch) = maps::scratch() else {
        return ScanResult::SLOW;
    };
    let mut fast = FastScan { xdp: ctx.ctx };
    // SAFETY: the scratch value is this CPU's alone for the whole program run, and XDP does not
    // preempt itself; the callback only touches it, `fast` (alive across the call) and the packet.
    unsafe {
        words.store_to(&raw mut (*scratch).words);
        (*scratch).payload_offset = seg.payload_offset as u32;
        (*scratch).len = seg.tcp.payload_len as u32;
        (*scratch).result = ScanResult::SLOW;
        bpf_loop(
            MAX_STEPS.div_ceil(WORDS_PER_STEP) as u32,
            word_step as *mut core::ffi::c_void,
            &raw mut fast as *mut core::ffi::c_void,
            0,
        );
        (*scratch).result
    }
}

/// One `bpf_loop` iteration of the fast path: up to [`WORDS_PER_STEP`] argument words. Returns 1
/// (stop) once the result is known, with the result in the scratch value.
#[inline(never)]
extern "C" fn word_step(_index: u64, arg: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = maps::scratch() else {
        return 1;
    };
    // SAFETY: `arg` is the `FastScan` on `scan_fast`'s stack, alive for the whole call; its
    // context pointer is this program run's. The scratch value as in `scan_fast`.
    unsafe {
        let xdp = (*(arg as *mut FastScan)).xdp;
        let (data, data_end) = ((*xdp).data as usize, (*xdp).data_end as usize);
        let (offset, len) = ((*scratch).payload_offset as usize, (*scratch).len as usize);
        for _ in 0..WORDS_PER_STEP {
            if let Some(done) = (*scratch).words.step(|off| word_at(data, data_end, offset, len, off)) {
                (*scratch).result = ScanResult::from_words(done);
                return 1;
            }
        }
        0
    }
}

/// Argument words per bpf_loop iteration: the longest argument (255 bytes, 32 words) takes two
/// callbacks after the inline words (xdp-cost, 255-byte name: 465 ns at 4 words per callback,
/// 434 at 8, 413 at 16).
const WORDS_PER_STEP: usize = 16;

/// Argument words read inline, before the loop ([`scan_fast`]).
const INLINE_WORDS: usize = 4;

/// Copies up to [`PAYLOAD_WINDOW`] payload bytes into per-CPU scratch and scans them.
#[inline(always)]
fn scan_payload(ctx: &XdpContext, seg: &Segment, cfg: &Config) -> Scan {
    let Some(scratch) = maps::scratch() else {
        return Scan::Truncated;
    };
    let len = if seg.tcp.payload_len < PAYLOAD_WINDOW { seg.tcp.payload_len } else { PAYLOAD_WINDOW };
    // The caller passed empty payloads already; said again here for the verifier, which can lose
    // that bound on the way (and hidden from LLVM, which would drop the check as known).
    let len = parse::opaque(len);
    if len == 0 || len > PAYLOAD_WINDOW {
        return Scan::Truncated;
    }
    // SAFETY: the scratch value is this CPU's alone for the whole program run, and XDP does not
    // preempt itself. `len` is in 1..=PAYLOAD_WINDOW (the caller checked payload_len > 0); the
    // helper checks the packet bounds itself and fails on a frame shorter than its IP header says.
    unsafe {
        let copied =
            bpf_xdp_load_bytes(ctx.ctx, seg.payload_offset as u32, &raw mut (*scratch).window as *mut core::ffi::c_void, len as u32);
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
fn block(cfg: &Config, key: &FlowKey, entry: EntryRef, flow: Option<FlowRef>, kind: u8, hash: u64, now: u64) -> Decision {
    if cfg.flags & config_flags::ALLOW_EMPTY == 0 && maps::allow_listed(&key.source()) {
        return pass(Pass::AllowListed);
    }
    let (reason, previous_hit) = entry.record_hit(now);
    let observed = cfg.mode == mode::OBSERVE;
    if kind == event_kind::SOURCE && !observed && entry.take_answer() {
        // Not dropped yet: the agent greets this connection with 554 and the entry's words.
        return pass(Pass::SourceAnswered);
    }
    if maps::worth_reporting(flow, previous_hit, now) {
        // One strike per refused connection (the first drop of its flow), not per packet.
        let listed = kind == event_kind::HELO && !observed && maps::strike(&key.source(), now);
        maps::report(DropEvent {
            flow: *key,
            kind,
            observed: observed as u8,
            listed_source: listed as u8,
            reason,
            hash,
            mono_ns: now,
            ..DropEvent::default()
        });
    }
    match (observed, kind == event_kind::HELO) {
        (true, true) => pass(Pass::ObservedHelo),
        (true, false) => pass(Pass::ObservedSource),
        (false, true) => Decision::Drop(Dropped::Helo),
        (false, false) => Decision::Drop(Dropped::Source),
    }
}
