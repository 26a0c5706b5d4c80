//! The offender ladder in the real XDP program, through BPF_PROG_TEST_RUN: strikes on dropped
//! greetings, the listing made by the program itself, the answers before the drops, the allow list
//! and observe mode. Each connection goes through its real SYN first.

use std::net::IpAddr;

use aya::{
    maps::RingBuf,
    programs::{TestRun, TestRunOptions},
};
use helo_common::{
    hash_helo_arg,
    maps::{counter, reason, BlockEntry, DropEvent, Ladder},
    HashKey,
};
use helo_testbed::{frames::Frame, privilege::require_root};
use helo_user::{
    kernel::{BlockTables, KernelFilter, LoadOptions},
    modes::FilterMode,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const KEY: HashKey = HashKey { k0: 0x1add_e400_0000_0001, k1: 0x0123_4567_89ab_cdef };
const S: u64 = 1_000_000_000;
const LADDER: Ladder = Ladder { strikes: 3, answers: 2, window_ns: 60 * S, ttl_ns: 600 * S, max_ttl_ns: 3600 * S };

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(filter: &KernelFilter, frame: &Frame, repeat: u32) -> u32 {
    filter.program().test_run(TestRunOptions { data_in: Some(&frame.build()), repeat, ..Default::default() }).unwrap().return_value
}

fn events(ring: &mut RingBuf<aya::maps::MapData>) -> Vec<DropEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the program writes whole DropEvents (repr(C), any bit pattern valid).
        out.push(unsafe { core::ptr::read_unaligned(item.as_ptr() as *const DropEvent) });
    }
    out
}

fn loaded(mode: FilterMode) -> (KernelFilter, RingBuf<aya::maps::MapData>) {
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, mode, &[25]).unwrap();
    filter.configure_ladder(LADDER).unwrap();
    filter.block_helo(hash_helo_arg(&KEY, b"rad.internal"), BlockEntry { reason: reason::BOGUS_HELO, ..Default::default() }).unwrap();
    let ring = filter.take_events().unwrap();
    (filter, ring)
}

/// One connection from `src` on `port` greeting with `rad.internal` (a retransmission included):
/// the SYN's verdict and the greeting's.
fn connect(filter: &KernelFilter, src: &str, port: u16) -> (u32, u32) {
    let mut f = Frame::tcp(ip(src), ip("198.18.0.2"), b"EHLO rad.internal\r\n");
    f.sport = port;
    let syn = run(filter, &f.syn(), 1);
    let greeting = if syn == XDP_PASS { run(filter, &f, 2) } else { syn };
    (syn, greeting)
}

#[test]
fn k_dropped_greetings_list_the_source_in_the_kernel_which_answers_n_then_drops() {
    if !require_root("k_dropped_greetings_list_the_source_in_the_kernel_which_answers_n_then_drops") {
        return;
    }
    let (mut filter, mut ring) = loaded(FilterMode::Enforce);
    let src = "198.18.5.5";
    for port in 41000..41002 {
        assert_eq!(connect(&filter, src, port), (XDP_PASS, XDP_DROP));
    }
    assert!(filter.source_entry(ip(src)).is_none(), "listed after 2 strikes of 3");
    assert_eq!(connect(&filter, src, 41002), (XDP_PASS, XDP_DROP));
    let entry = filter.source_entry(ip(src)).expect("the third strike lists the source in the kernel");
    assert_eq!(entry.reason, reason::LADDER);
    assert_eq!(entry.answers_left, LADDER.answers);
    let now = helo_user::listing::clock::mono_now_ns();
    assert!(entry.expires_mono_ns > now + 590 * S && entry.expires_mono_ns <= now + 600 * S, "first offence: 600 s");
    // One event per connection (the retransmissions add none); the third says it listed the source.
    let ev = events(&mut ring);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev.iter().map(|e| e.listed_source).collect::<Vec<_>>(), [0, 0, 1]);

    // Answered, then dropped: the next 2 SYNs pass (the agent tells them why), then none.
    let before = filter.maps.counters().unwrap();
    assert_eq!(connect(&filter, src, 41003).0, XDP_PASS);
    assert_eq!(connect(&filter, src, 41004).0, XDP_PASS);
    assert_eq!(connect(&filter, src, 41005).0, XDP_DROP);
    assert_eq!(connect(&filter, src, 41006).0, XDP_DROP);
    let counted = filter.maps.counters().unwrap().since(&before);
    assert_eq!(counted.get(counter::PASS_SOURCE_ANSWERED), 2);
    assert_eq!(counted.get(counter::DROP_SOURCE), 2);

    // Once the entry is gone (expired, removed), the source is back on trial, and a re-offence
    // lists it for twice as long.
    assert!(filter.unblock_source(ip(src)).unwrap());
    for port in 42000..42003 {
        assert_eq!(connect(&filter, src, port), (XDP_PASS, XDP_DROP));
    }
    let again = filter.source_entry(ip(src)).expect("listed again");
    let now = helo_user::listing::clock::mono_now_ns();
    assert!(again.expires_mono_ns > now + 1190 * S && again.expires_mono_ns <= now + 1200 * S, "second offence: 1200 s");
}

#[test]
fn the_allow_list_wins_and_observe_mode_only_counts() {
    if !require_root("the_allow_list_wins_and_observe_mode_only_counts") {
        return;
    }
    let (mut filter, _ring) = loaded(FilterMode::Enforce);
    filter.maps.allow(ip("198.18.6.0"), 24).unwrap();
    for port in 43000..43010 {
        assert_eq!(connect(&filter, "198.18.6.6", port), (XDP_PASS, XDP_PASS));
    }
    assert!(filter.source_entry(ip("198.18.6.6")).is_none(), "an allowed source was struck");

    let (filter, _ring) = loaded(FilterMode::Observe);
    for port in 44000..44010 {
        assert_eq!(connect(&filter, "198.18.7.7", port), (XDP_PASS, XDP_PASS));
    }
    assert!(filter.source_entry(ip("198.18.7.7")).is_none(), "observe mode listed a source");
    assert_eq!(filter.maps.counters().unwrap().get(counter::OBSERVE_HELO), 20);

    // An operator's entry for a source is never overwritten by the ladder.
    let (mut filter, _ring) = loaded(FilterMode::Enforce);
    filter.block_source(ip("198.18.8.8"), BlockEntry { reason: reason::OPERATOR, answers_left: 100, ..Default::default() }).unwrap();
    for port in 45000..45005 {
        assert_eq!(connect(&filter, "198.18.8.8", port).0, XDP_PASS, "answered while it has answers left");
    }
    assert_eq!(filter.source_entry(ip("198.18.8.8")).unwrap().reason, reason::OPERATOR);
}
