//! Fleet latency: the time from a block on box A to the entry being in box B's kernel map, over
//! 1,000 entries, through a real redis-server. Two whole boxes (namespaces, agents with native
//! XDP) and Redis in its own namespace, as in the fleet tests. Prints a JSON report.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use helo_testbed::{
    lab::Lab,
    netns::Netns,
    redis::{Redis, PASSWORD},
};
use helo_user::{
    admin::{client::call, protocol::Request},
    listing::Kind,
};

const ENTRIES: usize = 1000;

fn main() -> Result<()> {
    let redis_ns = Netns::new("r")?;
    let a = Lab::fleet_box(&redis_ns, 51, "edge-a", PASSWORD, vec![])?;
    let b = Lab::fleet_box(&redis_ns, 52, "edge-b", PASSWORD, vec![])?;
    let _redis = Redis::start(&redis_ns, &["198.18.51.1".into(), "198.18.52.1".into()])?;
    thread::sleep(Duration::from_millis(1500));
    let mut ms = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let name = format!("fleet-bench-{i}.lan");
        let t0 = Instant::now();
        call(
            &a.admin_socket(),
            &a.state_dir(),
            Request::Add { kind: Kind::Helo, name: name.clone(), ttl_s: Some(3600), reason: None, reply: None },
        )?;
        loop {
            let r = call(&b.admin_socket(), &b.state_dir(), Request::Get { kind: Kind::Helo, name: name.clone() })?;
            if r.entries.is_some_and(|e| !e.is_empty()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("{name} never reached box B");
            }
            thread::sleep(Duration::from_micros(200));
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut sorted = ms.clone();
    sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({ "entries": ENTRIES, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "min_ms": sorted[0], "max_ms": sorted[sorted.len() - 1] })
    );
    Ok(())
}
