//! `cargo xtask lab`: the whole thing, working, with nothing to configure.
//!
//! Builds a sender namespace and an edge namespace (the agent with XDP attached natively to its
//! veth, a real Postfix behind it), drives a mix of traffic for `--duration` seconds while
//! `helo top` shows it, then prints a summary and removes everything it made, on Ctrl-C too.

use std::{
    net::IpAddr,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use helo_testbed::{
    frames::{Frame, TCP_SYN},
    inject::Injector,
    lab::{reply, Lab, LabOptions, DOMAIN, USER},
};
use helo_user::admin::{client::call, protocol::Request};

#[derive(Parser)]
#[command(name = "helo-lab", about = "See helo work: namespaces, the agent, Postfix and a mix of traffic")]
struct Args {
    /// How long to drive traffic, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Print progress lines instead of running `helo top`.
    #[arg(long)]
    no_tui: bool,
    /// Kernel-dropped flood frames per second (injected as XDP frames).
    #[arg(long, default_value_t = 2000)]
    flood_pps: u32,
}

const SENDERS: [&str; 4] = ["198.18.30.10", "198.18.30.11", "198.18.30.12", "198.18.30.13"];
const FLOOD_SOURCE: &str = "198.18.30.66";
const FLOOD_GREETING: &str = "rad.internal";

struct Counts {
    clean_sent: AtomicU64,
    clean_failed: AtomicU64,
    bogus_sessions: AtomicU64,
    bogus_answered: AtomicU64,
    flood_frames: AtomicU64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Postfix's directory (the Maildir, its log and a copy of the agent's) outlives the lab.
    std::env::set_var("HELO_KEEP_TEST_DIRS", "1");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    println!("helo lab: building namespaces, Postfix and the agent ...");
    let lab = Arc::new(Lab::new(LabOptions::default())?);
    for s in SENDERS {
        lab.client.ip(&["addr", "add", &format!("{s}/24"), "dev", &lab.client_end.ifname])?;
    }
    println!(
        "helo lab: agent on {}:25 (XDP native on {}), Postfix behind it; namespaces {} (sender) and {} (edge)",
        lab.edge_end.v4, lab.edge_end.ifname, lab.client.name, lab.edge.name
    );
    let counts = Arc::new(Counts {
        clean_sent: AtomicU64::new(0),
        clean_failed: AtomicU64::new(0),
        bogus_sessions: AtomicU64::new(0),
        bogus_answered: AtomicU64::new(0),
        flood_frames: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let traffic = {
        let (lab, counts, stop) = (Arc::clone(&lab), Arc::clone(&counts), Arc::clone(&stop));
        let flood_pps = args.flood_pps;
        thread::spawn(move || drive(&lab, &counts, &stop, deadline, flood_pps))
    };

    if args.no_tui {
        while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_secs(5).min(deadline.saturating_duration_since(Instant::now())));
            println!(
                "helo lab: {} clean sent, {} bogus sessions answered, {} flood frames injected",
                counts.clean_sent.load(Ordering::Relaxed),
                counts.bogus_answered.load(Ordering::Relaxed),
                counts.flood_frames.load(Ordering::Relaxed)
            );
        }
    } else {
        // The live view owns the terminal until the duration is up (or q / Ctrl-C ends it early).
        // A signal to the lab (SIGTERM, or SIGHUP when its terminal goes away) ends it too: a view
        // whose terminal is gone would never see a key, and the lab would never clean up.
        let mut top = Command::new(helo_testbed::agent::binary()?)
            .args(["top", "--admin-socket"])
            .arg(lab.admin_socket())
            .arg("--state-dir")
            .arg(lab.state_dir())
            .args(["--exit-after", &args.duration.to_string()])
            .spawn()
            .context("running helo top")?;
        let status = loop {
            if let Some(status) = top.try_wait()? {
                break status;
            }
            if stop.load(Ordering::SeqCst) {
                let _ = top.kill();
                let status = top.wait()?;
                // Killed, it could not restore the terminal: leave its screen, show the cursor,
                // and undo raw mode (all harmless when the terminal is gone).
                print!("\x1b[?1049l\x1b[?25h");
                let _ = Command::new("stty").arg("sane").status();
                break status;
            }
            thread::sleep(Duration::from_millis(100));
        };
        if !status.success() && !stop.load(Ordering::SeqCst) {
            eprintln!("helo lab: the live view failed ({status})");
        }
    }
    stop.store(true, Ordering::SeqCst);
    traffic.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    summary(&lab, &counts)?;
    Ok(())
}

/// Clean mail from several senders, every kind of bogus greeting, and a flood of one bogus
/// greeting as XDP frames once the agent has listed it.
fn drive(lab: &Lab, counts: &Counts, stop: &AtomicBool, deadline: Instant, flood_pps: u32) -> Result<()> {
    let my_ip = format!("[{}]", lab.edge_end.v4);
    let bogus = ["203.0.113.9".to_string(), FLOOD_GREETING.to_string(), my_ip, DOMAIN.to_string()];
    let injector = Injector::start(&lab.client, &lab.client_end.ifname)?;
    let mut flood = Frame::tcp(FLOOD_SOURCE.parse::<IpAddr>()?, lab.edge_end.v4.parse()?, format!("EHLO {FLOOD_GREETING}\r\n").as_bytes());
    flood.sport = 45000;
    let mut syn = flood.syn();
    syn.tcp_flags = TCP_SYN;
    let (flood, syn) = (flood.build(), syn.build());
    let mut tick = 0u64;
    let mut flood_listed = false;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let sender = SENDERS[tick as usize % SENDERS.len()];
        match lab.py("send", &["--source", sender, "--attach-bytes", "2000"]) {
            Ok(v) if v["ok"] == true => counts.clean_sent.fetch_add(1, Ordering::Relaxed),
            _ => counts.clean_failed.fetch_add(1, Ordering::Relaxed),
        };
        let greeting = format!("EHLO {}\r\n", bogus[tick as usize % bogus.len()]);
        counts.bogus_sessions.fetch_add(1, Ordering::Relaxed);
        if let Ok(v) = lab.dialog(&[&greeting]) {
            if reply(&v, 0).starts_with("550 5.7.1 Bogus HELO") {
                counts.bogus_answered.fetch_add(1, Ordering::Relaxed);
                flood_listed |= greeting.contains(FLOOD_GREETING);
            }
        }
        if flood_listed {
            // One SYN makes the flow known to the kernel; each copy of the greeting segment is then
            // its first payload, and dropped.
            let per_tick = (flood_pps / 2).max(1);
            injector.send(&syn, 1)?;
            injector.send(&flood, per_tick)?;
            counts.flood_frames.fetch_add(per_tick as u64 + 1, Ordering::Relaxed);
        }
        tick += 1;
        thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    }
    Ok(())
}

fn summary(lab: &Lab, counts: &Counts) -> Result<()> {
    let stats = call(&lab.admin_socket(), &lab.state_dir(), Request::Stats)?.stats.context("no stats")?;
    let sent = counts.clean_sent.load(Ordering::Relaxed);
    let delivered = lab
        .postfix()
        .wait_for_messages(USER, sent as usize, Duration::from_secs(20))
        .map(|m| m.len())
        .unwrap_or_else(|_| lab.postfix().maildir_messages(USER).len());
    let pf_dir = lab.postfix().dir().to_path_buf();
    let _ = std::fs::copy(&lab.agent.log, pf_dir.join("agent.log"));
    let drops = stats.kernel.get("drop_helo").copied().unwrap_or(0) + stats.kernel.get("drop_source").copied().unwrap_or(0);
    println!("\nhelo lab summary");
    println!(
        "  clean messages: {sent} sent, {delivered} delivered{}",
        if sent == delivered as u64 && counts.clean_failed.load(Ordering::Relaxed) == 0 { " (all delivered)" } else { " (MISMATCH)" }
    );
    println!(
        "  bogus sessions: {} sent, {} answered with 550 5.7.1 Bogus HELO ...",
        counts.bogus_sessions.load(Ordering::Relaxed),
        counts.bogus_answered.load(Ordering::Relaxed)
    );
    let rules: Vec<String> = stats.verdicts.iter().filter(|(r, n)| *r != "accept" && **n > 0).map(|(r, n)| format!("{r} {n}")).collect();
    println!("  rejections by rule: {}", rules.join(", "));
    println!("  kernel drops: {drops} ({} flood frames injected as XDP frames)", counts.flood_frames.load(Ordering::Relaxed));
    println!("  Maildir: {}", lab.postfix().maildir(USER).display());
    println!("  logs: {} (Postfix), {} (agent)", pf_dir.join("maillog").display(), pf_dir.join("agent.log").display());
    let json = serde_json::json!({
        "clean_sent": sent,
        "clean_failed": counts.clean_failed.load(Ordering::Relaxed),
        "delivered": delivered,
        "rejections": stats.verdicts.iter().filter(|(r, _)| *r != "accept").collect::<std::collections::BTreeMap<_, _>>(),
        "kernel_drops": drops,
        "dir": pf_dir,
    });
    println!("LAB-SUMMARY {json}");
    Ok(())
}
