//! `cargo xtask test`: setup, release build (eBPF included), `cargo fmt --check` and `cargo clippy
//! -D warnings`, then every test in the workspace:
//! unit, kernel (BPF_PROG_TEST_RUN), end-to-end (namespaces, native XDP on veth, Postfix) and the
//! Debian package's (built here first).
//!
//! The tests that need root run with the privileges we have; under `CI=true` the tests themselves
//! fail rather than skip, and the environment passes through unchanged.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{compile, package, proc, setup};

/// Runs everything and returns the exit code to leave with (cargo test's).
pub fn run(extra: &[String]) -> Result<i32> {
    setup::run(setup::Scope::Everything)?;
    compile::release()?;
    // The package test installs what `cargo xtask package` builds, from this build.
    package::build()?;
    // The code is formatted and lint-free (workspace lints, warnings denied) before it is tested:
    // a red gate here is as real a failure as a red test.
    proc::run(proc::cargo().args(["fmt", "--all", "--check"]))?;
    proc::run(proc::cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "helo-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    if !proc::is_root() {
        println!(
            "test: not root: the kernel and namespace tests need root; \
             with CI=true they fail, otherwise they skip"
        );
    }
    remove_stale_namespaces()?;

    // helo-ebpf only builds for bpfel (helo-user's build.rs builds it). --no-fail-fast: a failing
    // test binary must not hide the results of the others.
    let mut cmd = proc::cargo();
    cmd.args(["test", "--release", "--workspace", "--exclude", "helo-ebpf", "--no-fail-fast"]);
    cmd.args(extra);
    println!("$ {}", proc::display(&cmd));
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start `{}`", proc::display(&cmd)))?;

    // libtest prints its "test result:" lines on stdout; pass every byte through as it comes and
    // count on the way, so CI gets a closing summary line. Cargo's own messages go to stderr,
    // which stays attached to the terminal.
    let mut totals = Totals::default();
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        out.write_all(&line)?;
        out.flush()?;
        totals.add(&String::from_utf8_lossy(&line));
        line.clear();
    }
    drop(out);
    let status = child.wait()?;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if code != 0 && totals.failed == 0 {
        println!("test: cargo test failed before all tests ran (exit code {code})");
    }
    println!("{} passed, {} failed", totals.passed, totals.failed);
    Ok(code)
}

/// A killed earlier run leaves its `helo-t*` namespaces behind (the tests delete theirs on drop,
/// which a SIGKILL skips). Note that this also removes those of a test run going on right now.
fn remove_stale_namespaces() -> Result<()> {
    let Some(list) = proc::probe(Command::new("ip").args(["netns", "list"])) else {
        println!("test: `ip netns list` failed; no stale namespaces removed");
        return Ok(());
    };
    // Lines look like `helo-ta-1234 (id: 3)` or just `helo-ta-1234`.
    let stale: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with("helo-t")).collect();
    if stale.is_empty() {
        println!("test: no stale helo-t* namespaces");
        return Ok(());
    }
    proc::require_root("removing stale test namespaces")?;
    for name in &stale {
        proc::run(Command::new("ip").args(["netns", "delete", name]))?;
    }
    println!("test: removed {} stale namespace(s)", stale.len());
    Ok(())
}

/// Sums of libtest's `test result: ok. 5 passed; 1 failed; 0 ignored; ...` lines.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some((_, rest)) = line.split_once("test result:") else { return };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let [.., n, what] = words[..] else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s\n");
        t.add("test foo ... ok\n");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s");
        assert_eq!(t, Totals { passed: 8, failed: 1 });
    }
}
