//! Tier A, program-only cost: the real XDP program run by the kernel through BPF_PROG_TEST_RUN
//! with a repeat count, beside the baseline program that only parses headers and drops port 25.
//!
//! Arms run interleaved, five rounds or more, and each arm is checked to have really run: the
//! program's counter for the expected outcome must have risen by exactly the repeat count.
//! Prints a JSON report on stdout; `cargo xtask bench` turns it into BENCHMARKS.md and a plot.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use helo_common::{
    hash_helo_arg,
    maps::{counter, BlockEntry, FlowKey, BASELINE_PROGRAM_NAME},
    HashKey,
};
use helo_testbed::frames::Frame;
use helo_user::{
    kernel::{addr::addr_key, BlockTables, KernelFilter, LoadOptions, XDP_OBJECT},
    modes::FilterMode,
};
use serde::Serialize;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 7;

/// `HELO_BENCH_REPEAT` / `HELO_BENCH_ROUNDS` (and `HELO_BENCH_ONLY`, below) shorten a run while iterating; the report says what
/// was used, and `cargo xtask bench` runs the defaults.
fn setting(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[derive(Serialize)]
struct Arm {
    name: String,
    /// Mean ns per run, one per round.
    ns: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
}

fn name_of(len: usize, salt: u64) -> Vec<u8> {
    let mut n: Vec<u8> = format!("h{salt:x}.").into_bytes();
    while n.len() < len {
        n.push(b'a' + (n.len() % 26) as u8);
    }
    n.truncate(len);
    n
}

struct Case {
    label: String,
    frame: Vec<u8>,
    expect: u32,
    counter: Option<u32>,
    /// Run with a network (not the frame's) in the source network trie, so that the program
    /// looks the trie up instead of skipping it as empty.
    nets_listed: bool,
}

fn frame_for(arg: &[u8], sport: u16) -> Frame {
    let payload = [b"EHLO ".as_slice(), arg, b"\r\n"].concat();
    let mut f = Frame::tcp("198.18.1.10".parse::<IpAddr>().unwrap(), "198.18.0.2".parse().unwrap(), &payload);
    f.sport = sport;
    f
}

fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let r = prog.test_run(TestRunOptions { data_in: Some(frame), repeat, ..Default::default() })?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

fn main() -> Result<()> {
    let repeat = setting("HELO_BENCH_REPEAT", REPEAT as usize) as u32;
    let rounds = setting("HELO_BENCH_ROUNDS", ROUNDS);
    // `HELO_BENCH_ONLY=SYN`: only the arms whose label holds this text (and the baseline), for
    // profiling one path.
    let only = std::env::var("HELO_BENCH_ONLY").ok();
    let key = HashKey { k0: rand::random(), k1: rand::random() };
    let mut filter = KernelFilter::load(LoadOptions::default()).context("loading helo (run as root)")?;
    filter.configure(key, FilterMode::Enforce, &[25])?;
    let mut baseline_obj = Ebpf::load(XDP_OBJECT)?;
    let baseline: &mut Xdp = baseline_obj.program_mut(BASELINE_PROGRAM_NAME).context("no baseline program")?.try_into()?;
    baseline.load()?;

    let entry = BlockEntry { reason: 1, ..Default::default() };
    let mut sport = 30000u16;
    let mut cases_for_size = |filter: &mut KernelFilter| -> Result<Vec<Case>> {
        let mut cases = Vec::new();
        for len in [8usize, 30, 64, 255] {
            let name = name_of(len, len as u64);
            filter.block_helo(hash_helo_arg(&key, &name), entry)?;
            sport += 1;
            let f = frame_for(&name, sport);
            filter.maps.remember_flow(flow(&f), f.seq)?;
            cases.push(Case {
                label: format!("drop, {len}-byte name"),
                frame: f.build(),
                expect: XDP_DROP,
                counter: Some(counter::DROP_HELO),
                nets_listed: false,
            });
        }
        sport += 1;
        let f = frame_for(&name_of(30, 0xfeed), sport);
        filter.maps.remember_flow(flow(&f), f.seq)?;
        cases.push(Case {
            label: "pass, 30-byte name not listed".into(),
            frame: f.build(),
            expect: XDP_PASS,
            counter: Some(counter::PASS_NOT_LISTED),
            nets_listed: false,
        });
        // Where the cost goes: a later segment of the same flow stops after the flow lookup (no
        // payload copy, no scan); a SYN stops after the source lookups and the flow insert.
        let mut later = f.clone();
        later.seq = later.seq.wrapping_add(1000);
        cases.push(Case {
            label: "pass, later segment (no scan)".into(),
            frame: later.build(),
            expect: XDP_PASS,
            counter: Some(counter::PASS_NOT_FIRST_PAYLOAD),
            nets_listed: false,
        });
        // The usual later segment: mail data, which does not even start like a greeting.
        let mut data = later.clone();
        data.payload = b"Subject: quarterly figures\r\nFrom: <a@example.org>\r\n".to_vec();
        cases.push(Case {
            label: "pass, later segment of mail data".into(),
            frame: data.build(),
            expect: XDP_PASS,
            counter: None,
            nets_listed: false,
        });
        cases.push(Case {
            label: "pass, SYN (flow recorded)".into(),
            frame: f.syn().build(),
            expect: XDP_PASS,
            counter: Some(counter::PASS_NO_PAYLOAD),
            nets_listed: false,
        });
        // The same with the network trie in use (an operator listed a network somewhere).
        cases.push(Case {
            label: "pass, SYN, a network listed".into(),
            frame: f.syn().build(),
            expect: XDP_PASS,
            counter: Some(counter::PASS_NO_PAYLOAD),
            nets_listed: true,
        });
        Ok(cases)
    };

    let mut arms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut listed = 0usize;
    for size in [1usize, 10_000, 1_000_000] {
        // Fill the map up to `size` entries (the arms' own names count).
        while listed + 4 < size {
            filter.block_helo(hash_helo_arg(&key, &name_of(30, listed as u64 + 1_000_000)), entry)?;
            listed += 1;
        }
        let cases = cases_for_size(&mut filter)?;
        let base_frame = frame_for(&name_of(30, 1), 1).build();
        for _round in 0..rounds {
            let (v, ns) = run(baseline, &base_frame, repeat)?;
            if v != XDP_DROP {
                bail!("baseline arm did not drop (verdict {v})");
            }
            arms.entry("baseline: parse + drop port 25".into()).or_default().push(ns);
            for c in cases.iter().filter(|c| only.as_deref().is_none_or(|o| c.label.contains(o))) {
                if c.nets_listed {
                    filter.block_source_net(ELSEWHERE.0, ELSEWHERE.1, entry)?;
                }
                let before = filter.maps.counters()?;
                let (v, ns) = run(filter.program(), &c.frame, repeat)?;
                let ran = filter.maps.counters()?.since(&before);
                if c.nets_listed {
                    filter.unblock_source_net(ELSEWHERE.0, ELSEWHERE.1)?;
                }
                if v != c.expect {
                    bail!("arm {:?} returned {v}, expected {}", c.label, c.expect);
                }
                if let Some(idx) = c.counter {
                    if ran.get(idx) != repeat as u64 {
                        bail!("arm {:?}: counter {} rose by {}, not {repeat}", c.label, counter::NAMES[idx as usize], ran.get(idx));
                    }
                }
                arms.entry(format!("helo {}, {} entries", c.label, thousands(listed + 4))).or_default().push(ns);
            }
        }
    }
    let report: Vec<Arm> = arms
        .into_iter()
        .map(|(name, mut ns)| {
            ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
            Arm { median: ns[ns.len() / 2], min: ns[0], max: ns[ns.len() - 1], name, ns }
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "repeat": repeat, "rounds": rounds, "arms": report }))?);
    Ok(())
}

/// A listed network that holds none of the arms' sources.
const ELSEWHERE: (IpAddr, u8) = (IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 200, 0)), 24);

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn flow(f: &Frame) -> FlowKey {
    FlowKey::new(addr_key(f.src).addr, addr_key(f.dst).addr, f.sport.to_be(), f.dport.to_be())
}
