//! `cargo xtask bench`: runs the benchmarks and rewrites BENCHMARKS.md (and its plot).
//!
//! - Tier A, program-only cost: `xdp-cost` (in helo-benches) runs the real XDP program and a
//!   baseline through BPF_PROG_TEST_RUN, interleaved, and checks every arm really ran;
//! - Tier A, live path: `xdp-live` injects frames into a veth and measures the receiver's NAPI
//!   thread per packet for helo (native, skb), nftables, iptables and no filter;
//! - Tier B, sessions (`sessions`): rejecting bogus greetings (agent, smtp-sink, Postfix), clean
//!   sessions under a flood (helo XDP, XDP off, nftables), memory per idle session;
//! - the fleet's propagation time (`fleet-latency`): a block on one box to the other's kernel;
//! - edge economics (`edge`): a bot-heavy mix through postscreen, HAProxy and helo, each in front
//!   of the same Postfix;
//! - the criterion benches (classifier, normaliser and hash, SMTP line parser).
//!
//! Numbers are only compared within one run: these machines are noisy.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{compile, proc, setup};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn run(only: &[Part], reuse: bool) -> Result<()> {
    let root = proc::workspace_root();
    if reuse {
        return run_parts(&root, only, true);
    }
    proc::require_root("the XDP benchmarks load programs into the kernel")?;
    setup::run(setup::Scope::Everything)?;
    compile::release()?;
    if !only.is_empty() {
        return run_parts(&root, only, reuse);
    }
    // A report that fails is written as failed, in its place, and the command fails at the end:
    // never a section silently left out.
    let xdp = run_report(&root, "xdp-cost");
    let live = run_report(&root, "xdp-live");
    let sessions = run_report(&root, "sessions");
    let fleet = run_report(&root, "fleet-latency");
    let edge = run_report(&root, "edge");
    let criterion = proc::run(proc::cargo().args([
        "bench",
        "-p",
        "helo-benches",
        "--bench",
        "classify",
        "--bench",
        "normalise_hash",
        "--bench",
        "smtp_line",
    ]))
    .and_then(|_| criterion_medians(&target_dir(&root).join("criterion")));

    fs::create_dir_all(root.join("benchmarks"))?;
    let plot_rel = "benchmarks/xdp-cost.svg";
    let flood_plot_rel = "benchmarks/flood.svg";
    let mut failed = Vec::new();
    let mut md = render_head()?;
    md.push_str(&section(
        "Tier A: cost per packet, program only",
        &mut failed,
        xdp.and_then(|x| {
            plot(&x, &root.join(plot_rel))?;
            render_cost(&x, plot_rel)
        }),
    ));
    md.push_str(&section("Tier A: live path", &mut failed, live.and_then(|l| render_live(&l))));
    md.push_str(&section("Fleet", &mut failed, fleet.and_then(|f| render_fleet(&f))));
    md.push_str(&section("Criterion benches", &mut failed, criterion.and_then(|c| render_criterion(&c))));
    md.push_str(&section(
        "Tier B: sessions",
        &mut failed,
        sessions.and_then(|s| {
            plot_flood(&s["flood"], &root.join(flood_plot_rel))?;
            render_sessions(&s, flood_plot_rel)
        }),
    ));
    md.push_str(&section("Edge economics", &mut failed, edge.and_then(|e| render_edge(&e))));
    fs::write(root.join("BENCHMARKS.md"), md)?;
    println!("wrote BENCHMARKS.md, {plot_rel} and {flood_plot_rel}");
    if !failed.is_empty() {
        bail!("these parts failed (BENCHMARKS.md says how): {}", failed.join(", "));
    }
    Ok(())
}

/// A part of the benchmarks that `cargo xtask bench --only` reruns on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// xdp-cost and xdp-live, and the cost plot.
    TierA,
    /// The `sessions` report (Tier B) and the flood plot.
    Sessions,
    /// The `edge` report (edge economics).
    Edge,
}

impl Part {
    /// The headings of this part's sections in BENCHMARKS.md all start with this.
    fn heading(self) -> &'static str {
        match self {
            Part::TierA => "## Tier A",
            Part::Sessions => "## Tier B",
            Part::Edge => "## Edge economics",
        }
    }

    fn render(self, root: &Path, reuse: bool, failed: &mut Vec<String>) -> String {
        let run_report = |root: &Path, bin: &str| if reuse { kept_report(root, bin) } else { run_report(root, bin) };
        match self {
            Part::TierA => {
                let xdp = run_report(root, "xdp-cost");
                let live = run_report(root, "xdp-live");
                let plot_rel = "benchmarks/xdp-cost.svg";
                let mut md = section(
                    "Tier A: cost per packet, program only",
                    failed,
                    xdp.and_then(|x| {
                        plot(&x, &root.join(plot_rel))?;
                        render_cost(&x, plot_rel)
                    }),
                );
                md.push_str(&section("Tier A: live path", failed, live.and_then(|l| render_live(&l))));
                md
            }
            Part::Sessions => {
                let flood_plot_rel = "benchmarks/flood.svg";
                section(
                    "Tier B: sessions",
                    failed,
                    run_report(root, "sessions").and_then(|s| {
                        plot_flood(&s["flood"], &root.join(flood_plot_rel))?;
                        render_sessions(&s, flood_plot_rel)
                    }),
                )
            }
            Part::Edge => section("Edge economics", failed, run_report(root, "edge").and_then(|e| render_edge(&e))),
        }
    }
}

fn render_edge(e: &Value) -> Result<String> {
    let tables = e["markdown"].as_str().context("the edge report has no tables")?;
    Ok(format!("## Edge economics: a bot-heavy edge through helo, Postfix alone and HAProxy\n\n`edge`: {tables}\n"))
}

/// `cargo xtask bench --only PART,...`: reruns those parts and replaces their sections (from the
/// part's first heading to the next heading that is not the part's) in the existing BENCHMARKS.md;
/// the other sections keep their numbers from their own last run.
fn run_parts(root: &Path, parts: &[Part], reuse: bool) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let mut old = fs::read_to_string(&path).context("reading BENCHMARKS.md (run `cargo xtask bench` once first)")?;
    let mut failed = Vec::new();
    for &part in parts {
        let text = part.render(root, reuse, &mut failed);
        // A part's text may open with a blank line (to follow the section before it in a whole
        // run); here the old text before it keeps its own, and each rerun would add one more.
        let text = text.trim_start_matches('\n');
        let start = old.find(part.heading()).with_context(|| format!("BENCHMARKS.md has no {:?} section", part.heading()))?;
        let end = old[start..]
            .match_indices("\n## ")
            .map(|(i, _)| start + i + 1)
            .find(|&i| !old[i..].starts_with(part.heading()))
            .unwrap_or(old.len());
        old = format!("{}{text}{}", &old[..start], &old[end..]);
    }
    let mut md = render_head()?;
    md.push_str(&old[old.find("## ").unwrap_or(0)..]);
    fs::write(&path, md)?;
    println!("rewrote the sections of {parts:?} in BENCHMARKS.md");
    if !failed.is_empty() {
        bail!("these parts failed (BENCHMARKS.md says how): {}", failed.join(", "));
    }
    Ok(())
}

/// `met` or `missed`, for a measured ratio against its goal.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// A rendered section, or its failure in its place.
fn section(title: &str, failed: &mut Vec<String>, rendered: Result<String>) -> String {
    match rendered {
        Ok(text) => text,
        Err(e) => {
            failed.push(title.to_owned());
            format!("## {title}\n\n**FAILED**: {}\n\n", format!("{e:#}").replace('\n', " "))
        }
    }
}

/// Builds and runs one of helo-benches' report binaries; its stdout is a JSON report.
fn run_report(root: &Path, bin: &str) -> Result<Value> {
    proc::run(proc::cargo().args(["build", "--release", "-p", "helo-benches", "--bin", bin]))?;
    let path = target_dir(root).join("release").join(bin);
    println!("$ {}", path.display());
    let out = Command::new(&path).output().with_context(|| format!("running {bin}"))?;
    // The raw report and the binary's progress lines are kept beside the build, for a closer look
    // than the tables give (every sample, per round).
    let kept = target_dir(root).join("bench-reports");
    fs::create_dir_all(&kept)?;
    fs::write(kept.join(format!("{bin}.json")), &out.stdout)?;
    fs::write(kept.join(format!("{bin}.log")), &out.stderr)?;
    if !out.status.success() {
        // The last lines say why; the backtrace under them does not.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr.lines().take_while(|l| !l.starts_with("Stack backtrace")).collect();
        bail!("{bin} failed: {}", why.iter().rev().take(3).rev().copied().collect::<Vec<_>>().join(" | "));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{bin} printed no JSON report"))
}

/// The report a part's last run kept (see [`run_report`]), for rendering it again after a change
/// to the tables or plots.
fn kept_report(root: &Path, bin: &str) -> Result<Value> {
    let path = target_dir(root).join("bench-reports").join(format!("{bin}.json"));
    serde_json::from_slice(&fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{} is not a report", path.display()))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// `(bench id, median ns)` from criterion's `new/estimates.json` files.
fn criterion_medians(dir: &Path) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = entry?.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "report" && n != "base" && n != "change") {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let v: Value = serde_json::from_str(&fs::read_to_string(&p)?)?;
                let id = p
                    .parent()
                    .and_then(|n| n.parent())
                    .and_then(|q| q.strip_prefix(dir).ok())
                    .map(|q| q.display().to_string())
                    .unwrap_or_default();
                out.push((id, v["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN)));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn arm<'a>(xdp: &'a Value, name: &str) -> Option<&'a Value> {
    xdp["arms"].as_array()?.iter().find(|a| a["name"] == name)
}

fn median(xdp: &Value, name: &str) -> f64 {
    arm(xdp, name).and_then(|a| a["median"].as_f64()).unwrap_or(f64::NAN)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = Command::new("uname").arg("-r").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), kernel {kernel}")
}

fn live_median(live: &Value, arm: &str) -> f64 {
    live["arms"].as_array().and_then(|a| a.iter().find(|r| r["arm"] == arm)).and_then(|r| r["median"].as_f64()).unwrap_or(f64::NAN)
}

/// The file's head: what rewrote it, and on what machine.
fn render_head() -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(md, "Rewritten by `cargo xtask bench` (as root). Machine: {}.", machine())?;
    writeln!(
        md,
        "Compare numbers only within one section: each comes from one run on a noisy shared machine (`cargo xtask bench --only` \
         reruns some sections on their own), and every goal is a ratio of arms measured in that run.\n"
    )?;
    Ok(md)
}

/// Tier A, program only (`xdp-cost`).
fn render_cost(xdp: &Value, plot: &str) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "## Tier A: cost per packet, program only\n")?;
    writeln!(
        md,
        "The real `helo` program and a baseline (`baseline_drop25`: the same header parsers, then drop \
         anything to port 25) run by the kernel through `BPF_PROG_TEST_RUN` with repeat {} on a crafted \
         IPv4 frame carrying `EHLO <name>\\r\\n` as the flow's first payload. {} interleaved rounds; \
         every arm is checked to return its expected verdict and to raise its outcome counter by \
         exactly the repeat count.\n",
        xdp["repeat"], xdp["rounds"]
    )?;
    writeln!(md, "![ns per packet]({plot})\n")?;
    writeln!(md, "| arm | median ns | min | max |\n|---|---:|---:|---:|")?;
    for a in xdp["arms"].as_array().context("no arms")? {
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} |",
            a["name"].as_str().unwrap_or(""),
            a["median"].as_f64().unwrap_or(f64::NAN),
            a["min"].as_f64().unwrap_or(f64::NAN),
            a["max"].as_f64().unwrap_or(f64::NAN)
        )?;
    }
    let base = median(xdp, "baseline: parse + drop port 25");
    let drop30 = median(xdp, "helo drop, 30-byte name, 4 entries");
    let drop255 = median(xdp, "helo drop, 255-byte name, 4 entries");
    let drop30_1m = median(xdp, "helo drop, 30-byte name, 1,000,000 entries");
    let pass_4 = median(xdp, "helo pass, 30-byte name not listed, 4 entries");
    let pass_1m = median(xdp, "helo pass, 30-byte name not listed, 1,000,000 entries");
    let syn = median(xdp, "helo pass, SYN (flow recorded), 4 entries");
    let syn_nets = median(xdp, "helo pass, SYN, a network listed, 4 entries");
    let later = median(xdp, "helo pass, later segment (no scan), 4 entries");
    let data = median(xdp, "helo pass, later segment of mail data, 4 entries");
    writeln!(md, "\n### Ratios against the goals\n")?;
    writeln!(md, "Goals from issue 15 (\"the XDP program within 2x of a minimal drop\"); 4 entries unless said.\n")?;
    writeln!(md, "| ratio | measured | goal | |\n|---|---:|---|---|")?;
    let mut row = |name: &str, ratio: f64, goal: &str, met: bool| writeln!(md, "| {name} | {ratio:.2}× | {goal} | {} |", verdict(met));
    row("listed 30-byte greeting, drop ÷ baseline", drop30 / base, "≤ 4×", drop30 / base <= 4.0)?;
    row("listed 255-byte greeting, drop ÷ baseline", drop255 / base, "≤ 10×", drop255 / base <= 10.0)?;
    row("SYN (flow recorded) ÷ baseline", syn / base, "≤ 3×", syn / base <= 3.0)?;
    row("the same SYN with a network listed (the trie looked up) ÷ baseline", syn_nets / base, "≤ 3×", syn_nets / base <= 3.0)?;
    row("later segment of mail data ÷ baseline", data / base, "≤ 1.5×", data / base <= 1.5)?;
    row("later segment that starts with `EHLO ` (flow lookup) ÷ baseline", later / base, "≤ 1.5×", later / base <= 1.5)?;
    row("drop path at 1,000,000 entries ÷ at 4", drop30_1m / drop30, "≤ 1.2×", drop30_1m / drop30 <= 1.2)?;
    row("pass path at 1,000,000 entries ÷ at 4", pass_1m / pass_4, "≤ 1.2×", pass_1m / pass_4 <= 1.2)?;
    writeln!(
        md,
        "\nWhere the cost goes (4 entries): a later segment of mail data stops at the first eight \
         payload bytes, which cannot start a greeting ({data:.0} ns against the baseline's {base:.0}: \
         the configuration, the port and the counter); one that starts with `EHLO ` needs the flow \
         lookup to be told from the first payload ({later:.0} ns); a SYN looks its source up (the hash \
         map; the network trie only while it holds a network: {syn_nets:.0} ns with one listed) and finds its slot in the flow table ({syn:.0} ns: the arm replays one \
         frame, so this is a retransmitted SYN; a new flow's SYN also writes its slot and reads the \
         coarse clock, which this bench does not isolate). The first payload adds the argument, read eight bytes per \
         step in place and hashed a word at a time with SipHash-2-4 (growing with the name's \
         length), and the HELO lookup ({pass_4:.0} ns for a 30-byte name that is not listed); a \
         drop adds the coarse clock, the hit count and, once per flow, the ring-buffer event. The map \
         size barely matters.\n"
    )?;
    Ok(md)
}

/// Tier A, live path and socket path (`xdp-live`).
fn render_live(live: &Value) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "## Tier A: live path\n")?;
    writeln!(
        md,
        "`xdp-live`: a crafted `EHLO rad.internal` segment (real IP and TCP checksums, the receiver's \
         MAC) is injected {} times per arm and round as XDP frames into a veth (the project's XDP_TX \
         generator through BPF_PROG_TEST_RUN with live frames). The receiving veth runs threaded NAPI \
         (GRO on), its thread pinned to core 1; the measure is that thread's CPU time (utime + stime) \
         divided by the packets the arm itself counted (helo's drop counter, the veth's XDP drop \
         count for `baseline_drop25` (helo's header parsers, then drop anything to port 25: the \
         floor for a native XDP drop), the nftables and iptables rule counters, the veth's rx \
         count for no filter). The generator outruns the \
         receiver, so part of the frames are lost in the veth's ring before any arm sees them; \
         that is why the division is by what was processed. {} interleaved rounds.\n",
        live["frames"], live["rounds"]
    )?;
    writeln!(md, "| arm | median ns/packet | min | max |\n|---|---:|---:|---:|")?;
    for a in live["arms"].as_array().context("no live arms")? {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} |",
            a["arm"].as_str().unwrap_or(""),
            a["median"].as_f64().unwrap_or(f64::NAN),
            a["min"].as_f64().unwrap_or(f64::NAN),
            a["max"].as_f64().unwrap_or(f64::NAN)
        )?;
    }
    let native = live_median(live, "helo, native XDP");
    let floor = live_median(live, "baseline_drop25, native XDP");
    let nft = live_median(live, "nftables netdev ingress, payload match");
    writeln!(md, "\n| ratio | measured | goal | |\n|---|---:|---|---|")?;
    writeln!(md, "| helo native ÷ `baseline_drop25` native | {:.2}× | ≤ 2× | {} |", native / floor, verdict(native / floor <= 2.0))?;
    writeln!(md, "| nftables ÷ helo native | {:.2}× | ≥ 3× | {} |", nft / native, verdict(nft / native >= 3.0))?;
    writeln!(md, "| iptables (1 name) ÷ helo native | {:.2}× | | |", live_median(live, "iptables raw -m string, 1 names") / native)?;
    writeln!(
        md,
        "| iptables (100 names) ÷ helo native | {:.2}× | grows with names | |",
        live_median(live, "iptables raw -m string, 100 names") / native
    )?;
    writeln!(
        md,
        "| iptables (10,000 names) ÷ helo native | {:.2}× | grows with names | |",
        live_median(live, "iptables raw -m string, 10000 names") / native
    )?;
    writeln!(
        md,
        "| no filter (TCP stack answers) ÷ helo native | {:.2}× | | |\n",
        live_median(live, "no filter (the TCP stack answers)") / native
    )?;
    let trafgen = &live["trafgen"];
    writeln!(md, "### The socket path (trafgen)\n")?;
    writeln!(
        md,
        "The same frame sent {} times per arm and round by `trafgen` (netsniff-ng, one process, a \
         packet socket). The measure here is the whole machine's busy time (both cores: user, \
         system, interrupts) per packet the arm processed, so the generator's own per-packet cost \
         is in every arm and the ratios shrink towards 1, or below it: a veth with an XDP program \
         copies every packet a socket sends into a buffer with XDP headroom before the program \
         runs, a cost no NIC driver has (its frames are XDP buffers from the start). This is why \
         the live-frames generator above is the one the goals are read on. {} interleaved rounds.\n",
        trafgen["frames"], trafgen["rounds"]
    )?;
    writeln!(md, "| arm | median ns/packet | min | max |\n|---|---:|---:|---:|")?;
    for a in trafgen["arms"].as_array().context("no trafgen arms")? {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} |",
            a["arm"].as_str().unwrap_or(""),
            a["median"].as_f64().unwrap_or(f64::NAN),
            a["min"].as_f64().unwrap_or(f64::NAN),
            a["max"].as_f64().unwrap_or(f64::NAN)
        )?;
    }
    let t_native = live_median(trafgen, "helo, native XDP");
    writeln!(md, "\n| ratio (socket path) | measured |\n|---|---:|")?;
    writeln!(md, "| nftables ÷ helo native | {:.2}× |", live_median(trafgen, "nftables netdev ingress, payload match") / t_native)?;
    writeln!(md, "| iptables (1 name) ÷ helo native | {:.2}× |", live_median(trafgen, "iptables raw -m string, 1 names") / t_native)?;
    writeln!(md, "| no filter ÷ helo native | {:.2}× |\n", live_median(trafgen, "no filter (the TCP stack answers)") / t_native)?;
    Ok(md)
}

/// The fleet's propagation time (`fleet-latency`).
fn render_fleet(fleet: &Value) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "## Fleet: from a block on one box to the kernel map of another\n")?;
    writeln!(
        md,
        "`fleet-latency`: two boxes (namespaces, agents with native XDP) and a real redis-server in \
         its own namespace. For each of {} entries: `blocklist add` on box A, then box B's admin \
         socket is polled (every 0.2 ms) until the entry is in B's store and kernel map.\n",
        fleet["entries"]
    )?;
    writeln!(md, "| p50 | p99 | min | max |\n|---:|---:|---:|---:|")?;
    writeln!(
        md,
        "| {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
        fleet["p50_ms"].as_f64().unwrap_or(f64::NAN),
        fleet["p99_ms"].as_f64().unwrap_or(f64::NAN),
        fleet["min_ms"].as_f64().unwrap_or(f64::NAN),
        fleet["max_ms"].as_f64().unwrap_or(f64::NAN)
    )?;
    Ok(md)
}

/// The criterion medians.
fn render_criterion(criterion: &[(String, f64)]) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "## Criterion benches (user space)\n")?;
    writeln!(md, "`cargo bench -p helo-benches`: medians.\n")?;
    writeln!(md, "| bench | median |\n|---|---:|")?;
    for (id, ns) in criterion {
        let shown = if *ns >= 1000.0 { format!("{:.2} µs", ns / 1000.0) } else { format!("{ns:.1} ns") };
        writeln!(md, "| {id} | {shown} |")?;
    }
    Ok(md)
}

/// The plots' font, registered once for every plot of the run.
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let font = fs::read(FONT).with_context(|| format!("reading {FONT} (Debian package fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("bad font {FONT}"))?;
    let _ = REGISTERED.set(());
    Ok(())
}

fn plot(xdp: &Value, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    let arms: Vec<(String, f64, f64, f64)> = xdp["arms"]
        .as_array()
        .context("no arms")?
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or("").to_owned(),
                a["median"].as_f64().unwrap_or(0.0),
                a["min"].as_f64().unwrap_or(0.0),
                a["max"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let top = arms.iter().map(|a| a.3).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (1100, 40 + 34 * arms.len() as u32 + 60)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("XDP program cost per packet (BPF_PROG_TEST_RUN), median with min–max", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(430)
        .build_cartesian_2d(0.0..top, (0..arms.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(arms.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => arms.get(*i).map(|a| a.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ns per packet")
        .draw()?;
    chart.draw_series(arms.iter().enumerate().map(|(i, a)| {
        let color = if a.0.starts_with("baseline") {
            RGBColor(150, 150, 150)
        } else if a.0.contains("drop") {
            RGBColor(200, 60, 60)
        } else {
            RGBColor(60, 110, 200)
        };
        Rectangle::new([(0.0, SegmentValue::Exact(i)), (a.1, SegmentValue::Exact(i + 1))], color.filled())
    }))?;
    chart.draw_series(
        arms.iter().enumerate().map(|(i, a)| {
            PathElement::new(vec![(a.2, SegmentValue::CenterOf(i)), (a.3, SegmentValue::CenterOf(i))], BLACK.stroke_width(2))
        }),
    )?;
    root.present()?;
    Ok(())
}

fn spread(v: &Value) -> (f64, f64, f64) {
    (v["median"].as_f64().unwrap_or(f64::NAN), v["min"].as_f64().unwrap_or(f64::NAN), v["max"].as_f64().unwrap_or(f64::NAN))
}

/// `median (min–max)`, with `decimals` places.
fn cell(v: &Value, decimals: usize) -> String {
    let (m, lo, hi) = spread(v);
    format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
}

/// The Tier B sections, from the `sessions` report.
fn render_sessions(s: &Value, flood_plot: &str) -> Result<String> {
    let mut md = String::new();
    let reject = &s["reject"];
    writeln!(md, "\n## Tier B: rejecting first-seen bogus greetings\n")?;
    writeln!(
        md,
        "`sessions reject`: {} sessions per arm and round, {} at a time, each `HELO {}` and its reply; \
         {} interleaved rounds (every other one in reverse order). Each server runs in its own namespace, and its CPU is read from a \
         cpuacct cgroup holding every process there (Postfix's forked smtpd, cleanup and the rest \
         included). Every session must be answered with the arm's rejection, or the run fails. \
         smtp-source (with -A) drives smtp-sink and Postfix; it treats a server that closes after \
         its 5xx as fatal, which the agent does by design, so the agent is driven by the project's \
         own client, which makes the same sessions; it drives the other two as well, for a like-for-like \
         comparison. The agent runs with `--no-xdp`, so every session is judged in user space. The \
         kernel-dropped arm is the repeat of a listed name: XDP drops the greeting, the agent answers \
         the flow from its drop event (the reply twice, in one segment with the FIN, then the flow \
         released so the client's retransmission and FIN are taken in); the veth's receive work, the XDP program's included, \
         is charged to the sending client in every arm alike.\n",
        reject["sessions"],
        reject["parallel"],
        reject["greeting"].as_str().unwrap_or(""),
        reject["rounds"]
    )?;
    writeln!(md, "| server | load from | sessions/s | sessions per CPU-second | CPU µs per session |\n|---|---|---:|---:|---:|")?;
    let mut per_cpu = std::collections::HashMap::new();
    for arm in reject["arms"].as_array().context("no reject arms")? {
        let name = arm["arm"].as_str().unwrap_or("");
        for run in arm["runs"].as_array().context("no runs")? {
            let generator = run["generator"].as_str().unwrap_or("");
            writeln!(
                md,
                "| {name} | {generator} | {} | {} | {:.0} |",
                cell(&run["sessions_per_s"], 0),
                cell(&run["sessions_per_cpu_s"], 0),
                run["cpu_us_per_session"].as_f64().unwrap_or(f64::NAN)
            )?;
            if generator == "project client" {
                per_cpu.insert(
                    name.split_whitespace().next().unwrap_or("").to_owned(),
                    run["sessions_per_cpu_s"]["median"].as_f64().unwrap_or(f64::NAN),
                );
            }
        }
    }
    let agent = per_cpu.get("helo").copied().unwrap_or(f64::NAN);
    let floor = per_cpu.get("smtp-sink").copied().unwrap_or(f64::NAN);
    let postfix = per_cpu.get("Postfix").copied().unwrap_or(f64::NAN);
    writeln!(md, "\n| ratio (sessions per CPU-second, same client) | measured | goal | |\n|---|---:|---|---|")?;
    writeln!(md, "| helo agent ÷ smtp-sink -Q helo | {:.2}× | ≥ 1× | {} |", agent / floor, verdict(agent / floor >= 1.0))?;
    writeln!(md, "| helo agent ÷ Postfix smtpd | {:.2}× | > 1× | {} |", agent / postfix, verdict(agent / postfix > 1.0))?;
    let repeat = per_cpu.get("kernel-dropped").copied().unwrap_or(f64::NAN);
    writeln!(
        md,
        "| kernel-dropped repeat ÷ smtp-sink -Q helo (CPU per repeated bogus session at or below the floor) | {:.2}× | ≥ 1× | {} |\n",
        repeat / floor,
        verdict(repeat / floor >= 1.0)
    )?;

    let flood = &s["flood"];
    writeln!(md, "## Tier B: clean sessions under a flood\n")?;
    writeln!(
        md,
        "`sessions flood`: {} concurrent clients run whole clean transactions (EHLO, MAIL, RCPT, DATA, \
         QUIT) through the agent into a real Postfix for {} s per point, timed from connect to the \
         221, while the project's generator sends `EHLO rad.internal` segments of one flow into the \
         same veth at the target rate (many threads, 128-frame bursts; the generator's program stays \
         attached to a spare veth so each run skips the kernel's dispatcher update). Arms: helo with \
         the name listed in the kernel; helo with `--no-xdp` (the frames reach the TCP stack, which \
         answers with resets); helo `--no-xdp` with an nftables netdev ingress rule dropping them. \
         The arms without helo's filter carry a pass-everything XDP program so that every arm's \
         packets queue through the veth's receive ring, as on a NIC. {} interleaved rounds; every \
         clean message accepted was delivered ({} in all). Offered is what the generator sent, \
         filtered what the arm's dropper counted (for XDP off: every packet that reached the \
         stack, the clean sessions' own included).\n",
        flood["concurrency"], flood["seconds"], flood["rounds"], flood["clean_delivered"]
    )?;
    writeln!(md, "![clean sessions per second under a flood]({flood_plot})\n")?;
    writeln!(md, "| arm | flood target pps | offered pps | filtered pps | clean sessions/s | p50 ms | p99 ms | failed |\n|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut ratios = Vec::new();
    for arm in flood["arms"].as_array().context("no flood arms")? {
        let name = arm["arm"].as_str().unwrap_or("");
        let rates = arm["rates"].as_array().context("no rates")?;
        for r in rates {
            writeln!(
                md,
                "| {name} | {} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} |",
                r["target_pps"],
                r["offered_pps"]["median"].as_f64().unwrap_or(f64::NAN),
                r["filtered_pps"]["median"].as_f64().unwrap_or(f64::NAN),
                cell(&r["sessions_per_s"], 0),
                r["p50_ms"]["median"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"]["median"].as_f64().unwrap_or(f64::NAN),
                r["failed_sessions"]
            )?;
        }
        let at = |pps: u64| {
            rates.iter().find(|r| r["target_pps"] == pps).and_then(|r| r["sessions_per_s"]["median"].as_f64()).unwrap_or(f64::NAN)
        };
        ratios.push((name.to_owned(), at(1_000_000) / at(0)));
    }
    writeln!(md, "\n| clean sessions/s at 1 Mpps ÷ at 0 | measured | goal |\n|---|---:|---|")?;
    for (i, (name, r)) in ratios.iter().enumerate() {
        writeln!(md, "| {name} | {:.0}% | {} |", r * 100.0, if i == 0 { "≥ 90%" } else { "" })?;
    }
    writeln!(
        md,
        "\nRead with the machine in mind: the generator runs on the same two cores, and at 1 Mpps it \
         alone takes about one of them, so every arm loses throughput to it, whatever it filters.\n"
    )?;

    let mem = &s["memory"];
    writeln!(md, "## Tier B: memory per idle session\n")?;
    writeln!(
        md,
        "`sessions memory`: a fresh agent (native XDP) per round; its resident set (VmRSS) is read \
         idle, then with {} sessions open, each connected, banner read, and silent (the agent must \
         hold a socket for every one). Kernel socket buffers are not in the resident set. {} rounds.\n",
        mem["idle_sessions"], mem["rounds"]
    )?;
    writeln!(md, "| baseline KiB | with sessions KiB | bytes per session | goal |\n|---:|---:|---:|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | ≤ 4096 |\n",
        cell(&mem["baseline_kib"], 0),
        cell(&mem["loaded_kib"], 0),
        cell(&mem["bytes_per_session"], 0)
    )?;
    Ok(md)
}

/// Clean sessions per second against the flood rate, one line per arm.
fn plot_flood(flood: &Value, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    let arms = flood["arms"].as_array().context("no flood arms")?;
    #[allow(clippy::type_complexity, reason = "a plot series: label and points")]
    let series: Vec<(String, Vec<(f64, f64, f64, f64)>)> = arms
        .iter()
        .map(|a| {
            let pts = a["rates"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            let (m, lo, hi) = spread(&r["sessions_per_s"]);
                            (r["target_pps"].as_f64().unwrap_or(0.0) / 1e6, m, lo, hi)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (a["arm"].as_str().unwrap_or("").to_owned(), pts)
        })
        .collect();
    let top = series.iter().flat_map(|s| s.1.iter().map(|p| p.3)).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Clean sessions/s under a flood of a listed greeting (median, min–max)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.05..1.05, 0.0..top.max(1.0))?;
    chart.configure_mesh().x_desc("flood, Mpps").y_desc("clean sessions/s").draw()?;
    let colors = [RGBColor(200, 60, 60), RGBColor(120, 120, 120), RGBColor(60, 110, 200)];
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color.stroke_width(1))))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::LowerLeft).draw()?;
    root.present()?;
    Ok(())
}
