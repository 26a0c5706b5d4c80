//! A real Postfix (the backend, or a sender): one self-contained instance per test, in its own directory,
//! listening inside a test namespace and delivering to Maildirs.
//!
//! Layout of the instance directory D (a temp dir; kept when `HELO_KEEP_TEST_DIRS=1`):
//!
//! ```text
//! D/etc/main.cf, master.cf, vmailbox   config_directory (+ key.pem, cert.pem with TLS)
//! D/queue/                               queue_directory: pid file, private/ and public/ sockets
//! D/data/                                data_directory: the master lock
//! D/maillog                              maillog_file (written by postlogd)
//! D/mail/<user@domain>/new/              one Maildir per configured address, owned by nobody
//! ```
//!
//! Two smtpd ports: `proxy_port` expects a PROXY header (`smtpd_upstream_proxy_protocol =
//! haproxy`), `plain_port` does not. Nothing is ever delivered outside: the only transports are
//! `virtual` (the Maildirs) and `error`. /etc/postfix is never touched. The instance stops on
//! drop, a panic included, and its processes are gone when the drop returns.
//!
//! The module by job: [`config`] writes the instance (main.cf, master.cf, the Maildirs, TLS),
//! [`process`] starts, probes and stops its processes, [`mail`] reads what it delivered and logged.

mod config;
mod mail;
mod process;

pub use config::PostfixConfig;

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

use self::{config::listen_addrs, process::process_alive};

const DAEMON_DIRECTORY: &str = "/usr/lib/postfix/sbin";
/// The uid and gid that own the Maildirs (nobody / nogroup).
const VIRTUAL_ID: u32 = 65534;
/// How long `start` waits for the master and for the ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `drop` waits for the processes to go after asking them to, before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Postfix instance. Stopped on drop.
pub struct Postfix {
    // `Option` so that drop can keep it (`HELO_KEEP_TEST_DIRS=1`) after stopping the instance.
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    ns_name: String,
    cfg: PostfixConfig,
}

impl Postfix {
    /// Writes the instance's directory, starts the master inside `ns` and returns once every
    /// listen address accepts on both ports (probed from inside `ns`), or fails within about 10 s
    /// with the tail of the maillog.
    pub fn start(ns: &Netns, cfg: PostfixConfig) -> Result<Postfix> {
        let addrs = listen_addrs(&cfg)?;
        if cfg.proxy_port == cfg.plain_port {
            bail!("proxy_port and plain_port must differ (both {})", cfg.proxy_port);
        }
        for user in &cfg.users {
            let Some((_, domain)) = user.split_once('@') else {
                bail!("user {user:?} is not a full address");
            };
            if !cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                bail!("user {user:?} is not in one of the domains {:?}", cfg.domains);
            }
        }
        let tmp = tempfile::Builder::new().prefix("helo-postfix-").tempdir().context("creating the Postfix instance directory")?;
        let dir = tmp.path().to_path_buf();
        // From here on, drop cleans up whatever got started.
        let pf = Postfix { tmp: Some(tmp), dir, ns_name: ns.name.clone(), cfg };
        pf.write_instance().with_context(|| format!("preparing {}", pf.dir.display()))?;
        pf.start_master(ns)?;
        pf.wait_for_ports(ns, &addrs)?;
        Ok(pf)
    }

    /// The instance directory D.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &PostfixConfig {
        &self.cfg
    }

    /// The master's pid, from `D/queue/pid/master.pid`, if it is our master and alive.
    pub fn master_pid(&self) -> Option<i32> {
        let pid = self.pid_file()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let etc = self.dir.join("etc");
        let ours = cmdline.split(|&b| b == 0).any(|arg| arg == etc.as_os_str().as_encoded_bytes());
        (ours && process_alive(pid)).then_some(pid)
    }

    fn pid_file(&self) -> Option<i32> {
        fs::read_to_string(self.dir.join("queue/pid/master.pid")).ok()?.trim().parse().ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("postfix: {e:#}");
        }
        let keep = std::env::var("HELO_KEEP_TEST_DIRS").is_ok_and(|v| v == "1");
        if let Some(tmp) = self.tmp.take() {
            if keep {
                let path = tmp.keep();
                let _ = writeln!(std::io::stderr(), "postfix: kept the instance directory {}", path.display());
            }
        }
    }
}
