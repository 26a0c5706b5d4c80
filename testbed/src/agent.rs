//! The real `helo` binary, run inside a test namespace, stopped on drop.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// The agent's executable name, as operators type it and as `ss -p` reports its sockets.
pub const BINARY_NAME: &str = "helo";

/// Whether a line of `ss -p` output is a socket the agent process holds (`users:(("helo",pid=…`).
pub fn ss_line_is_agent(line: &str) -> bool {
    line.contains(&format!("((\"{BINARY_NAME}\","))
}

/// `target/<profile>/helo`: beside this executable (the lab), or beside the `deps/`
/// directory a test binary runs from.
pub fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let candidates = [dir.join(BINARY_NAME), dir.parent().map(|p| p.join(BINARY_NAME)).unwrap_or_default()];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| format!("{} is missing: build it first (`cargo xtask test` does)", candidates[1].display()))
}

/// How the agent is started beyond its arguments: what the tests of the systemd unit need.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Extra environment (`NOTIFY_SOCKET`, say).
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that execs the agent: `setpriv --bounding-set=…` runs it with
    /// only the unit's capabilities.
    pub wrapper: Vec<String>,
}

pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts `helo ARGS` in `ns` and waits until `ready` accepts TCP connections (probed from
    /// inside the namespace).
    pub fn start(ns: &Netns, args: &[String], ready: SocketAddr, log: PathBuf) -> Result<Self> {
        Self::start_logging(ns, args, ready, log, "debug")
    }

    /// [`AgentProcess::start`] with `RUST_LOG=level` (benchmarks run at the production default,
    /// `info`, since logging is part of what a session costs).
    pub fn start_logging(ns: &Netns, args: &[String], ready: SocketAddr, log: PathBuf, level: &str) -> Result<Self> {
        Self::start_with(ns, args, ready, log, level, &Launch::default())
    }

    /// [`AgentProcess::start_logging`], started as `launch` says.
    pub fn start_with(ns: &Netns, args: &[String], ready: SocketAddr, log: PathBuf, level: &str, launch: &Launch) -> Result<Self> {
        let log_file = std::fs::File::create(&log)?;
        let binary = binary()?;
        let mut command = match launch.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = ns.command(program);
                c.args(wrapper_args).arg(&binary);
                c
            }
            None => ns.command(binary.to_str().unwrap()),
        };
        let child = command
            .args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("spawning helo")?;
        let mut agent = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                bail!("helo exited early ({status}): {}", agent.log_text());
            }
            let up = ns.enter(move || TcpStream::connect_timeout(&ready, Duration::from_millis(200)).is_ok())?;
            if up {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!("helo did not listen on {ready} within 20 s: {}", agent.log_text());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until the process has exited, every thread of it (so its files, the store's
    /// lock and its sockets, are closed), and reaps it. For after a signal sent by pid.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("helo did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("helo ignored SIGTERM for 40 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
