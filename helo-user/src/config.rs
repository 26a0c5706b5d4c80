//! The agent's configuration: a TOML file and command-line flags with the same keys. Flags win.
//!
//! Everything is checked here, before anything is loaded or bound, so a mistake costs one clear
//! error line (and exit code 2), not a half-started agent.

use std::{net::{IpAddr, SocketAddr}, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kernel::{AttachMode, FilterMode};

/// What to do on a socket whose greeting the kernel dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KernelDropReply {
    /// Write the entry's reply text, then close: the sender's logs say why.
    Reply,
    /// Close without a word (for floods).
    Silent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Timeouts {
    /// Idle time allowed between client commands (RFC 5321 4.5.3.2: 5 minutes).
    pub command_s: u64,
    /// Connecting to the MTA.
    pub backend_connect_s: u64,
    /// How long SIGTERM waits for open sessions before exiting.
    pub shutdown_grace_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { command_s: 300, backend_connect_s: 10, shutdown_grace_s: 30 }
    }
}

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/helo/admin.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/helo";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/helo";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub iface: Option<String>,
    pub xdp_mode: AttachMode,
    /// User space only: the maps are kept (and filled) but no XDP program is attached, so nothing
    /// is dropped in the kernel. For hosts whose NIC or kernel cannot run XDP, and for comparisons.
    pub no_xdp: bool,
    pub listen: Vec<SocketAddr>,
    pub backend: SocketAddr,
    pub hostname: Option<String>,
    pub server_ip: Vec<IpAddr>,
    pub domain: Vec<String>,
    pub mode: FilterMode,
    /// TCP ports the XDP program filters (`--port`, repeatable).
    #[serde(rename = "port")]
    pub ports: Vec<u16>,
    pub state_dir: PathBuf,
    pub kernel_drop_reply: KernelDropReply,
    pub max_sessions: usize,
    pub max_sessions_per_source: usize,
    /// Protocol errors (unknown commands, overlong lines) before a 421.
    pub max_errors: u32,
    /// How long to hold the banner to see whether the client talks first.
    pub pregreet_ms: u64,
    /// Time to live of a listed greeting, and of a listed source.
    pub helo_ttl_s: u64,
    pub source_ttl_s: u64,
    /// Capacity of the kernel's HELO map.
    pub helo_capacity: u32,
    /// Where maps and the XDP link are pinned (on a bpf filesystem).
    pub pin_dir: PathBuf,
    /// Prometheus metrics at http://ADDR/metrics.
    pub metrics: SocketAddr,
    /// The root-only admin socket for `blocklist` and `stats`.
    pub admin_socket: PathBuf,
    /// How often expired entries are removed from the store and the kernel.
    pub expire_interval_s: u64,
    /// How often the store is checked against the kernel maps for entries a full map evicted.
    pub reconcile_interval_s: u64,
    /// Share the blocklist through Redis: `redis://[user:pass@]host:port/db` (`rediss://` for TLS).
    pub fleet: Option<String>,
    /// This box's name in the fleet. Default: the hostname.
    pub fleet_name: Option<String>,
    pub timeouts: Timeouts,
    pub classifier: crate::classify::ClassifierConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            iface: None,
            xdp_mode: AttachMode::Native,
            no_xdp: false,
            listen: vec!["0.0.0.0:25".parse().unwrap(), "[::]:25".parse().unwrap()],
            backend: "127.0.0.1:10025".parse().unwrap(),
            hostname: None,
            server_ip: vec![],
            domain: vec![],
            mode: FilterMode::Enforce,
            ports: vec![helo_common::maps::DEFAULT_PORT],
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            kernel_drop_reply: KernelDropReply::Reply,
            max_sessions: 1000,
            max_sessions_per_source: 50,
            max_errors: 10,
            pregreet_ms: 0,
            helo_ttl_s: 7 * 24 * 3600,
            source_ttl_s: 24 * 3600,
            helo_capacity: helo_common::maps::DEFAULT_HELO_CAPACITY,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            metrics: "127.0.0.1:9725".parse().unwrap(),
            admin_socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            expire_interval_s: 10,
            reconcile_interval_s: 300,
            fleet: None,
            fleet_name: None,
            timeouts: Timeouts::default(),
            classifier: Default::default(),
        }
    }
}

impl Config {
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's own rendering spans several lines; an operator wants one.
            let line = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(0);
            anyhow::anyhow!("{} line {line}: {}", path.display(), e.message().trim())
        })
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.hostname.as_deref().unwrap_or("").is_empty() {
            bail!("hostname is required (--hostname or `hostname` in the config file)");
        }
        if self.listen.is_empty() {
            bail!("at least one listen address is required");
        }
        if self.ports.is_empty() || self.ports.contains(&0) {
            bail!("port must list at least one port, none of them 0");
        }
        if self.expire_interval_s == 0 || self.reconcile_interval_s == 0 {
            bail!("expire-interval-s and reconcile-interval-s must be above 0");
        }
        if self.max_sessions == 0 || self.max_sessions_per_source == 0 {
            bail!("max-sessions and max-sessions-per-source must be above 0");
        }
        Ok(())
    }

    /// The classifier for these rules and server facts (flags add IPs and domains to the file's).
    pub fn classifier(&self) -> Result<crate::classify::Classifier> {
        let rules = self.classifier.clone().with_server_facts(
            self.server_ip.iter().copied(),
            self.hostname.clone(),
            self.domain.iter().cloned(),
        );
        crate::classify::Classifier::new(&rules).map_err(|e| anyhow::anyhow!("classifier: {e}"))
    }

    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or("")
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.command_s)
    }
}
