//! An instance's processes: the master started inside its namespace, its ports probed, and every
//! process of it gone when it stops.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

use super::{Postfix, DAEMON_DIRECTORY, START_TIMEOUT, STOP_TIMEOUT};

impl Postfix {
    /// `master -w` daemonizes and returns once the master's sockets are bound (or it failed).
    pub(super) fn start_master(&self, ns: &Netns) -> Result<()> {
        let mut child = ns
            .command(&format!("{DAEMON_DIRECTORY}/master"))
            .arg("-c")
            .arg(self.dir.join("etc"))
            .arg("-w")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the Postfix master")?;
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the Postfix master in {} did not report ready within {START_TIMEOUT:?}; maillog tail:\n{}",
                    self.dir.display(),
                    self.maillog_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            let out = child.wait_with_output()?;
            bail!(
                "the Postfix master in {} failed to start ({status}): {}{}\n`postfix check` says: {}\nmaillog tail:\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.check_output(),
                self.maillog_tail(30),
            );
        }
        Ok(())
    }

    /// Waits until both ports listen on every address (seen from inside the namespace, without
    /// connecting: a probe on the PROXY port would log a warning), then holds one real session
    /// on the plain port (banner, QUIT) so that smtpd is known to answer.
    /// What `postfix check` prints inside the namespace. Postfix writes its fatal errors at start
    /// (bad config, no such interface) to stderr only when stderr is a terminal, and not to the
    /// maillog, since postlogd is not running then: so run it under `script` for a pty.
    pub(super) fn check_output(&self) -> String {
        let cmd = format!("/usr/sbin/postfix -c '{}' check", self.dir.join("etc").display());
        match Command::new("ip").args(["netns", "exec", &self.ns_name, "script", "-qec", &cmd, "/dev/null"]).stdin(Stdio::null()).output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
                if text.trim().is_empty() {
                    format!("nothing ({})", out.status)
                } else {
                    text.trim().to_string()
                }
            }
            Err(e) => format!("(could not run it: {e})"),
        }
    }

    pub(super) fn wait_for_ports(&self, ns: &Netns, addrs: &[IpAddr]) -> Result<()> {
        let ports = [self.cfg.plain_port, self.cfg.proxy_port];
        let expected: Vec<SocketAddr> = addrs.iter().flat_map(|&ip| ports.map(|port| SocketAddr::new(ip, port))).collect();
        let probe = SocketAddr::new(addrs[0], self.cfg.plain_port);
        let deadline = Instant::now() + START_TIMEOUT;
        let outcome = ns.enter(move || -> std::result::Result<(), String> {
            loop {
                let listening = listening_sockets();
                let missing: Vec<&SocketAddr> = expected
                    .iter()
                    .filter(|a| !listening.iter().any(|l| l.port() == a.port() && (l.ip() == a.ip() || l.ip().is_unspecified())))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("nothing listens on {missing:?}"));
                }
                thread::sleep(Duration::from_millis(10));
            }
            smtp_banner_and_quit(probe, deadline).map_err(|e| format!("the plain port {probe} does not answer: {e:#}"))
        })?;
        if let Err(e) = outcome {
            bail!(
                "Postfix in {} (namespace {}) not ready after {START_TIMEOUT:?}: {e}; maillog tail:\n{}",
                self.dir.display(),
                self.ns_name,
                self.maillog_tail(30)
            );
        }
        Ok(())
    }

    /// Stops the instance: `postfix stop` inside the namespace, then SIGTERM and finally SIGKILL
    /// by pid if the master is still there, and waits until none of its processes is left.
    pub(super) fn stop(&mut self) -> Result<()> {
        let Some(pid) = self.pid_file() else {
            return Ok(()); // never started
        };
        if self.master_pid().is_none() && group_members(pid).is_empty() {
            return Ok(()); // already gone
        }
        // `postfix stop` checks inet_interfaces, so it only works inside the namespace.
        if self.master_pid().is_some() && Path::new(&format!("/run/netns/{}", self.ns_name)).exists() {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns_name, "/usr/sbin/postfix", "-c"])
                .arg(self.dir.join("etc"))
                .arg("stop")
                .stdin(Stdio::null())
                .output();
        }
        // `postfix stop` only sends the master SIGTERM; do it ourselves if that did not work.
        if !wait_until(Duration::from_secs(2), || self.master_pid().is_none()) {
            // SAFETY: plain kill(2) on the pid of our own master (checked by master_pid).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let group_gone = wait_until(STOP_TIMEOUT, || group_members(pid).is_empty());
        if !group_gone {
            // The master is the leader of its session and process group; so are its children.
            // SAFETY: kill(2) on the process group the master led; members exist (checked above).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            if !wait_until(STOP_TIMEOUT, || group_members(pid).is_empty()) {
                bail!("Postfix processes {:?} of {} survived SIGKILL", group_members(pid), self.dir.display());
            }
            bail!("Postfix in {} did not stop within {STOP_TIMEOUT:?}; killed", self.dir.display());
        }
        Ok(())
    }
}

/// TCP sockets in LISTEN state in the calling thread's network namespace.
pub(super) fn listening_sockets() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/thread-self/net/tcp", false), ("/proc/thread-self/net/tcp6", true)] {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "0A" {
                continue;
            }
            let Some((ip_hex, port_hex)) = fields[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port_hex, 16) else {
                continue;
            };
            // The kernel prints the address as 32-bit words in host (little-endian) order.
            let words: Vec<u32> = (0..ip_hex.len() / 8).filter_map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16).ok()).collect();
            let ip: IpAddr = match (v6, words.as_slice()) {
                (false, [w]) => std::net::Ipv4Addr::from(w.swap_bytes()).into(),
                (true, [a, b, c, d]) => {
                    let mut bytes = [0u8; 16];
                    for (i, w) in [a, b, c, d].into_iter().enumerate() {
                        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                    }
                    std::net::Ipv6Addr::from(bytes).into()
                }
                _ => continue,
            };
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

/// Connects, reads the 220 banner, says QUIT and reads the 221.
pub(super) fn smtp_banner_and_quit(addr: SocketAddr, deadline: Instant) -> Result<()> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let stream = TcpStream::connect_timeout(&addr, left())?;
    stream.set_read_timeout(Some(left()))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).context("reading the banner")?;
    if !line.starts_with("220 ") {
        bail!("banner {line:?}");
    }
    w.write_all(b"QUIT\r\n")?;
    line.clear();
    r.read_line(&mut line).context("reading the reply to QUIT")?;
    if !line.starts_with("221 ") {
        bail!("reply to QUIT {line:?}");
    }
    Ok(())
}

/// Alive and not a zombie.
pub(super) fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state_and_pgrp(&stat).is_some_and(|(state, _)| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Live (non-zombie) processes in process group `pgid`.
pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_state_and_pgrp(&s))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// State and process group from /proc/PID/stat (the command may contain spaces and parentheses).
pub(super) fn stat_state_and_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

pub(super) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
