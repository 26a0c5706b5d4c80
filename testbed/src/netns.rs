//! Test hosts: network namespaces joined by veth pairs, on 198.18.0.0/15 and 2001:2::/48.
//!
//! Names are unique per process and per call, and everything is deleted on drop (a panic included),
//! so a failed test leaves nothing behind. `cargo xtask test` also deletes stale `helo-t*`
//! namespaces left by a killed run. Traffic never leaves these namespaces.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{bail, Context, Result};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A short id unique to this process and call, for namespace and interface names (interface
/// names are limited to 15 bytes).
pub fn unique_id() -> String {
    format!("{}{}", std::process::id() % 100_000, NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command and fails with its output if it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

pub fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (unless it is only borrowed by name).
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(role: &str) -> Result<Self> {
        let name = format!("helo-t{role}-{}", unique_id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns: dropping it deletes nothing.
    pub fn borrowed(name: String) -> Self {
        Self { name, owned: false }
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it opens, and XDP attaches it
    /// makes, belong to the namespace. File descriptors (maps, programs) stay usable everywhere.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        enter_named(&self.name, f)
    }

    /// Spawns a long-lived thread inside the namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<thread::JoinHandle<T>> {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(thread::spawn(move || {
            // SAFETY: as in `enter`.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }))
    }
}

/// [`Netns::enter`] for a namespace known by name only.
pub fn enter_named<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd changes only this thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting the namespace deletes the veth ends inside it, and with them their peers.
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// One end of a link: the namespace, the interface name and its addresses.
pub struct Endpoint {
    pub ifname: String,
    pub v4: String,
    pub v6: String,
}

/// Joins two namespaces with a veth pair on `198.18.<subnet>.0/24` and `2001:2:0:<subnet>::/64`.
/// `a` gets host .1 / ::1, `b` gets .2 / ::2.
pub fn link(a: &Netns, b: &Netns, subnet: u8) -> Result<(Endpoint, Endpoint)> {
    let id = unique_id();
    let (an, bn) = (format!("hva{id}"), format!("hvb{id}"));
    ip(&["link", "add", &an, "netns", &a.name, "type", "veth", "peer", "name", &bn, "netns", &b.name])?;
    let mut ends = Vec::new();
    for (ns, ifname, host) in [(a, &an, 1u8), (b, &bn, 2u8)] {
        let v4 = format!("198.18.{subnet}.{host}");
        let v6 = format!("2001:2:0:{subnet}::{host}");
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
        ns.ip(&["link", "set", ifname, "up"])?;
        ends.push(Endpoint { ifname: ifname.clone(), v4, v6 });
    }
    let b_end = ends.pop().unwrap();
    let a_end = ends.pop().unwrap();
    Ok((a_end, b_end))
}
