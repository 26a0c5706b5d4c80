//! A fleet of edge boxes sharing one blocklist through a real redis-server (ACLs on) in its own
//! namespace. Each box is a whole lab (client and edge namespaces, the agent with native XDP);
//! each edge namespace also has a veth to the Redis namespace.

use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use helo_common::maps::counter;
use helo_testbed::{
    lab::{reply, Lab},
    netns::Netns,
    privilege::require_root,
    redis::{Redis, PASSWORD},
};
use serde_json::Value;

fn entries(lab: &Lab) -> Result<Vec<Value>> {
    let out = lab.blocklist(&["list", "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn has(lab: &Lab, name: &str) -> Result<Option<Value>> {
    Ok(entries(lab)?.into_iter().find(|e| e["name"] == name))
}

/// Waits for `name` to be listed on `lab`; how long it took.
fn wait_listed(lab: &Lab, name: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    while has(lab, name)?.is_none() {
        assert!(started.elapsed() < within, "{name} did not reach the box within {within:?}:\n{}", lab.agent.log_text());
        thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

fn metric(lab: &Lab, name: &str) -> f64 {
    let text = lab.scrape().unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_block_on_one_box_is_dropped_by_the_others_and_a_late_box_loads_it() -> Result<()> {
    if !require_root("a_block_on_one_box_is_dropped_by_the_others_and_a_late_box_loads_it") {
        return Ok(());
    }
    let redis_ns = Netns::new("r")?;
    let a = Lab::fleet_box(&redis_ns, 51, "edge-a", PASSWORD, vec![])?;
    let b = Lab::fleet_box(&redis_ns, 52, "edge-b", PASSWORD, vec![])?;
    let _redis = Redis::start(&redis_ns, &["198.18.51.1".into(), "198.18.52.1".into(), "198.18.53.1".into()])?;
    thread::sleep(Duration::from_millis(1500)); // both boxes connect (first retry after 0.5 s)

    assert_eq!(reply(&a.dialog(&["EHLO rad.internal\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let took = wait_listed(&b, "rad.internal", Duration::from_secs(1))?;
    println!("propagated to box B in {took:?}");
    assert_eq!(has(&b, "rad.internal")?.unwrap()["origin"], "edge-a");
    // Box B's kernel drops it; B's agent never classifies it, yet the sender reads why.
    let before = b.counters()?;
    assert_eq!(reply(&b.dialog(&["EHLO rad.internal\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert!(b.counters()?.since(&before).get(counter::DROP_HELO) >= 1);
    assert!(!b.agent.log_text().contains(" scope="), "box B's agent saw the greeting");

    // A late box loads the current list.
    let c = Lab::fleet_box(&redis_ns, 53, "edge-c", PASSWORD, vec![])?;
    wait_listed(&c, "rad.internal", Duration::from_secs(10))?;
    assert!(metric(&c, "helo_fleet_connected") == 1.0);
    drop((a, b, c));
    Ok(())
}

#[test]
fn an_outage_queues_blocks_and_the_fleet_converges_after_a_restart() -> Result<()> {
    if !require_root("an_outage_queues_blocks_and_the_fleet_converges_after_a_restart") {
        return Ok(());
    }
    let redis_ns = Netns::new("r")?;
    let a = Lab::fleet_box(&redis_ns, 51, "edge-a", PASSWORD, vec![])?;
    let b = Lab::fleet_box(&redis_ns, 52, "edge-b", PASSWORD, vec![])?;
    let mut redis = Redis::start(&redis_ns, &["198.18.51.1".into(), "198.18.52.1".into()])?;
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(reply(&a.dialog(&["EHLO before.lan\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    wait_listed(&b, "before.lan", Duration::from_secs(2))?;

    redis.stop();
    // Filtering goes on locally, and the block waits in A's store.
    assert_eq!(reply(&a.dialog(&["EHLO during.lan\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    thread::sleep(Duration::from_millis(1200));
    assert!(metric(&a, "helo_fleet_queued") >= 1.0, "the block during the outage was not queued");
    assert_eq!(metric(&a, "helo_fleet_connected"), 0.0);

    // Redis comes back empty, as after a restart without persistence or a failover.
    redis.restart()?;
    wait_listed(&b, "during.lan", Duration::from_secs(40))?;
    assert!(has(&b, "before.lan")?.is_some(), "an entry was lost across the restart");
    let names: Vec<String> = entries(&b)?.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "duplicates on box B: {names:?}");
    assert_eq!(unique.len(), 2, "{names:?}");
    // Redis holds the current state again, each entry once.
    let keys = redis.cli(&["--scan", "--pattern", "helo:entry:*"])?;
    assert_eq!(keys.lines().filter(|l| l.starts_with("helo:entry:")).count(), 2, "{keys}");
    Ok(())
}

#[test]
fn allow_lists_win_bad_entries_are_skipped_and_bad_credentials_are_clear() -> Result<()> {
    if !require_root("allow_lists_win_bad_entries_are_skipped_and_bad_credentials_are_clear") {
        return Ok(());
    }
    let redis_ns = Netns::new("r")?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("b.toml");
    std::fs::write(&conf, "[classifier.allow]\ncidrs = [\"198.18.99.0/24\"]\nnames = [\"partner.lan\"]\n")?;
    let a = Lab::fleet_box(&redis_ns, 51, "edge-a", PASSWORD, vec![])?;
    let b = Lab::fleet_box(&redis_ns, 52, "edge-b", PASSWORD, vec!["--config".into(), conf.display().to_string()])?;
    let d = Lab::fleet_box(&redis_ns, 53, "edge-d", "wrong-password", vec![])?;
    let redis = Redis::start(&redis_ns, &["198.18.51.1".into(), "198.18.52.1".into(), "198.18.53.1".into()])?;
    // Both boxes following the stream (connected, their initial load done): an entry added while
    // a box still scans the stored list is applied again from the stream (an upsert, harmless),
    // which would count its skip twice.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&a, "helo_fleet_connected") != 1.0 || metric(&b, "helo_fleet_connected") != 1.0 {
        assert!(Instant::now() < deadline, "the boxes did not connect to Redis");
        thread::sleep(Duration::from_millis(100));
    }

    // A lists a network B allows, and a name B allows, then one B does not.
    for name in ["198.18.99.7", "partner.lan", "other.lan"] {
        assert!(a.blocklist(&["add", name])?.status.success());
    }
    wait_listed(&b, "other.lan", Duration::from_secs(2))?;
    assert!(has(&b, "198.18.99.7")?.is_none(), "an allow-listed network was blocked on B");
    assert!(has(&b, "partner.lan")?.is_none(), "an allow-listed name was blocked on B");
    assert_eq!(metric(&b, r#"helo_fleet_skipped_total{kind="allowed"}"#), 2.0);

    // Garbage in the stream is skipped and counted.
    let out = redis.cli(&["XADD", "helo:stream", "*", "v", "1", "op", "add", "kind", "hash", "name", "x", "origin", "evil"])?;
    assert!(!out.contains("ERR"), "{out}");
    let out = redis.cli(&["XADD", "helo:stream", "*", "garbage", "yes"])?;
    assert!(!out.contains("ERR"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(&b, r#"helo_fleet_skipped_total{kind="malformed"}"#) < 2.0 {
        assert!(Instant::now() < deadline, "the bad stream entries were not counted");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(entries(&b)?.len(), 1, "a bad entry was applied");

    // Bad credentials: a clear error, and local filtering still works.
    let log = d.agent.log_text();
    assert!(log.contains("fleet: cannot connect") && (log.contains("WRONGPASS") || log.contains("uthentication")), "{log}");
    assert_eq!(reply(&d.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(reply(&d.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    assert!(d.counters()?.get(counter::DROP_HELO) >= 1);

    // An operator removes an entry fleet-wide.
    assert!(a.blocklist(&["del", "--fleet", "other.lan"])?.status.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    while has(&b, "other.lan")?.is_some() {
        assert!(Instant::now() < deadline, "the fleet-wide removal did not reach B");
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
