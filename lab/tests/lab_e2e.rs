//! The lab (`cargo xtask lab` runs the same `helo-lab` binary after its setup and build) and the
//! live view, `helo top`, under tmux.

use std::{
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use helo_testbed::{
    frames::Frame,
    inject::Injector,
    lab::{reply, Lab, LabOptions},
    privilege::require_root,
};
use serde_json::Value;

#[test]
fn the_lab_delivers_clean_mail_rejects_every_kind_and_drops_in_the_kernel() -> Result<()> {
    if !require_root("the_lab_delivers_clean_mail_rejects_every_kind_and_drops_in_the_kernel") {
        return Ok(());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_helo-lab")).args(["--duration", "10", "--no-tui"]).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the lab failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("LAB-SUMMARY ")).context("no summary line")?;
    let s: Value = serde_json::from_str(line)?;
    println!("{stdout}");
    assert!(s["clean_sent"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["clean_failed"], 0, "{s}");
    assert_eq!(s["delivered"], s["clean_sent"], "not every clean message was delivered: {s}");
    for rule in ["bogus_helo", "helo_is_my_ip", "helo_matches_rcpt"] {
        assert!(s["rejections"][rule].as_u64().unwrap_or(0) > 0, "no {rule} rejection seen: {s}");
    }
    assert!(s["kernel_drops"].as_u64().unwrap() > 0, "{s}");
    // Nothing left behind: the lab's namespaces (named after its pid), processes and mounts.
    let dir = s["dir"].as_str().unwrap().to_string();
    let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output()?.stdout).into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    assert!(!mounts.contains(&dir), "a mount of the lab is left: {mounts}");
    let ps = String::from_utf8_lossy(&Command::new("ps").args(["-eo", "args"]).output()?.stdout).into_owned();
    assert!(!ps.lines().any(|l| l.contains(&dir)), "a process of the lab is left:\n{ps}");
    assert!(!ns.lines().any(|l| stdout.contains(l.split_whitespace().next().unwrap_or("-"))), "a namespace of the lab is left: {ns}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The number after `label` on the captured screen.
fn rate_after(screen: &str, label: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains(label))?;
    line.split(label).nth(1)?.split_whitespace().next()?.trim_matches(|c: char| !c.is_ascii_digit() && c != '.').parse().ok()
}

#[test]
fn top_shows_nonzero_rates_in_an_80x24_terminal() -> Result<()> {
    if !require_root("top_shows_nonzero_rates_in_an_80x24_terminal") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    assert_eq!(reply(&lab.dialog(&["EHLO rad.internal\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let session = format!("helo-top-{}", std::process::id());
    let top = format!(
        "{} top --admin-socket {} --state-dir {} --exit-after 20",
        helo_testbed::agent::binary()?.display(),
        lab.admin_socket().display(),
        lab.state_dir().display()
    );
    let status = Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "80", "-y", "24", &top]).status()?;
    assert!(status.success());
    struct Tmux(String);
    impl Drop for Tmux {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
        }
    }
    let _tmux = Tmux(session.clone());
    // A flood of the listed greeting, as XDP frames, for a few seconds.
    let injector = Injector::start(&lab.client, &lab.client_end.ifname)?;
    let mut f = Frame::tcp("198.18.30.66".parse::<IpAddr>()?, lab.edge_end.v4.parse()?, b"EHLO rad.internal\r\n");
    f.sport = 45000;
    let (syn, flood) = (f.syn().build(), f.build());
    let mut screen = String::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        injector.send(&syn, 1)?;
        injector.send(&flood, 500)?;
        thread::sleep(Duration::from_millis(250));
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &session]).output()?;
        screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if rate_after(&screen, "dropped by HELO").unwrap_or(0.0) > 0.0 && screen.contains("rad.internal") {
            break;
        }
    }
    println!("{screen}");
    assert!(screen.contains("helo top"), "top is not on screen:\n{screen}");
    assert!(rate_after(&screen, "dropped by HELO").unwrap_or(0.0) > 0.0, "no kernel drop rate on screen:\n{screen}");
    assert!(screen.contains("rad.internal"), "the top blocked name is not on screen:\n{screen}");
    assert!(screen.lines().count() <= 24 && screen.lines().all(|l| l.chars().count() <= 80));
    Ok(())
}
