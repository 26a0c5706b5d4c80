//! Tier A, live path: crafted greeting frames injected into a veth as XDP frames (the project's
//! XDP_TX generator through BPF_PROG_TEST_RUN with live frames), received by a veth whose NAPI
//! runs in its own thread pinned to the other core. The measure is that thread's CPU time per
//! packet, for each filter arm. Prints a JSON report.

use std::{thread, time::Duration};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf,
};
use helo_benches::{
    rig::{mac, nft_drop_greeting, nft_dropped, nft_remove, rx_packets, sh},
    Spread,
};
use helo_common::maps::BASELINE_PROGRAM_NAME;
use helo_common::{
    hash_helo_arg,
    maps::{counter, BlockEntry},
    HashKey,
};
use helo_testbed::{
    frames::Frame,
    inject::Injector,
    netns::{enter_named, link, Netns},
};
use helo_user::{
    kernel::{BlockTables, KernelFilter, LoadOptions, XDP_OBJECT},
    modes::{AttachMode, FilterMode},
};
use serde::Serialize;

const NAME: &str = "rad.internal";
const FRAMES: u32 = 6_000_000;
/// Frames per BPF_PROG_TEST_RUN call. The receiving veth's ring holds a few hundred frames, so a
/// generator faster than the receiver loses some there: the measure divides by what the arm
/// itself counted as processed, never by what was sent.
const BATCH: u32 = 50_000;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Arm {
    NoFilter,
    /// `baseline_drop25`, natively: helo's header parsers, then drop anything to port 25. The
    /// floor a native XDP drop costs on this path.
    BaselineNative,
    HeloNative,
    HeloSkb,
    Nftables,
    Iptables(usize),
}

impl Arm {
    fn label(self) -> String {
        match self {
            Arm::NoFilter => "no filter (the TCP stack answers)".into(),
            Arm::BaselineNative => "baseline_drop25, native XDP".into(),
            Arm::HeloNative => "helo, native XDP".into(),
            Arm::HeloSkb => "helo, skb XDP".into(),
            Arm::Nftables => "nftables netdev ingress, payload match".into(),
            Arm::Iptables(n) => format!("iptables raw -m string, {n} names"),
        }
    }
}

#[derive(Serialize)]
struct Row {
    arm: String,
    /// Nanoseconds per packet, one sample per round.
    #[serde(flatten)]
    ns_per_packet: Spread,
}

/// The NAPI kthread of `ifname` (threaded NAPI names it `napi/<ifname>-<id>`).
fn napi_thread(ifname: &str) -> Result<i32> {
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim().starts_with(&format!("napi/{ifname}-")) {
                return Ok(pid);
            }
        }
    }
    bail!("no NAPI thread for {ifname}")
}

/// utime + stime of a thread, in clock ticks.
fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for sched_setaffinity on a thread id.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What an XDP arm keeps alive while it runs (dropping it detaches the program).
#[allow(clippy::large_enum_variant, reason = "one per arm, held while it runs")]
enum Installed {
    Helo(KernelFilter),
    Baseline(#[allow(dead_code, reason = "held only to keep the program attached")] Ebpf),
}

/// Puts the arm's filter in place on the receiving veth.
fn setup(arm: Arm, rx: &Netns, rx_if: &str) -> Result<Option<Installed>> {
    let key = HashKey { k0: 7, k1: 9 };
    match arm {
        Arm::HeloNative | Arm::HeloSkb => {
            let mode = if matches!(arm, Arm::HeloNative) { AttachMode::Native } else { AttachMode::Skb };
            let ifname = rx_if.to_owned();
            let mut fl = enter_named(&rx.name, move || -> Result<KernelFilter> {
                let mut fl = KernelFilter::load(LoadOptions::default())?;
                fl.configure(key, FilterMode::Enforce, &[25])?;
                let used = fl.attach(&ifname, mode)?;
                anyhow::ensure!(used == mode, "attached in {} mode, not {}", used.as_str(), mode.as_str());
                Ok(fl)
            })??;
            fl.block_helo(hash_helo_arg(&key, NAME.as_bytes()), BlockEntry { reason: 1, ..Default::default() })?;
            return Ok(Some(Installed::Helo(fl)));
        }
        Arm::BaselineNative => {
            let ifname = rx_if.to_owned();
            let obj = enter_named(&rx.name, move || -> Result<Ebpf> {
                let mut obj = Ebpf::load(XDP_OBJECT)?;
                let prog: &mut Xdp = obj.program_mut(BASELINE_PROGRAM_NAME).context("no baseline program")?.try_into()?;
                prog.load()?;
                prog.attach(&ifname, XdpMode::Driver).context("attaching baseline_drop25 natively")?;
                Ok(obj)
            })??;
            return Ok(Some(Installed::Baseline(obj)));
        }
        Arm::Nftables => nft_drop_greeting(rx, rx_if, NAME)?,
        Arm::Iptables(n) => {
            let mut rules = String::from("*raw\n");
            for i in 1..n {
                rules.push_str(&format!(
                    "-A PREROUTING -p tcp --dport 25 -m string --algo bm --string \"EHLO other{i}.internal\" -j DROP\n"
                ));
            }
            rules.push_str(&format!("-A PREROUTING -p tcp --dport 25 -m string --algo bm --string \"EHLO {NAME}\" -j DROP\nCOMMIT\n"));
            let path = std::env::temp_dir().join(format!("helobench-{}.rules", std::process::id()));
            std::fs::write(&path, rules)?;
            sh(rx, &format!("iptables-restore < {}", path.display()))?;
        }
        Arm::NoFilter => {}
    }
    Ok(None)
}

/// What the arm itself counted as processed since `rx_before`; takes the arm down.
fn teardown(arm: Arm, rx: &Netns, rx_if: &str, filter: Option<Installed>, xdp_drops_before: u64, rx_before: u64) -> Result<u64> {
    Ok(match arm {
        Arm::HeloNative | Arm::HeloSkb => {
            let Some(Installed::Helo(fl)) = filter else { bail!("no filter") };
            let dropped = fl.maps.counters()?.get(counter::DROP_HELO);
            drop(fl);
            dropped
        }
        Arm::BaselineNative => {
            // The baseline keeps no counter of its own (it would add to the floor it measures):
            // the veth's own count of XDP drops says what it processed.
            let dropped = xdp_drops(rx, rx_if)?.saturating_sub(xdp_drops_before);
            drop(filter);
            dropped
        }
        Arm::Nftables => {
            let dropped = nft_dropped(rx)?;
            nft_remove(rx)?;
            dropped
        }
        Arm::Iptables(_) => {
            let out = sh(rx, "iptables -t raw -L PREROUTING -v -x -n | tail -1")?;
            sh(rx, "iptables -t raw -F")?;
            out.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0)
        }
        Arm::NoFilter => rx_packets(rx, rx_if)?.saturating_sub(rx_before),
    })
}

/// The veth's XDP drop count, summed over its receive queues (`ethtool -S`).
fn xdp_drops(ns: &Netns, ifname: &str) -> Result<u64> {
    let stats = sh(ns, &format!("ethtool -S {ifname}"))?;
    Ok(stats
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_drops"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

fn main() -> Result<()> {
    let gen = Netns::new("g")?;
    let rx = Netns::new("x")?;
    let (g_end, r_end) = link(&gen, &rx, 60)?;
    let rx_if = r_end.ifname.clone();
    sh(&rx, &format!("ethtool -K {rx_if} gro on >/dev/null && echo 1 > /sys/class/net/{rx_if}/threaded"))?;
    let mac = mac(&rx, &rx_if)?;
    let mut f = Frame::tcp(g_end.v4.parse()?, r_end.v4.parse()?, format!("EHLO {NAME}\r\n").as_bytes());
    f.sport = 47000;
    let (mut syn, mut payload) = (f.syn().build(), f.build());
    syn[..6].copy_from_slice(&mac);
    payload[..6].copy_from_slice(&mac);
    let injector = Injector::start(&gen, &g_end.ifname)?;
    // Warm up so the NAPI thread exists.
    injector.send(&syn, 1)?;
    thread::sleep(Duration::from_millis(200));
    let napi = napi_thread(&rx_if)?;
    pin(napi, 1)?;

    let arms = [
        Arm::NoFilter,
        Arm::BaselineNative,
        Arm::HeloNative,
        Arm::HeloSkb,
        Arm::Nftables,
        Arm::Iptables(1),
        Arm::Iptables(100),
        Arm::Iptables(10_000),
    ];
    let mut results: Vec<(Arm, Vec<f64>)> = arms.iter().map(|a| (*a, vec![])).collect();
    let rounds = if std::env::var("HELO_BENCH_SOCKET_ONLY").is_ok_and(|v| v == "1") { 0 } else { setting("HELO_BENCH_ROUNDS", ROUNDS) };
    let only_xdp = std::env::var("HELO_BENCH_XDP_ONLY").is_ok_and(|v| v == "1");
    for _round in 0..rounds {
        for (arm, samples) in results.iter_mut() {
            if only_xdp && !matches!(arm, Arm::BaselineNative | Arm::HeloNative | Arm::Nftables) {
                continue;
            }
            let mut filter = setup(*arm, &rx, &rx_if)?;
            injector.send(&syn, 1)?;
            let rx_before = rx_packets(&rx, &rx_if)?;
            let xdp_drops_before = xdp_drops(&rx, &rx_if)?;
            let before = cpu_ticks(napi)?;
            let mut sent = 0;
            while sent < FRAMES {
                injector.send(&payload, BATCH)?;
                sent += BATCH;
            }
            thread::sleep(Duration::from_millis(100));
            let ticks = cpu_ticks(napi)? - before;
            // What the arm itself processed (and so proof that it ran), then take it down.
            let processed = teardown(*arm, &rx, &rx_if, filter.take(), xdp_drops_before, rx_before)?;
            // Proof the arm ran, and enough of its CPU time to read (clock ticks are 10 ms): the
            // slowest arm (10,000 iptables rules, milliseconds per packet) gets through only a
            // few hundred frames in the time the others take millions.
            if processed < 100 || ticks < 20 {
                bail!("{}: only {processed} of {FRAMES} frames were processed by the arm ({ticks} ticks)", arm.label());
            }
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            eprintln!("{}: {processed} of {FRAMES} processed, {ticks} ticks", arm.label());
            samples.push(ticks as f64 / hz * 1e9 / processed as f64);
        }
    }
    let trafgen = if only_xdp { vec![] } else { socket_path(&gen, &g_end.ifname, &rx, &rx_if, &injector, &syn, &payload)? };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "frames": FRAMES, "rounds": rounds, "arms": rows(results),
            "trafgen": { "frames": TRAFGEN_FRAMES, "rounds": ROUNDS, "arms": rows(trafgen) },
        }))?
    );
    Ok(())
}

/// `HELO_BENCH_ROUNDS` shortens a run while iterating; `cargo xtask bench` runs the default.
fn setting(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rows(results: Vec<(Arm, Vec<f64>)>) -> Vec<Row> {
    results.into_iter().map(|(arm, v)| Row { arm: arm.label(), ns_per_packet: Spread::of(v) }).collect()
}

const TRAFGEN_FRAMES: u64 = 500_000;

/// Busy time of the whole machine so far (every CPU: user, system, interrupts), in clock ticks.
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = cpu.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// The socket path: trafgen sends the same frames through a packet socket. A packet socket's own
/// cost is part of the measure (the whole machine's busy time per packet the arm processed): that
/// is what a socket generator hides a filter's cost behind.
fn socket_path(
    gen: &Netns,
    gen_if: &str,
    rx: &Netns,
    rx_if: &str,
    injector: &Injector,
    syn: &[u8],
    payload: &[u8],
) -> Result<Vec<(Arm, Vec<f64>)>> {
    let bytes: Vec<String> = payload.iter().map(|b| format!("0x{b:02x}")).collect();
    let cfg = std::env::temp_dir().join(format!("helobench-{}.trafgen", std::process::id()));
    std::fs::write(&cfg, format!("{{ {} }}\n", bytes.join(", ")))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // A socket sender's frames are received in softirq on the sending core, as usual: no NAPI
    // thread here (the measure is the whole machine anyway).
    sh(rx, &format!("echo 0 > /sys/class/net/{rx_if}/threaded"))?;
    let arms = [Arm::NoFilter, Arm::HeloNative, Arm::Nftables, Arm::Iptables(1)];
    let mut results: Vec<(Arm, Vec<f64>)> = arms.iter().map(|a| (*a, vec![])).collect();
    for _round in 0..ROUNDS {
        for (arm, samples) in results.iter_mut() {
            let filter = setup(*arm, rx, rx_if)?;
            injector.send(syn, 1)?;
            let rx_before = rx_packets(rx, rx_if)?;
            let xdp_drops_before = xdp_drops(rx, rx_if)?;
            let before = busy_ticks()?;
            let out = gen
                .command("trafgen")
                .args(["-o", gen_if, "-i"])
                .arg(&cfg)
                .args(["-n", &TRAFGEN_FRAMES.to_string(), "-P", "1", "--no-sock-mem", "--no-cpu-stats", "--notouch-irq"])
                .output()
                .context("running trafgen (Debian package netsniff-ng)")?;
            // With a program on the receiving veth, a full receive ring pushes back on the packet
            // socket, and trafgen gives up on the EAGAIN. What it sent until then was processed
            // and is measured like the rest, so that ends the run early rather than the benchmark.
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !stderr.contains("Resource temporarily unavailable") {
                bail!("trafgen failed: {stderr}");
            }
            thread::sleep(Duration::from_millis(100));
            let ticks = busy_ticks()? - before;
            let processed = teardown(*arm, rx, rx_if, filter, xdp_drops_before, rx_before)?;
            if processed < 10_000 {
                bail!("{} (trafgen): only {processed} of {TRAFGEN_FRAMES} frames were processed by the arm", arm.label());
            }
            eprintln!("{} (trafgen): {processed} of {TRAFGEN_FRAMES} processed, {ticks} busy ticks", arm.label());
            samples.push(ticks as f64 / hz * 1e9 / processed as f64);
        }
    }
    let _ = std::fs::remove_file(&cfg);
    Ok(results)
}
