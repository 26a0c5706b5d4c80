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

use anyhow::{Context, Result};
use helo_common::maps::{counter, names};
use helo_testbed::{
    kernel_state,
    lab::{one_source_many_names, reply, Lab, LabOptions, CLIENT_SCRIPT},
    privilege::require_root,
};
use helo_user::kernel::helo_table::HeloTable;
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

/// Entries in the pinned HELO table.
fn kernel_helo_entries(lab: &Lab) -> Result<usize> {
    Ok(HeloTable::open_pinned(&lab.pin_dir().join(names::HELO_TABLE))?.keys().len())
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
    assert!(!lab.agent.log_text().contains(" scope="), "the greeting reached the restarted agent");
    assert_eq!(listed_names(&lab)?, HashSet::from(["localhost".to_string()]));
    Ok(())
}

#[test]
fn expired_entries_leave_the_store_and_the_kernel() -> Result<()> {
    if !require_root("expired_entries_leave_the_store_and_the_kernel") {
        return Ok(());
    }
    let lab =
        Lab::new(LabOptions { agent_args: vec!["--expire-interval-s".into(), "1".into()], with_postfix: false, ..Default::default() })?;
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
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new(LabOptions { agent_args: one_source_many_names(dir.path())?, with_postfix: false, ..Default::default() })?;
    let (client_ns, server) = (lab.client.name.clone(), lab.edge_end.v4.clone());
    let burst = thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &client_ns, "python3", CLIENT_SCRIPT, "flood", "--server", &server])
            .args(["--count", "150", "--timeout", "5", "--helo-template", "burst{i}"])
            .output()
    });
    // Kill the agent while the burst is being rejected.
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
    let bin = helo_testbed::agent::binary()?;
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
        format!(
            r#"{{"kind":"helo","name":"{name}","reason":"imported","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0,"origin":"operator"}}"#
        )
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
    std::fs::write(
        &good,
        "iface = \"eth1\"\nhostname = \"mx.example.com\"\nserver-ip = [\"203.0.113.25\"]\n[classifier]\nrelay_cidrs = [\"198.18.0.0/15\"]\n",
    )?;
    let bin = helo_testbed::agent::binary()?;
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
    // The rule `run` holds a configuration to: an interface or no-xdp, exactly one of them.
    for (body, said) in [
        ("hostname = \"mx.example.com\"\n", "--iface is required"),
        ("iface = \"eth1\"\nno-xdp = true\nhostname = \"mx.example.com\"\n", "contradict each other"),
    ] {
        std::fs::write(&bad, body)?;
        let out = Command::new(&bin).arg("check-config").arg(&bad).output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body:?}: {err}");
        assert!(err.contains(said) && err.lines().count() == 1 && out.stdout.is_empty(), "{body:?}: {err}");
    }
    std::fs::write(&bad, "no-xdp = true\nhostname = \"mx.example.com\"\n")?;
    assert!(Command::new(&bin).arg("check-config").arg(&bad).output()?.status.success());
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
            // The table's fill, as the agent reports it: a table for 64 names has 128 slots.
            let text = lab.scrape()?;
            assert_eq!(sample(&text, "helo_kernel_helo_table_slots"), Some(128.0), "{text}");
            assert_eq!(sample(&text, "helo_kernel_helo_table_used"), Some(listed as f64), "{text}");
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
    let shown = |lab: &Lab| -> Result<String> {
        Ok(String::from_utf8_lossy(&lab.edge.ip(&["link", "show", &lab.edge_end.ifname])?.stdout).into_owned())
    };
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
    // Answered first (the ladder's `answers`, 3 by default: a 554 banner with the entry's words),
    // then dropped at SYN.
    for _ in 0..3 {
        let r = lab.dialog(&["QUIT\r\n"])?;
        assert!(r["banner"].as_str().unwrap_or("").starts_with("554 5.7.1 "), "{r}");
        assert_eq!(reply(&r, 0), "221 2.0.0 Bye\r\n", "{r}");
    }
    let r = lab.py("dialog", &["--line", "EHLO ok.example.org\r\n", "--timeout", "2"]);
    assert!(r.is_err(), "a client of a listed network connected: {r:?}");
    assert!(lab.counters()?.since(&before).get(counter::DROP_SOURCE) >= 1);
    assert!(lab.blocklist(&["del", "198.18.30.0/24"])?.status.success());
    let r = lab.dialog(&["QUIT\r\n"])?;
    assert!(reply(&r, 0).starts_with("221"), "{r}");
    Ok(())
}

#[test]
fn stock_prometheus_scrapes_the_agent_and_promtool_accepts_it() -> Result<()> {
    use helo_testbed::prometheus::{http_get, promtool, Prometheus};
    if !require_root("stock_prometheus_scrapes_the_agent_and_promtool_accepts_it") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let target: std::net::SocketAddr = format!("{}:9725", lab.edge_end.v4).parse()?;
    // Plain text 0.0.4 for a client that does not ask for OpenMetrics (curl, promtool).
    let (head, text) = http_get(&lab.edge.name, target, "/metrics", "")?;
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT") && !text.contains(" info\n"), "{text}");
    let (ok, out) = promtool(&["check", "metrics"], &text)?;
    assert!(ok, "promtool check metrics refused the text format:\n{out}\n{text}");
    for want in [
        "helo_build_info{version=",
        "helo_filter_mode{mode=\"enforce\"} 1",
        "helo_filter_mode{mode=\"observe\"} 0",
        "helo_xdp_attached 1",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(want), "no {want} in:\n{text}");
    }
    assert!(!text.contains("helo_fleet"), "fleet series without a fleet:\n{text}");
    // OpenMetrics, with its own content type and # EOF, for a client that asks (as Prometheus does).
    let (head, om) = http_get(
        &lab.edge.name,
        target,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )?;
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    // A real Prometheus (Debian's 2.42) scraping the agent: the target is up and a counter is stored.
    let web: std::net::SocketAddr = format!("{}:9090", lab.edge_end.v4).parse()?;
    let prom = Prometheus::start(&lab.edge, web, target)?;
    prom.wait_for("up{job=\"helo\"}", Duration::from_secs(60), |v| v == 1.0)?;
    let rejected = prom.wait_for("helo_verdicts_total{rule=\"bogus_helo\"}", Duration::from_secs(20), |v| v >= 1.0)?;
    assert_eq!(rejected, 1.0);
    prom.wait_for("process_resident_memory_bytes{job=\"helo\"}", Duration::from_secs(10), |v| v > 0.0)?;
    prom.wait_for("helo_build_info{job=\"helo\"}", Duration::from_secs(10), |v| v == 1.0)?;
    Ok(())
}

/// Runs `helo ARGS` in `ns` and waits (bounded) for it to exit; (exit code, stderr).
fn run_to_exit(ns: &helo_testbed::netns::Netns, args: &[String], within: Duration) -> Result<(Option<i32>, String)> {
    let bin = helo_testbed::agent::binary()?;
    let dir = tempfile::tempdir()?;
    let err_path = dir.path().join("stderr");
    let mut child = ns
        .command(bin.to_str().unwrap())
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    anyhow::ensure!(status.is_some(), "helo did not exit within {within:?}: {err}");
    Ok((status.and_then(|s| s.code()), err))
}

/// `args` with the value after `flag` replaced (or the pair appended).
fn with_flag(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) => out[i + 1] = value.to_owned(),
        None => out.extend([flag.to_owned(), value.to_owned()]),
    }
    out
}

#[test]
fn a_start_that_fails_leaves_the_box_as_it_found_it() -> Result<()> {
    if !require_root("a_start_that_fails_leaves_the_box_as_it_found_it") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    lab.agent.stop()?;
    assert!(lab.cli(&["detach", "--pin-dir", lab.pin_dir().to_str().unwrap()])?.status.success());
    let xdp_shown = |lab: &Lab| -> Result<bool> {
        Ok(String::from_utf8_lossy(&lab.edge.ip(&["link", "show", &lab.edge_end.ifname])?.stdout).contains("xdp"))
    };
    assert!(!xdp_shown(&lab)?);
    let pins_left = |lab: &Lab| lab.pin_dir().read_dir().map(|mut d| d.next().is_some()).unwrap_or(false);
    // Port 25 taken: the agent exits with the cause, and no filter is attached or pinned.
    for (what, addr) in [("SMTP", format!("{}:25", lab.edge_end.v4)), ("metrics", format!("{}:9725", lab.edge_end.v4))] {
        let addr: std::net::SocketAddr = addr.parse()?;
        let taken = lab.edge.enter(move || std::net::TcpListener::bind(addr))??;
        let (code, err) = run_to_exit(&lab.edge, &lab.args, Duration::from_secs(20))?;
        assert_ne!(code, Some(0), "{what}: {err}");
        assert!(err.contains(&format!("binding {}", taken.local_addr()?)) || err.contains(&addr.to_string()), "{what}: {err}");
        assert!(!xdp_shown(&lab)?, "{what} port taken, yet a filter is attached");
        assert!(!pins_left(&lab), "{what} port taken, yet pins are left");
        drop(taken);
    }
    // --metrics off serves nothing and needs no port.
    // A missing interface: the real cause, nothing left.
    let args = with_flag(&lab.args, "--iface", "nosuch0");
    let (code, err) = run_to_exit(&lab.edge, &args, Duration::from_secs(20))?;
    assert_ne!(code, Some(0));
    assert!(err.contains("no interface named nosuch0"), "{err}");
    assert!(!err.contains("falling back"), "{err}");
    assert!(!pins_left(&lab));
    // The box's filter runs again; a second agent asking for native XDP on the same interface is
    // told another program is attached, and the first stays attached.
    lab.restart_agent("agent2.log")?;
    let other = lab.dir.path().join("other");
    let mut args = with_flag(&lab.args, "--listen", &format!("{}:2525", lab.edge_end.v4));
    args = with_flag(&args, "--metrics", "off");
    args = with_flag(&args, "--state-dir", other.join("state").to_str().unwrap());
    args = with_flag(&args, "--admin-socket", other.join("admin/admin.sock").to_str().unwrap());
    args = with_flag(&args, "--pin-dir", lab.pin_dir().with_file_name("other").to_str().unwrap());
    let (code, err) = run_to_exit(&lab.edge, &args, Duration::from_secs(20))?;
    assert_ne!(code, Some(0));
    assert!(err.contains("already attached") && err.contains("in native mode"), "{err}");
    assert!(!lab.pin_dir().with_file_name("other").join(names::HELO_TABLE).exists(), "the failed start left its pins");
    assert!(xdp_shown(&lab)?, "the running filter went away");
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    Ok(())
}

#[test]
fn pins_on_a_private_bpffs_are_warned_about_and_metrics_can_be_off() -> Result<()> {
    if !require_root("pins_on_a_private_bpffs_are_warned_about_and_metrics_can_be_off") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    assert!(!lab.agent.log_text().contains("vanish"), "the lab's shared bpffs was warned about: {}", lab.agent.log_text());
    lab.agent.stop()?;
    assert!(lab.cli(&["detach", "--pin-dir", lab.pin_dir().to_str().unwrap()])?.status.success());
    // `ip netns exec` remounts /sys in a mount namespace of its own: a bpffs the agent mounts on
    // /sys/fs/bpf there goes away with it.
    let pin_dir = format!("/sys/fs/bpf/helo-test-{}", helo_testbed::netns::unique_id());
    lab.args = with_flag(&lab.args, "--pin-dir", &pin_dir);
    // And no metrics: nothing listens on the metrics port.
    lab.args = with_flag(&lab.args, "--metrics", "off");
    lab.restart_agent("agent2.log")?;
    let log = lab.agent.log_text();
    assert!(log.contains("vanish when the agent exits"), "{}", quiet(&log));
    assert!(log.contains("metrics off"), "{}", quiet(&log));
    assert!(lab.scrape().is_err(), "--metrics off, yet something answers on the metrics port");
    lab.agent.stop()?;
    assert!(!std::path::Path::new(&pin_dir).exists() || pin_dir_is_private(&pin_dir));
    Ok(())
}

/// An agent log without its debug lines.
fn quiet(log: &str) -> String {
    log.lines().filter(|l| !l.contains("DEBUG") && !l.starts_with(" ")).collect::<Vec<_>>().join("\n")
}

/// The host's /sys/fs/bpf never saw the private pins.
fn pin_dir_is_private(pin_dir: &str) -> bool {
    std::path::Path::new(pin_dir).read_dir().map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn sighup_and_reload_apply_a_new_configuration_or_keep_the_old() -> Result<()> {
    if !require_root("sighup_and_reload_apply_a_new_configuration_or_keep_the_old") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("helo.toml");
    std::fs::write(&conf, "helo-ttl-s = 604800\n")?;
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), conf.display().to_string()],
        with_postfix: false,
        ..Default::default()
    })?;
    let greet = |lab: &Lab, name: &str| -> Result<String> { Ok(reply(&lab.dialog(&[&format!("EHLO {name}\r\n"), "QUIT\r\n"])?, 0)) };
    // No MTA behind this lab: an accepted greeting is handed off and gets the 421 of a down backend.
    let accepted = |reply: String| !reply.starts_with("550");
    assert!(accepted(greet(&lab, "ok.example.org")?));
    let reloads = |lab: &Lab| lab.agent.log_text().matches("configuration reloaded").count();
    // SIGHUP: a deny rule with its own reply text is in force at once, and the agent lives on.
    std::fs::write(
        &conf,
        "helo-ttl-s = 604800\n[classifier.rules.operator_deny]\nnames = [\"ok.example.org\"]\nreply = \"550 5.7.1 Bogus HELO, see https://helo.example/why\"\n",
    )?;
    // SAFETY: kill on our own child.
    unsafe { libc::kill(lab.agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&lab) < 1 {
        assert!(Instant::now() < deadline, "no reload logged: {}", lab.agent.log_text());
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(greet(&lab, "ok.example.org")?, "550 5.7.1 Bogus HELO, see https://helo.example/why\r\n");
    assert!(listed_names(&lab)?.contains("ok.example.org"));
    // `helo reload`: the allow lists, the kernel's included. The name comes off the blocklist,
    // and the client network is allowed in the kernel: a greeting listed in the kernel passes it.
    assert!(lab.blocklist(&["add", "localhost"])?.status.success());
    assert_eq!(greet(&lab, "localhost")?, "550 5.7.1 Bogus HELO\r\n");
    let before = lab.counters()?;
    std::fs::write(
        &conf,
        "helo-ttl-s = 604800\nmax-sessions = 7\n[classifier.allow]\nnames = [\"ok.example.org\"]\ncidrs = [\"198.18.30.0/24\"]\n",
    )?;
    let out = lab.cli(&["reload", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("+1") && said.contains("1 newly allowed names unlisted") && said.contains("max-sessions"), "{said}");
    assert!(!listed_names(&lab)?.contains("ok.example.org"));
    assert!(accepted(greet(&lab, "ok.example.org")?));
    let r = greet(&lab, "localhost")?;
    assert!(accepted(r.clone()), "an allowed network was judged: {r}");
    let since = lab.counters()?.since(&before);
    assert!(since.get(counter::PASS_ALLOW_LISTED) >= 1, "the kernel's allow trie did not let the network by: {since:?}");
    assert!(listed_names(&lab)?.contains("localhost"), "the listed name should stay listed, only passed for the allowed network");
    // A broken file: refused, the old configuration stays, the agent lives on.
    std::fs::write(&conf, "helo-ttl-s = \"soon\"\n")?;
    let out = lab.cli(&["reload", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("not a duration"), "{err}");
    // SAFETY: kill on our own child.
    unsafe { libc::kill(lab.agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.agent.log_text().matches("reload refused").count() < 2 {
        assert!(Instant::now() < deadline, "no refusal logged: {}", lab.agent.log_text());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(accepted(greet(&lab, "localhost")?), "the old configuration went away");
    Ok(())
}

#[test]
fn admin_commands_find_the_agent_through_its_config() -> Result<()> {
    if !require_root("admin_commands_find_the_agent_through_its_config") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    let conf = lab.dir.path().join("admin.toml");
    std::fs::write(&conf, format!("state-dir = {:?}\nadmin-socket = {:?}\n", lab.state_dir(), lab.admin_socket()))?;
    let conf_s = conf.to_str().unwrap();
    let out = lab.cli(&["blocklist", "add", "cfg.example.com", "--config", conf_s])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lab.cli(&["blocklist", "list", "--json", "--config", conf_s])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("cfg.example.com"));
    let out = lab.cli(&["stats", "--config", conf_s, "--interval", "0.1"])?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("XDP program"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Flags after the subcommand.
    let out = lab.cli(&["blocklist", "get", "cfg.example.com", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A state directory that does not exist is an error, and is not created.
    let missing = lab.dir.path().join("no-such-state");
    let out = lab.cli(&["blocklist", "list", "--admin-socket", "/nonexistent/admin.sock", "--state-dir", missing.to_str().unwrap()])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state directory"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!missing.exists());
    // An oversized request line is refused, and the agent answers the next one.
    {
        use std::io::{BufRead, BufReader};
        let mut s = std::os::unix::net::UnixStream::connect(lab.admin_socket())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let chunk = vec![b'x'; 1 << 20];
        let mut refused = false;
        for _ in 0..20 {
            if s.write_all(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        let mut answer = String::new();
        let _ = BufReader::new(&s).read_line(&mut answer);
        assert!(refused || answer.contains("request over"), "{answer}");
    }
    let out = lab.cli(&["blocklist", "get", "cfg.example.com", "--config", conf_s])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An import is one request (all or nothing) and may be longer than other requests.
    let path = lab.dir.path().join("big.jsonl");
    let lines: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"kind":"helo","name":"big{i}.example.com","reason":"bulk","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0,"origin":"operator"}}"#))
        .collect();
    std::fs::write(&path, lines.join("\n"))?;
    assert!(std::fs::metadata(&path)?.len() > 128 << 10);
    let out = lab.cli(&["blocklist", "import", path.to_str().unwrap(), "--config", conf_s])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listed(&lab)?.len(), 2001);
    Ok(())
}

#[test]
fn secrets_stay_off_command_lines_and_out_of_check_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("fleet.toml");
    std::fs::write(&conf, "no-xdp = true\nhostname = \"mx.example.com\"\nfleet = \"redis://edge:hunter2@198.18.0.1:6379/0\"\n")?;
    let bin = helo_testbed::agent::binary()?;
    let out = Command::new(&bin).arg("check-config").arg(&conf).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("redis://edge:***@198.18.0.1:6379/0") && !text.contains("hunter2"), "{text}");
    // The password from a file, percent-encoded into the URL the agent uses.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "p@ss:w/rd\n")?;
    let c = helo_user::config::Config {
        fleet: Some("redis://edge@198.18.0.1:6379/0".into()),
        fleet_password_file: Some(pw.clone()),
        ..Default::default()
    };
    assert_eq!(c.fleet_url()?.unwrap(), "redis://edge:p%40ss%3Aw%2Frd@198.18.0.1:6379/0");
    let out = Command::new(&bin).args(["run", "--help"]).output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("--fleet-password-file"));
    Ok(())
}

#[test]
fn every_flag_has_help_and_names_its_default() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{path} {id}: no help"));
            }
            let optional_value = arg.get_action().takes_values() && !arg.is_required_set() && !arg.is_positional();
            let has_default = !arg.get_default_values().is_empty() || help.contains("[default:") || help.contains("Default:");
            let needs_default = optional_value
                && !matches!(
                    id,
                    "config"
                        | "iface"
                        | "hostname"
                        | "fleet"
                        | "fleet_password_file"
                        | "ttl"
                        | "kind"
                        | "exit_after"
                        | "server_ip"
                        | "domain"
                );
            if needs_default && !has_default {
                missing.push(format!("{path} {id}: default not shown"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {}: no about", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = vec![];
    walk(&helo_user::cli::Cli::command(), "helo", &mut missing);
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Every sample name the agent can export (all series registered: XDP attached, a fleet).
fn exported_names() -> HashSet<String> {
    let m = helo_user::metrics::Metrics::new("native", 1);
    m.register_fleet();
    let mut names = HashSet::from(["up".to_string()]);
    for line in m.exposition_text().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, ty) = rest.split_once(' ').unwrap();
        if ty == "histogram" {
            names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The `helo_…` and `process_…` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if (i == 0 || !ident(b[i - 1])) && (expr[i..].starts_with("helo_") || expr[i..].starts_with("process_")) {
            let end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
            out.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");

#[test]
fn shipped_alert_rules_pass_promtool_and_use_only_exported_metrics() -> Result<()> {
    let rules = format!("{CONTRIB}/prometheus/helo-alerts.yml");
    let (ok, out) = helo_testbed::prometheus::promtool(&["check", "rules", &rules], "")?;
    assert!(ok, "{out}");
    let out =
        Command::new("promtool").args(["test", "rules", "helo-alerts.test.yml"]).current_dir(format!("{CONTRIB}/prometheus")).output()?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let exported = exported_names();
    let text = std::fs::read_to_string(&rules)?;
    let exprs: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("expr:")).collect();
    assert!(exprs.len() >= 9, "{exprs:?}");
    for expr in exprs {
        for name in metric_names(expr) {
            assert!(exported.contains(&name), "alert rule uses {name}, which the agent does not export: {expr}");
        }
    }
    for wanted in [
        "up{",
        "helo_backend_errors_total",
        "helo_kernel_events_lost_total",
        "helo_blocklist_evicted_total",
        "helo_fleet_lag_seconds",
        "helo_fleet_queued",
        "helo_xdp_attached",
        "helo_filter_mode{mode=\"observe\"}",
    ] {
        assert!(text.contains(wanted), "no alert on {wanted}");
    }
    Ok(())
}

#[test]
fn the_grafana_dashboard_is_json_and_uses_only_exported_metrics() -> Result<()> {
    let text = std::fs::read_to_string(format!("{CONTRIB}/grafana/helo-dashboard.json"))?;
    let dash: Value = serde_json::from_str(&text)?;
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut found = vec![];
    exprs(&dash, &mut found);
    let exported = exported_names();
    let mut used = 0;
    for expr in &found {
        for name in metric_names(expr) {
            assert!(exported.contains(&name), "the dashboard uses {name}, which the agent does not export: {expr}");
            used += 1;
        }
    }
    assert!(used >= 15, "{found:?}");
    Ok(())
}

#[test]
fn the_public_suffix_list_comes_from_the_system_or_a_file_and_is_read_again_on_reload() -> Result<()> {
    if !require_root("the_public_suffix_list_comes_from_the_system_or_a_file_and_is_read_again_on_reload") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("helo.toml");
    std::fs::write(&conf, "")?;
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), conf.display().to_string()],
        with_postfix: false,
        ..Default::default()
    })?;
    let system = "/usr/share/publicsuffix/public_suffix_list.dat";
    assert!(std::path::Path::new(system).exists(), "Debian's publicsuffix package is not installed");
    assert!(lab.agent.log_text().contains(&format!("public suffix list: {system}")), "{}", quiet(&lab.agent.log_text()));
    let greet = |name: &str| -> Result<String> { Ok(reply(&lab.dialog(&[&format!("EHLO {name}\r\n"), "QUIT\r\n"])?, 0)) };
    let reload = || -> Result<String> {
        let out = lab.cli(&["reload", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // No MTA behind this lab: an accepted greeting gets the 421 of a down backend.
    assert_eq!(greet("mx.one.helotest")?, "550 5.7.1 Bogus HELO\r\n", "a suffix no list has");
    // A list of our own with a new suffix: in force after a reload.
    let psl = dir.path().join("psl.dat");
    std::fs::write(&psl, "// ===BEGIN ICANN DOMAINS===\norg\ncom\nhelotest\n// ===END ICANN DOMAINS===\n")?;
    std::fs::write(&conf, format!("public-suffix-list = {:?}\n", psl.display().to_string()))?;
    let said = reload()?;
    assert!(said.contains(&format!("public suffix list: {}", psl.display())), "{said}");
    let r = greet("mx.two.helotest")?;
    assert!(r.starts_with("421"), "a name under the new suffix was refused: {r}");
    // The same path, changed: read again.
    std::fs::write(&psl, "// ===BEGIN ICANN DOMAINS===\norg\ncom\n// ===END ICANN DOMAINS===\n")?;
    reload()?;
    assert_eq!(greet("mx.three.helotest")?, "550 5.7.1 Bogus HELO\r\n", "the file was not read again");
    // A configured file that cannot be read: the reload is refused and the old list stays.
    std::fs::write(&conf, format!("public-suffix-list = {:?}\n", dir.path().join("missing.dat").display().to_string()))?;
    assert!(reload().is_err());
    assert_eq!(greet("mx.four.helotest")?, "550 5.7.1 Bogus HELO\r\n");
    assert!(greet("mx.example.org")?.starts_with("421"));
    Ok(())
}

#[test]
fn a_reload_applies_the_default_ttls_to_new_listings() -> Result<()> {
    if !require_root("a_reload_applies_the_default_ttls_to_new_listings") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("helo.toml");
    std::fs::write(&conf, "helo-ttl-s = 604800\n")?;
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), conf.display().to_string()],
        with_postfix: false,
        ..Default::default()
    })?;
    // Seconds from now to the expiry of the listing of `name`.
    let ttl_of = |name: &str| -> Result<i64> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        let entry = listed(&lab)?.into_iter().find(|e| e["name"] == name).with_context(|| format!("{name} is not listed"))?;
        Ok(entry["expires_unix_s"].as_i64().unwrap_or(0) - now)
    };
    assert_eq!(reply(&lab.dialog(&["EHLO before-reload\r\n", "QUIT\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert!((604_700..=604_800).contains(&ttl_of("before-reload")?));
    std::fs::write(&conf, "helo-ttl-s = 3600\n")?;
    let out = lab.cli(&["reload", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !said.contains("helo-ttl-s"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reply(&lab.dialog(&["EHLO after-reload\r\n", "QUIT\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert!((3_500..=3_600).contains(&ttl_of("after-reload")?), "the new TTL was not applied");
    // An operator's add without --ttl takes the new default too; the old entry keeps its expiry.
    assert!(lab.blocklist(&["add", "operator-added.example"])?.status.success());
    assert!((3_500..=3_600).contains(&ttl_of("operator-added.example")?));
    assert!((604_000..=604_800).contains(&ttl_of("before-reload")?));
    Ok(())
}
