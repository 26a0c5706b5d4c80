//! Operations end to end: metrics after a scenario, a restart on pinned maps, expiry, kill -9 in
//! the middle of a burst of blocks, a refused non-root admin call, an all-or-nothing import, and
//! check-config. Each test runs its own lab (namespaces, agent with native XDP, Postfix).

use std::{
    collections::HashSet,
    io::Write,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use helo_common::maps::{counter, names, BlockEntry};
use helo_tests::{
    kernel_state,
    lab::{reply, Lab, LabOptions, CLIENT_SCRIPT},
    privilege::require_root,
};
use serde_json::Value;

/// The value of one sample line (`name{labels} value`) in a Prometheus text exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

fn listed(lab: &Lab) -> Result<Vec<Value>> {
    let out = lab.blocklist(&["list", "--json"])?;
    assert!(out.status.success(), "blocklist list failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice::<Vec<Value>>(&out.stdout)?)
}

fn listed_names(lab: &Lab) -> Result<HashSet<String>> {
    Ok(listed(lab)?.iter().map(|e| e["name"].as_str().unwrap_or("").to_string()).collect())
}

/// Entries in the pinned HELO map.
fn kernel_helo_entries(lab: &Lab) -> Result<usize> {
    let data = MapData::from_pin(lab.pin_dir().join(names::HELO_BLOCKS))?;
    let map: BpfHashMap<MapData, u64, BlockEntry> = BpfHashMap::try_from(Map::LruHashMap(data))?;
    Ok(map.keys().count())
}

#[test]
fn metrics_match_what_was_sent() -> Result<()> {
    if !require_root("metrics_match_what_was_sent") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    // The lab's readiness probe was a session too: wait until the agent has counted and closed
    // it, then compare against that scrape.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let text = lab.scrape()?;
        if sample(&text, "helo_sessions_total").unwrap_or(0.0) >= 1.0 && sample(&text, "helo_sessions_active") == Some(0.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the readiness probe's session never ended:\n{text}");
        thread::sleep(Duration::from_millis(50));
    };
    let delta = |text: &str, name: &str| sample(text, name).unwrap_or(0.0) - sample(&before, name).unwrap_or(0.0);
    // One rejection, one kernel drop of the same greeting, one clean session.
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(lab.py("send", &["--attach-bytes", "1000"])?["ok"], true);
    thread::sleep(Duration::from_millis(300));
    let text = lab.scrape()?;
    for help in ["# HELP helo_kernel_packets", "# HELP helo_sessions", "# HELP helo_classify_duration_seconds"] {
        assert!(text.contains(help), "missing {help} in:\n{text}");
    }
    assert!(delta(&text, r#"helo_kernel_packets_total{outcome="drop_helo"}"#) >= 1.0, "{text}");
    assert_eq!(delta(&text, r#"helo_verdicts_total{rule="bogus_helo"}"#), 1.0, "{text}");
    // The clean session is classified twice: at its greeting and at its RCPT.
    assert_eq!(delta(&text, r#"helo_verdicts_total{rule="accept"}"#), 2.0, "{text}");
    assert_eq!(delta(&text, "helo_classify_duration_seconds_count"), 3.0, "{text}");
    assert_eq!(delta(&text, "helo_sessions_total"), 3.0, "{text}");
    assert_eq!(delta(&text, "helo_hand_offs_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "helo_sessions_active"), Some(0.0), "{text}");
    assert_eq!(sample(&text, r#"helo_blocklist_entries{kind="helo"}"#), Some(1.0), "{text}");
    assert_eq!(delta(&text, "helo_blocklist_added_total"), 1.0, "{text}");
    assert!(text.contains(r#"helo_xdp_info{mode="native""#), "{text}");
    assert!(delta(&text, r#"helo_blocklist_hits_total{kind="helo"}"#) >= 1.0, "{text}");
    Ok(())
}

#[test]
fn a_restarted_agent_keeps_filtering_on_the_pinned_maps() -> Result<()> {
    if !require_root("a_restarted_agent_keeps_filtering_on_the_pinned_maps") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions::default())?;
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let prog = kernel_state::program_id_from_log(&lab.agent.log_text()).unwrap();
    lab.agent.stop()?;
    // The agent is down: the program and its maps are still there, pinned.
    assert!(kernel_state::counters(prog).is_ok(), "the program went away with the agent");
    assert_eq!(kernel_helo_entries(&lab)?, 1);
    lab.restart_agent("agent2.log")?;
    assert!(lab.agent.log_text().contains("reattached to the pinned XDP link"), "{}", lab.agent.log_text());
    let before = lab.counters()?;
    // The first greeting after the restart is dropped in the kernel, and answered from the store.
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert!(lab.counters()?.since(&before).get(counter::DROP_HELO) >= 1);
    assert!(!lab.agent.log_text().contains("rejected by"), "the greeting reached the restarted agent");
    assert_eq!(listed_names(&lab)?, HashSet::from(["localhost".to_string()]));
    Ok(())
}

#[test]
fn expired_entries_leave_the_store_and_the_kernel() -> Result<()> {
    if !require_root("expired_entries_leave_the_store_and_the_kernel") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { agent_args: vec!["--expire-interval-s".into(), "1".into()], with_postfix: false, ..Default::default() })?;
    let out = lab.blocklist(&["add", "short.example.com", "--ttl", "2s", "--reason", "test"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lab.blocklist(&["add", "long.example.com", "--ttl", "1h"])?;
    assert!(out.status.success());
    assert_eq!(kernel_helo_entries(&lab)?, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed_names(&lab)?.contains("short.example.com") {
        assert!(Instant::now() < deadline, "the entry did not expire");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed_names(&lab)?, HashSet::from(["long.example.com".to_string()]));
    assert_eq!(kernel_helo_entries(&lab)?, 1, "the expired entry is still in the kernel");
    Ok(())
}

#[test]
fn kill_9_in_a_burst_of_blocks_loses_nothing_acknowledged() -> Result<()> {
    if !require_root("kill_9_in_a_burst_of_blocks_loses_nothing_acknowledged") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions {
        agent_args: vec!["--max-sessions-per-source".into(), "500".into()],
        with_postfix: false,
        ..Default::default()
    })?;
    let (client_ns, server) = (lab.client.name.clone(), lab.edge_end.v4.clone());
    let burst = thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &client_ns, "python3", CLIENT_SCRIPT, "flood", "--server", &server])
            .args(["--count", "150", "--timeout", "5", "--helo-template", "burst{i}"])
            .output()
    });
    // Kill the agent while the burst is being rejected.
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.agent.log_text().matches("rejected by").count() < 20 {
        assert!(Instant::now() < deadline, "the burst never started");
        thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill on our own child.
    unsafe { libc::kill(lab.agent.pid() as i32, libc::SIGKILL) };
    let out = burst.join().unwrap()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let acknowledged: HashSet<String> = v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_str() == Some("550 5.7.1 Bogus HELO\r\n"))
        .map(|(i, _)| format!("burst{i}"))
        .collect();
    assert!(!acknowledged.is_empty());
    lab.restart_agent("agent2.log")?;
    let stored = listed_names(&lab)?;
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    println!("{} rejections acknowledged before the kill, {} entries stored", acknowledged.len(), stored.len());
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    Ok(())
}

#[test]
fn a_non_root_admin_call_is_refused() -> Result<()> {
    if !require_root("a_non_root_admin_call_is_refused") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    let bin = helo_tests::agent::binary()?;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["blocklist", "--admin-socket"])
        .arg(lab.admin_socket())
        .arg("--state-dir")
        .arg(lab.state_dir())
        .arg("list")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied") && err.contains("need root"), "unclear refusal: {err}");
    Ok(())
}

#[test]
fn import_is_all_or_nothing_and_names_the_bad_line() -> Result<()> {
    if !require_root("import_is_all_or_nothing_and_names_the_bad_line") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    let path = lab.dir.path().join("import.jsonl");
    let good = |name: &str| {
        format!(r#"{{"kind":"helo","name":"{name}","reason":"imported","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0,"origin":"operator"}}"#)
    };
    let mut f = std::fs::File::create(&path)?;
    writeln!(f, "{}", good("one.example.com"))?;
    writeln!(f, "{}", good("two.example.com"))?;
    writeln!(f, r#"{{"kind":"helo","name":"three.example.com","reply":"#)?;
    drop(f);
    let out = lab.blocklist(&["import", path.to_str().unwrap()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3"), "the error does not name the line: {err}");
    assert!(listed_names(&lab)?.is_empty(), "a failed import applied something");
    assert_eq!(kernel_helo_entries(&lab)?, 0);
    // Fixed, it goes in whole, and export gives it back.
    std::fs::write(&path, format!("{}\n{}\n", good("one.example.com"), good("two.example.com")))?;
    assert!(lab.blocklist(&["import", path.to_str().unwrap()])?.status.success());
    assert_eq!(kernel_helo_entries(&lab)?, 2);
    let export = lab.blocklist(&["export"])?;
    assert_eq!(String::from_utf8_lossy(&export.stdout).lines().count(), 2);
    // del by name, in any spelling.
    assert!(lab.blocklist(&["del", "ONE.example.com."])?.status.success());
    assert_eq!(listed_names(&lab)?, HashSet::from(["two.example.com".to_string()]));
    Ok(())
}

#[test]
fn check_config_resolves_good_files_and_refuses_bad_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "hostname = \"mx.example.com\"\nserver-ip = [\"203.0.113.25\"]\n[classifier]\nrelay_cidrs = [\"198.18.0.0/15\"]\n")?;
    let bin = helo_tests::agent::binary()?;
    let out = Command::new(&bin).arg("check-config").arg(&good).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("backend = \"127.0.0.1:10025\""), "defaults not resolved: {text}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "hostname = \"mx.example.com\"\nlisten-on = 25\n")?;
    let out = Command::new(&bin).arg("check-config").arg(&bad).output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen-on") && err.lines().count() == 1, "{err}");
    Ok(())
}

#[test]
fn entries_a_full_kernel_map_evicted_are_found_and_counted() -> Result<()> {
    if !require_root("entries_a_full_kernel_map_evicted_are_found_and_counted") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("small.toml");
    std::fs::write(&conf, "helo-capacity = 64\n")?;
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), conf.display().to_string(), "--reconcile-interval-s".into(), "1".into()],
        with_postfix: false,
        ..Default::default()
    })?;
    let path = lab.dir.path().join("many.jsonl");
    let lines: Vec<String> = (0..400)
        // Agent listings (origin "agent"): only those are dropped when evicted; an operator's are
        // put back (tests/tests/state_e2e.rs).
        .map(|i| format!(r#"{{"kind":"helo","name":"n{i}.example.com","reason":"t","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0,"origin":"agent"}}"#))
        .collect();
    std::fs::write(&path, lines.join("\n"))?;
    assert!(lab.blocklist(&["import", path.to_str().unwrap()])?.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = lab.scrape()?;
        let evicted = sample(&text, "helo_blocklist_evicted_total").unwrap_or(0.0);
        if evicted > 0.0 {
            let listed = listed(&lab)?.len();
            assert_eq!(listed as f64 + evicted, 400.0, "listed {listed} + evicted {evicted} != 400");
            assert_eq!(kernel_helo_entries(&lab)?, listed, "the store and the kernel disagree");
            break;
        }
        assert!(Instant::now() < deadline, "no eviction was found:\n{text}");
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
fn detach_removes_the_filter_and_the_pins() -> Result<()> {
    if !require_root("detach_removes_the_filter_and_the_pins") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    lab.agent.stop()?;
    let shown = |lab: &Lab| -> Result<String> { Ok(String::from_utf8_lossy(&lab.edge.ip(&["link", "show", &lab.edge_end.ifname])?.stdout).into_owned()) };
    assert!(shown(&lab)?.contains("xdp"), "the filter should stay attached while the agent is down");
    let out = lab.cli(&["detach", "--pin-dir", lab.pin_dir().to_str().unwrap()])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lab.pin_dir().exists());
    assert!(!shown(&lab)?.contains("xdp"), "the filter is still attached: {}", shown(&lab)?);
    Ok(())
}

#[test]
fn a_listed_network_cannot_connect_until_it_is_removed() -> Result<()> {
    if !require_root("a_listed_network_cannot_connect_until_it_is_removed") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    let out = lab.blocklist(&["add", "198.18.30.7/24"])?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("198.18.30.0/24"), "host bits must be refused");
    let out = lab.blocklist(&["add", "198.18.30.0/24", "--reason", "test net"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listed_names(&lab)?.contains("198.18.30.0/24"));
    let before = lab.counters()?;
    let r = lab.py("dialog", &["--line", "EHLO ok.example.org\r\n", "--timeout", "2"]);
    assert!(r.is_err(), "a client of a listed network connected: {r:?}");
    assert!(lab.counters()?.since(&before).get(counter::DROP_SOURCE) >= 1);
    assert!(lab.blocklist(&["del", "198.18.30.0/24"])?.status.success());
    let r = lab.dialog(&["QUIT\r\n"])?;
    assert!(reply(&r, 0).starts_with("221"), "{r}");
    Ok(())
}
