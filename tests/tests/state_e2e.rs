//! The store is the truth and the kernel follows it, end to end: a real agent with native XDP,
//! its pins on a private bpffs, admin commands with the agent up and down, restarts. Offline
//! deletes and allow-list removals hold across a restart; an operator entry survives a flood of
//! invented names in a small map; an 8-bit greeting is listed under its bytes and dropped in the
//! kernel on its repeat.

use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use helo_common::maps::{counter, names};
use helo_testbed::{
    lab::{one_source_many_names, reply, Lab, LabOptions, ONE_SOURCE_MANY_NAMES},
    privilege::require_root,
};
use helo_user::kernel::helo_table::HeloTable;
use serde_json::Value;

fn listed_names(lab: &Lab) -> Result<HashSet<String>> {
    let out = lab.blocklist(&["list", "--json"])?;
    assert!(out.status.success(), "blocklist list failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice::<Vec<Value>>(&out.stdout)?.iter().map(|e| e["name"].as_str().unwrap_or("").to_string()).collect())
}

fn kernel_helo_entries(lab: &Lab) -> Result<usize> {
    Ok(HeloTable::open_pinned(&lab.pin_dir().join(names::HELO_TABLE))?.keys().len())
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

const BOGUS: &str = "550 5.7.1 Bogus HELO\r\n";

#[test]
fn an_offline_delete_holds_across_a_restart() -> Result<()> {
    if !require_root("an_offline_delete_holds_across_a_restart") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    ok(lab.blocklist(&["add", "op.example.com", "--reason", "test"])?);
    ok(lab.blocklist(&["add", "ghost.example.com", "--reason", "test"])?);
    assert_eq!(reply(&lab.dialog(&["EHLO op.example.com\r\n"])?, 0), BOGUS);
    lab.agent.stop()?;

    // Agent down: the delete reaches the pinned map, and says so.
    let out = ok(lab.blocklist(&["del", "OP.example.com."])?);
    assert!(String::from_utf8_lossy(&out.stderr).contains("maps pinned"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kernel_helo_entries(&lab)?, 1);
    // A delete that reached the store only (an older version's, or one given the wrong pin
    // directory) leaves a ghost in the kernel, which the restart must remove.
    let elsewhere = lab.dir.path().join("not-pins");
    let out = ok(lab.cli(&[
        "blocklist",
        "--admin-socket",
        lab.admin_socket().to_str().unwrap(),
        "--state-dir",
        lab.state_dir().to_str().unwrap(),
        "--pin-dir",
        elsewhere.to_str().unwrap(),
        "del",
        "ghost.example.com",
    ])?);
    assert!(String::from_utf8_lossy(&out.stderr).contains("store only"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kernel_helo_entries(&lab)?, 1, "the ghost is still in the kernel");

    lab.restart_agent("agent2.log")?;
    assert_eq!(kernel_helo_entries(&lab)?, 0, "{}", lab.agent.log_text());
    assert!(listed_names(&lab)?.is_empty());
    let before = lab.counters()?;
    for name in ["op.example.com", "ghost.example.com"] {
        // Not dropped and not refused: a clean name reaches the agent, which finds no MTA here.
        let r = lab.dialog(&[&format!("EHLO {name}\r\n")])?;
        assert!(reply(&r, 0).starts_with("421"), "{name}: {r}");
    }
    assert_eq!(lab.counters()?.since(&before).get(counter::DROP_HELO), 0);
    // Nothing is left for `del` to find: it says so.
    assert!(!lab.blocklist(&["del", "ghost.example.com"])?.status.success());
    Ok(())
}

#[test]
fn a_network_removed_from_the_allow_list_is_no_longer_exempt_after_a_restart() -> Result<()> {
    if !require_root("a_network_removed_from_the_allow_list_is_no_longer_exempt_after_a_restart") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("allow.toml");
    std::fs::write(&conf, "[classifier]\nrelay_cidrs = [\"198.18.30.0/24\"]\n")?;
    let mut lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), conf.display().to_string()],
        with_postfix: false,
        ..Default::default()
    })?;
    let client = lab.client_end.v4.clone();
    ok(lab.blocklist(&["add", &client, "--reason", "test"])?);
    // Allowed: the listed client still connects.
    assert!(reply(&lab.dialog(&["QUIT\r\n"])?, 0).starts_with("221"));
    lab.agent.stop()?;
    let i = lab.args.iter().position(|a| a == "--config").unwrap();
    lab.args.drain(i..i + 2);
    lab.restart_agent("agent2.log")?;
    let before = lab.counters()?;
    // No longer exempt: the listed client is answered (the ladder's 3 answers, a 554 banner), then
    // dropped at SYN.
    for _ in 0..3 {
        let r = lab.dialog(&["QUIT\r\n"])?;
        assert!(r["banner"].as_str().unwrap_or("").starts_with("554 5.7.1 "), "not refused although no longer allowed: {r}");
    }
    let r = lab.py("dialog", &["--line", "QUIT\r\n", "--timeout", "2"]);
    assert!(r.is_err(), "the client connected although its network is no longer allowed: {r:?}");
    assert!(lab.counters()?.since(&before).get(counter::DROP_SOURCE) >= 1);
    Ok(())
}

#[test]
fn an_operator_entry_outlives_a_flood_of_invented_names_in_a_small_map() -> Result<()> {
    if !require_root("an_operator_entry_outlives_a_flood_of_invented_names_in_a_small_map") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("small.toml");
    std::fs::write(&conf, format!("helo-capacity = 64\n{ONE_SOURCE_MANY_NAMES}"))?;
    let lab = Lab::new(LabOptions {
        agent_args: vec![
            "--config".into(),
            conf.display().to_string(),
            "--reconcile-interval-s".into(),
            "1".into(),
            "--max-sessions-per-source".into(),
            "500".into(),
        ],
        with_postfix: false,
        ..Default::default()
    })?;
    ok(lab.blocklist(&["add", "op.example.com", "--reason", "operator"])?);
    let out = lab
        .client
        .command("python3")
        .arg(helo_testbed::lab::CLIENT_SCRIPT)
        .args(["flood", "--server", &lab.edge_end.v4, "--count", "200", "--timeout", "5", "--helo-template", "invented{i}"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Whatever the flood evicted, the reconcile (every second) puts the operator entry back.
    thread::sleep(Duration::from_millis(2500));
    assert!(listed_names(&lab)?.contains("op.example.com"), "the operator entry left the store");
    ok(lab.blocklist(&["get", "op.example.com"])?);
    let before = lab.counters()?;
    assert_eq!(reply(&lab.dialog(&["EHLO op.example.com\r\n"])?, 0), BOGUS);
    assert!(lab.counters()?.since(&before).get(counter::DROP_HELO) >= 1, "the operator entry is not in the kernel");
    let metrics = lab.scrape()?;
    assert!(metrics.contains("helo_blocklist_reconciled_total"), "{metrics}");
    Ok(())
}

#[test]
fn an_eight_bit_greeting_is_listed_byte_for_byte_and_dropped_on_its_repeat() -> Result<()> {
    if !require_root("an_eight_bit_greeting_is_listed_byte_for_byte_and_dropped_on_its_repeat") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    // The client's dialog lines take \xNN escapes: this is the Latin-1 byte 0xE9.
    let greeting = "EHLO Caf\\xe9.example.com\r\n";
    assert_eq!(reply(&lab.dialog(&[greeting])?, 0), BOGUS);
    assert_eq!(listed_names(&lab)?, HashSet::from(["caf\\xe9.example.com".to_string()]));
    let before = lab.counters()?;
    assert_eq!(reply(&lab.dialog(&[greeting])?, 0), BOGUS, "the repeat must still be answered");
    assert!(lab.counters()?.since(&before).get(counter::DROP_HELO) >= 1, "the repeat was not dropped in the kernel");
    assert_eq!(lab.agent.log_text().matches(" scope=").count(), 1, "the repeat reached the agent");
    // get and del take the same escape, in any case.
    ok(lab.blocklist(&["get", "CAF\\xE9.example.com"])?);
    ok(lab.blocklist(&["del", "caf\\xe9.example.com."])?);
    let deadline = Instant::now() + Duration::from_secs(2);
    while kernel_helo_entries(&lab)? != 0 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_full_state_filesystem_withdraws_listings_and_recovers_without_a_restart() -> Result<()> {
    if !require_root("a_full_state_filesystem_withdraws_listings_and_recovers_without_a_restart") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let lab = Lab::new(LabOptions {
        agent_args: one_source_many_names(dir.path())?,
        with_postfix: false,
        state_fs: Some("2m".into()),
        ..Default::default()
    })?;
    ok(lab.blocklist(&["add", "before.example.com"])?);
    let filler = lab.state_fs.as_ref().unwrap().fill()?;
    let count = 150;
    let out = lab
        .client
        .command("python3")
        .arg(helo_testbed::lab::CLIENT_SCRIPT)
        .args(["flood", "--server", &lab.edge_end.v4, "--count", &count.to_string(), "--timeout", "5", "--helo-template", "full{i}"])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let replies = v["replies"].as_array().unwrap();
    assert_eq!(replies.len(), count);
    assert!(replies.iter().all(|r| r.as_str() == Some(BOGUS)), "every sender still reads its reply: {v}");
    let metrics = lab.scrape()?;
    assert!(metrics.lines().any(|l| l.starts_with("helo_store_errors_total ") && !l.ends_with(" 0")), "{metrics}");
    // No listing the store does not know: what failed left the kernel again.
    assert!(kernel_helo_entries(&lab)? < count + 1, "every listing stayed in the kernel although the store was full");
    assert_eq!(
        lab.agent.log_text().matches("store: cannot commit listings").count(),
        1,
        "logged once per episode:\n{}",
        lab.agent.log_text()
    );

    // Space comes back: no restart, the pending listings reach the store and the kernel again.
    std::fs::remove_file(filler)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = lab.blocklist(&["list", "--json"])?;
        if listed.status.success() && serde_json::from_slice::<Vec<Value>>(&listed.stdout)?.len() == count + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "pending listings were not committed: {}", String::from_utf8_lossy(&listed.stderr));
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(kernel_helo_entries(&lab)?, count + 1);
    ok(lab.blocklist(&["add", "after.example.com"])?);
    assert!(listed_names(&lab)?.contains("after.example.com"));
    // The episode ends once the store has worked for 10 s: logged once, too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab.agent.log_text().contains("store: working again") {
        assert!(Instant::now() < deadline, "{}", lab.agent.log_text());
        thread::sleep(Duration::from_millis(200));
    }
    let log = lab.agent.log_text();
    assert_eq!(log.matches("store: cannot commit listings").count(), 1, "{log}");
    assert_eq!(log.matches("store: working again").count(), 1, "{log}");
    Ok(())
}

#[test]
fn kill_9_in_a_mixed_burst_leaves_the_store_and_the_kernel_equal() -> Result<()> {
    if !require_root("kill_9_in_a_mixed_burst_leaves_the_store_and_the_kernel_equal") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new(LabOptions { agent_args: one_source_many_names(dir.path())?, with_postfix: false, ..Default::default() })?;
    let (client_ns, server) = (lab.client.name.clone(), lab.edge_end.v4.clone());
    let burst = thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &client_ns, "python3", helo_testbed::lab::CLIENT_SCRIPT, "flood", "--server", &server])
            .args(["--count", "150", "--timeout", "5", "--helo-template", "mix{i}"])
            .output()
    });
    // Operator changes meanwhile: add op{i}, and delete the even ones again. Those made after the
    // kill go to the store and the pinned maps directly.
    let blocklist_args = {
        let lab_dir = lab.dir.path().to_owned();
        move |args: &[&str]| {
            let mut full = vec![
                "blocklist".to_string(),
                "--admin-socket".into(),
                helo_testbed::lab::agent_admin_socket(&lab_dir).display().to_string(),
                "--state-dir".into(),
                helo_testbed::lab::agent_state_dir(&lab_dir).display().to_string(),
                "--pin-dir".into(),
                lab_dir.join("bpffs/helo").display().to_string(),
            ];
            full.extend(args.iter().map(|s| s.to_string()));
            std::process::Command::new(helo_testbed::agent::binary().unwrap()).args(&full).output().unwrap()
        }
    };
    let operator = thread::spawn(move || {
        let (mut kept, mut gone) = (HashSet::new(), HashSet::new());
        for i in 0..40 {
            let name = format!("op{i}.example.com");
            if !blocklist_args(&["add", &name]).status.success() {
                continue;
            }
            if i % 2 == 0 && blocklist_args(&["del", &name]).status.success() {
                gone.insert(name);
            } else {
                kept.insert(name);
            }
        }
        (kept, gone)
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.agent.log_text().matches(" scope=").count() < 20 {
        assert!(Instant::now() < deadline, "the burst never started");
        thread::sleep(Duration::from_millis(5));
    }
    // A rejection is logged before its listing is durable and its reply written: give the first
    // ones time to be acknowledged before the kill (a group commit takes milliseconds).
    thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on our own child.
    unsafe { libc::kill(lab.agent.pid() as i32, libc::SIGKILL) };
    // Gone for good before anything reopens its store or its port: its threads hold both for a
    // moment after the signal.
    lab.agent.wait_exit(Duration::from_secs(10))?;
    let out = burst.join().unwrap()?;
    let (kept, gone) = operator.join().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let acknowledged: HashSet<String> = v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_str() == Some(BOGUS))
        .map(|(i, _)| format!("mix{i}"))
        .collect();
    lab.restart_agent("agent2.log")?;
    let stored = listed_names(&lab)?;
    println!("{} rejections and {} operator adds acknowledged, {} entries stored", acknowledged.len(), kept.len(), stored.len());
    assert!(acknowledged.is_subset(&stored), "acknowledged but lost: {:?}", acknowledged.difference(&stored).collect::<Vec<_>>());
    assert!(kept.is_subset(&stored), "operator adds lost: {:?}", kept.difference(&stored).collect::<Vec<_>>());
    assert!(gone.is_disjoint(&stored), "operator deletes undone: {:?}", gone.intersection(&stored).collect::<Vec<_>>());
    assert_eq!(kernel_helo_entries(&lab)?, stored.len(), "the store and the kernel disagree after the restart");
    Ok(())
}
