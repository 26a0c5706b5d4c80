//! Chaos: issue 13's faults looped for a bounded time against one real agent (native XDP, pins on
//! a private bpffs, its redb store on a size-limited tmpfs), checking after every step that the
//! store and the kernel hold the same names and that nothing acknowledged was lost. Steps, drawn
//! from a seeded RNG (printed; `HELO_CHAOS_SEED=N` replays the order, `HELO_CHAOS_S=N` sets the
//! duration, 120 s by default):
//! - a burst of bogus greetings (the agent lists them) beside operator adds and deletes, with or
//!   without a kill -9 of the agent at a random moment, then a restart;
//! - the state filesystem full during a burst (every sender still reads its reply), then space
//!   freed: the pending listings reach the store without a restart;
//! - the agent stopped (SIGTERM or kill -9), offline `blocklist del` of acknowledged names, restart.
//!
//! Also here: while the store fails, the periodic jobs log once per episode, not every tick.

use std::{
    collections::HashSet,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use helo_common::{maps::names, HashKey};
use helo_testbed::{
    lab::{one_source_many_names, Lab, LabOptions, CLIENT_SCRIPT},
    privilege::require_root,
};
use helo_user::kernel::helo_table::HeloTable;
use helo_user::{blocklist::kernel_side::helo_hash, store::Store};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::Value;

const BOGUS: &str = "550 5.7.1 Bogus HELO\r\n";

/// What the operator and the senders were told is listed, and what the operator was told is gone.
#[derive(Default)]
struct Promised {
    listed: HashSet<String>,
    removed: HashSet<String>,
}

struct Chaos {
    lab: Lab,
    key: HashKey,
    promised: Promised,
    rng: StdRng,
    step: usize,
    agent_logs: usize,
    /// Full-filesystem episodes the running agent went through (each may log once).
    full_episodes: usize,
}

/// The names the store holds (through the agent, or offline when it is down).
fn stored_names(lab: &Lab) -> Result<HashSet<String>> {
    let out = lab.blocklist(&["list", "--json"])?;
    if !out.status.success() {
        bail!("blocklist list failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice::<Vec<Value>>(&out.stdout)?
        .iter()
        .filter(|e| e["kind"] == "helo")
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect())
}

/// The hashes in the pinned HELO table.
fn kernel_hashes(lab: &Lab) -> Result<HashSet<u64>> {
    Ok(HeloTable::open_pinned(&lab.pin_dir().join(names::HELO_TABLE))?.keys().into_iter().collect())
}

/// `count` concurrent sessions greeting with `template` (`{i}` numbered); the names whose
/// senders read the refusal, and what the others read.
fn flood(lab: &Lab, template: &str, count: usize) -> Result<(HashSet<String>, Vec<String>)> {
    let out = lab
        .client
        .command("python3")
        .arg(CLIENT_SCRIPT)
        .args(["flood", "--server", &lab.edge_end.v4, "--count", &count.to_string(), "--timeout", "5", "--helo-template", template])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let replies = v["replies"].as_array().context("no replies")?;
    let refused: HashSet<String> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_str() == Some(BOGUS))
        .map(|(i, _)| template.replace("{i}", &i.to_string()))
        .collect();
    let others = replies.iter().filter(|r| r.as_str() != Some(BOGUS)).map(|r| r.to_string()).collect();
    Ok((refused, others))
}

fn ok(out: &Output) -> bool {
    out.status.success()
}

impl Chaos {
    fn restart(&mut self) -> Result<()> {
        self.agent_logs += 1;
        self.full_episodes = 0;
        self.lab.restart_agent(&format!("agent{}.log", self.agent_logs))
    }

    /// SIGKILL, by pid (a burst's threads still hold the lab); [`Chaos::reap`] waits for the exit.
    fn kill_9(&self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.lab.agent.pid() as i32, libc::SIGKILL) };
    }

    /// Waits until the killed agent is gone, every thread of it: until then its files (the store's
    /// lock, the admin socket) stay open, and a dying agent's port still completes handshakes, so
    /// a new agent would look ready while failing on the store's lock.
    fn reap(&mut self) -> Result<()> {
        self.lab.agent.wait_exit(Duration::from_secs(10)).map(|_| ())
    }

    /// Store and kernel hold the same names (waiting out one reconcile at most), everything
    /// promised listed is stored, nothing promised removed is.
    fn check(&self, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (stored, kernel) = loop {
            let stored = stored_names(&self.lab)?;
            let kernel = kernel_hashes(&self.lab)?;
            let want: HashSet<u64> = stored.iter().map(|n| helo_hash(&self.key, n)).collect();
            if want == kernel {
                break (stored, kernel);
            }
            if Instant::now() > deadline {
                bail!(
                    "step {} ({what}): store and kernel differ: {} stored, {} in the kernel, {} stored but not in the kernel, {} in \
                     the kernel but not stored",
                    self.step,
                    stored.len(),
                    kernel.len(),
                    want.difference(&kernel).count(),
                    kernel.difference(&want).count()
                );
            }
            thread::sleep(Duration::from_millis(200));
        };
        let lost: Vec<&String> = self.promised.listed.difference(&stored).collect();
        assert!(lost.is_empty(), "step {} ({what}): acknowledged but lost: {lost:?}", self.step);
        let back: Vec<&String> = self.promised.removed.intersection(&stored).collect();
        assert!(back.is_empty(), "step {} ({what}): removed but stored again: {back:?}", self.step);
        println!(
            "step {:>3} {what}: store = kernel ({} names), {} promised listed all stored",
            self.step,
            kernel.len(),
            self.promised.listed.len()
        );
        Ok(())
    }

    /// Bogus greetings and operator changes at once, the agent maybe killed in the middle.
    fn burst(&mut self, kill: bool) -> Result<String> {
        let step = self.step;
        let count = self.rng.random_range(20..=60);
        let kill_after = Duration::from_millis(self.rng.random_range(20..400));
        let deletable: Vec<String> = self.promised.listed.iter().filter(|n| n.starts_with("op")).cloned().collect();
        let to_delete: Vec<String> = deletable.choose_multiple(&mut self.rng, 3).cloned().collect();
        let lab = &self.lab;
        let (refused, added, attempted, removed) = thread::scope(|s| -> Result<_> {
            let senders = s.spawn(|| flood(lab, &format!("s{step}n{{i}}"), count));
            let operator = s.spawn(|| {
                let (mut added, mut attempted, mut removed) = (HashSet::new(), HashSet::new(), HashSet::new());
                for j in 0..10 {
                    let name = format!("op{step}x{j}.example.com");
                    if ok(&lab.blocklist(&["add", &name]).unwrap()) {
                        added.insert(name);
                    }
                    if let Some(gone) = to_delete.get(j) {
                        attempted.insert(gone.clone());
                        if ok(&lab.blocklist(&["del", gone]).unwrap()) {
                            removed.insert(gone.clone());
                        }
                    }
                }
                (added, attempted, removed)
            });
            if kill {
                thread::sleep(kill_after);
                self.kill_9();
            }
            let (refused, _) = senders.join().unwrap()?;
            let (added, attempted, removed) = operator.join().unwrap();
            Ok((refused, added, attempted, removed))
        })?;
        // A delete the agent was killed in the middle of may or may not have happened: no promise.
        for name in &attempted {
            self.promised.listed.remove(name);
        }
        self.promised.listed.extend(refused.iter().cloned());
        self.promised.listed.extend(added.iter().cloned());
        for gone in &removed {
            self.promised.listed.remove(gone);
            self.promised.removed.insert(gone.clone());
        }
        if kill {
            self.reap()?;
            self.restart()?;
        }
        Ok(format!(
            "burst{}: {} of {count} refusals acknowledged, {} operator adds, {} deletes",
            if kill { format!(" with kill -9 after {kill_after:?}") } else { String::new() },
            refused.len(),
            added.len(),
            removed.len()
        ))
    }

    /// A burst on a full state filesystem, then space freed.
    fn full_filesystem(&mut self) -> Result<String> {
        let count = self.rng.random_range(20..=60);
        let filler = self.lab.state_fs.as_ref().unwrap().fill()?;
        self.full_episodes += 1;
        let (refused, others) = flood(&self.lab, &format!("f{}n{{i}}", self.step), count)?;
        assert!(
            others.is_empty(),
            "step {}: {} senders did not read their refusal on a full filesystem: {:?}\nagent log:\n{}",
            self.step,
            others.len(),
            others.iter().collect::<std::collections::BTreeSet<_>>(),
            self.lab.agent.log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        let op = format!("op{}full.example.com", self.step);
        let op_added = ok(&self.lab.blocklist(&["add", &op])?);
        // No listing the store does not know, even now (when the store can be read at all).
        if let Ok(stored) = stored_names(&self.lab) {
            let want: HashSet<u64> = stored.iter().map(|n| helo_hash(&self.key, n)).collect();
            let kernel = kernel_hashes(&self.lab)?;
            assert!(kernel.is_subset(&want), "step {}: {} kernel entries are not stored", self.step, kernel.difference(&want).count());
        }
        std::fs::remove_file(filler)?;
        // The listings kept for a retry reach the store without a restart.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = stored_names(&self.lab).unwrap_or_default();
            if refused.is_subset(&stored) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "step {}: {} refused names not stored 20 s after space came back",
                self.step,
                refused.difference(&stored).count()
            );
            thread::sleep(Duration::from_millis(200));
        }
        self.promised.listed.extend(refused);
        if op_added {
            self.promised.listed.insert(op);
        }
        // One episode, one line, from the listings and from each periodic job.
        let log = self.lab.agent.log_text();
        for line in ["store: cannot commit listings", "blocklist expiry failed:", "blocklist reconcile failed:"] {
            let n = log.matches(line).count();
            assert!(n <= self.full_episodes, "step {}: `{line}` logged {n} times in {} episodes", self.step, self.full_episodes);
        }
        Ok(format!("full filesystem: {count} refusals all read, operator add {}", if op_added { "accepted" } else { "refused" }))
    }

    /// The agent down, acknowledged names deleted offline, the agent back.
    fn offline_delete(&mut self) -> Result<String> {
        let how = if self.rng.random_bool(0.5) {
            self.kill_9();
            self.reap()?;
            "kill -9"
        } else {
            self.lab.agent.stop()?;
            "SIGTERM"
        };
        let candidates: Vec<String> = self.promised.listed.iter().cloned().collect();
        let picked: Vec<String> = candidates.choose_multiple(&mut self.rng, 5).cloned().collect();
        let mut removed = 0;
        for name in &picked {
            let out = self.lab.blocklist(&["del", name])?;
            if !ok(&out) {
                let who = std::process::Command::new("ss").args(["-xlpH"]).output()?;
                let sock = self.lab.admin_socket().display().to_string();
                let listeners: Vec<String> =
                    String::from_utf8_lossy(&who.stdout).lines().filter(|l| l.contains(&sock)).map(String::from).collect();
                panic!(
                    "step {} ({how}): offline del {name}: {}; listening on the admin socket: {listeners:?}",
                    self.step,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            self.promised.listed.remove(name);
            self.promised.removed.insert(name.clone());
            removed += 1;
        }
        self.restart()?;
        Ok(format!("agent stopped by {how}, {removed} names deleted offline, restarted"))
    }
}

fn seed() -> u64 {
    std::env::var("HELO_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random())
}

fn duration() -> Duration {
    Duration::from_secs(std::env::var("HELO_CHAOS_S").ok().and_then(|s| s.parse().ok()).unwrap_or(120))
}

#[test]
fn chaos_keeps_the_store_and_the_kernel_equal_and_loses_nothing_acknowledged() -> Result<()> {
    if !require_root("chaos_keeps_the_store_and_the_kernel_equal_and_loses_nothing_acknowledged") {
        return Ok(());
    }
    let seed = seed();
    println!("chaos: seed {seed} (HELO_CHAOS_SEED={seed} replays the order of faults), {:?}", duration());
    let dir = tempfile::tempdir()?;
    let mut args = one_source_many_names(dir.path())?;
    // Reconcile and expiry every second, so they run (and may fail) during every step.
    args.extend(["--reconcile-interval-s", "1", "--expire-interval-s", "1"].map(String::from));
    let mut lab = Lab::new(LabOptions { agent_args: args, with_postfix: false, state_fs: Some("8m".into()), ..Default::default() })?;
    // The hash key, read from the store while the agent is down, to compare names with hashes.
    lab.agent.stop()?;
    let key = Store::open(&lab.state_dir())?.hash_key()?;
    lab.restart_agent("agent1.log")?;
    let mut chaos =
        Chaos { lab, key, promised: Promised::default(), rng: StdRng::seed_from_u64(seed), step: 0, agent_logs: 1, full_episodes: 0 };
    chaos.check("start")?;
    let started = Instant::now();
    while started.elapsed() < duration() {
        chaos.step += 1;
        let what = match chaos.rng.random_range(0..4) {
            0 => chaos.burst(false)?,
            1 => chaos.burst(true)?,
            2 => chaos.full_filesystem()?,
            _ => chaos.offline_delete()?,
        };
        chaos.check(&what)?;
    }
    println!(
        "chaos: {} steps in {:?}, {} agent runs; {} names promised listed, {} promised removed, all held",
        chaos.step,
        started.elapsed(),
        chaos.agent_logs,
        chaos.promised.listed.len(),
        chaos.promised.removed.len()
    );
    Ok(())
}
