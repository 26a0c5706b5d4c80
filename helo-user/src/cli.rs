//! The command line: `run` (the agent), `classify` (the rules on JSON lines).
//!
//! `run`'s flags are the config file's keys; a flag given on the command line wins over the file.

use std::{net::{IpAddr, SocketAddr}, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Config, KernelDropReply},
    kernel::{AttachMode, FilterMode},
};

#[derive(Parser, Debug)]
#[command(name = "helo-user", version, about = "XDP-assisted SMTP HELO edge filter")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the XDP filter and run the SMTP edge agent.
    Run(RunArgs),
    /// Classify greetings read as JSON lines on stdin; one JSON verdict per line on stdout.
    Classify(ClassifyArgs),
    /// List and edit the blocklist (through the running agent, or its store when none runs).
    Blocklist(BlocklistArgs),
    /// The agent's counters, with per-second rates.
    Stats(StatsArgs),
    /// A live view of the running agent (q or Ctrl-C to quit).
    Top(TopArgs),
    /// Remove the pinned XDP link (detaching the filter) and the pinned maps.
    Detach {
        #[arg(long = "pin-dir", default_value = "/sys/fs/bpf/helo")]
        pin_dir: PathBuf,
    },
    /// Validate a config file and print it back, resolved with every default.
    CheckConfig { file: PathBuf },
}

/// Where to find the agent, or its store.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[arg(long = "admin-socket", default_value = crate::config::DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    #[arg(long = "state-dir", default_value = crate::config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Where the agent pins its maps: with no agent running, changes go there too.
    #[arg(long = "pin-dir", default_value = crate::config::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct BlocklistArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: BlocklistCommand,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KindArg {
    Helo,
    Source,
}

#[derive(Subcommand, Debug)]
pub enum BlocklistCommand {
    /// Every entry: kind, name, reason, added, expiry, hits, last hit.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List a greeting name, or a source address.
    Add {
        name: String,
        /// Default: `source` for an IP address, `helo` otherwise.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Time to live, e.g. `90m`, `24h`, `7d`; `0` never expires. Default: the agent's.
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        #[arg(long)]
        reason: Option<String>,
        /// The reply a dropped sender reads. Default `550 5.7.1 Bogus HELO`.
        #[arg(long)]
        reply: Option<String>,
    },
    Del {
        name: String,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Remove it on every box of the fleet, not only here.
        #[arg(long)]
        fleet: bool,
    },
    /// Show one entry (exit 1 if it is not listed).
    Get {
        name: String,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Remove every entry.
    Flush,
    /// Write every entry as JSON Lines to stdout.
    Export,
    /// Add entries from a JSON Lines file (as `export` writes): all of them, or none.
    Import { file: PathBuf },
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Quit by itself after this many seconds (for scripted demos).
    #[arg(long = "exit-after")]
    pub exit_after: Option<u64>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Seconds between the two readings the rates come from.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

/// Server facts shared by `run` and `classify`.
#[derive(Args, Debug, Default)]
pub struct FactArgs {
    /// TOML config file; flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This server's host name, as in the banner.
    #[arg(long)]
    pub hostname: Option<String>,
    /// An IP address of this server (repeat for several).
    #[arg(long = "server-ip")]
    pub server_ip: Vec<IpAddr>,
    /// A domain this server receives mail for (repeat for several).
    #[arg(long)]
    pub domain: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub facts: FactArgs,
    /// Interface to attach the XDP program to.
    #[arg(long)]
    pub iface: Option<String>,
    #[arg(long = "xdp-mode", value_enum)]
    pub xdp_mode: Option<AttachMode>,
    /// Attach no XDP program: classify, reply and keep the blocklist in user space only.
    #[arg(long = "no-xdp", conflicts_with_all = ["iface", "xdp_mode"])]
    pub no_xdp: bool,
    /// Address to accept SMTP on (repeat for several). Default: 0.0.0.0:25 and [::]:25.
    #[arg(long)]
    pub listen: Vec<SocketAddr>,
    /// The MTA sessions are handed to (it must accept PROXY protocol v2). Default 127.0.0.1:10025.
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    #[arg(long, value_enum)]
    pub mode: Option<FilterMode>,
    /// TCP port the kernel filters (repeat for several). Default 25.
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// What a sender whose greeting the kernel dropped reads before the close.
    #[arg(long = "kernel-drop-reply", value_enum)]
    pub kernel_drop_reply: Option<KernelDropReply>,
    #[arg(long = "max-sessions")]
    pub max_sessions: Option<usize>,
    #[arg(long = "max-sessions-per-source")]
    pub max_sessions_per_source: Option<usize>,
    #[arg(long = "pregreet-ms")]
    pub pregreet_ms: Option<u64>,
    #[arg(long = "command-timeout-s")]
    pub command_timeout_s: Option<u64>,
    #[arg(long = "pin-dir")]
    pub pin_dir: Option<PathBuf>,
    /// Serve Prometheus metrics here. Default 127.0.0.1:9725.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[arg(long = "admin-socket")]
    pub admin_socket: Option<PathBuf>,
    #[arg(long = "expire-interval-s")]
    pub expire_interval_s: Option<u64>,
    #[arg(long = "reconcile-interval-s")]
    pub reconcile_interval_s: Option<u64>,
    /// Default time to live of a listed greeting and of a listed source, in seconds.
    #[arg(long = "helo-ttl-s")]
    pub helo_ttl_s: Option<u64>,
    #[arg(long = "source-ttl-s")]
    pub source_ttl_s: Option<u64>,
    /// Share the blocklist through Redis: redis://[user:pass@]host:port/db (rediss:// for TLS).
    #[arg(long)]
    pub fleet: Option<String>,
    /// This box's name in the fleet (default: --hostname).
    #[arg(long = "fleet-name")]
    pub fleet_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub facts: FactArgs,
}

fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *slot = v;
    }
}

fn set_list<T>(slot: &mut Vec<T>, flag: Vec<T>) {
    if !flag.is_empty() {
        *slot = flag;
    }
}

impl FactArgs {
    /// The file's configuration with these flags laid over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if self.hostname.is_some() {
            c.hostname = self.hostname.clone();
        }
        set_list(&mut c.server_ip, self.server_ip.clone());
        set_list(&mut c.domain, self.domain.clone());
        Ok(c)
    }
}

impl RunArgs {
    pub fn config(self) -> anyhow::Result<Config> {
        let mut c = self.facts.config()?;
        if self.iface.is_some() {
            c.iface = self.iface;
        }
        set(&mut c.xdp_mode, self.xdp_mode);
        c.no_xdp |= self.no_xdp;
        set_list(&mut c.listen, self.listen);
        set(&mut c.backend, self.backend);
        set(&mut c.mode, self.mode);
        set_list(&mut c.ports, self.ports);
        set(&mut c.state_dir, self.state_dir);
        set(&mut c.kernel_drop_reply, self.kernel_drop_reply);
        set(&mut c.max_sessions, self.max_sessions);
        set(&mut c.max_sessions_per_source, self.max_sessions_per_source);
        set(&mut c.pregreet_ms, self.pregreet_ms);
        set(&mut c.timeouts.command_s, self.command_timeout_s);
        set(&mut c.pin_dir, self.pin_dir);
        set(&mut c.metrics, self.metrics);
        set(&mut c.admin_socket, self.admin_socket);
        set(&mut c.expire_interval_s, self.expire_interval_s);
        set(&mut c.reconcile_interval_s, self.reconcile_interval_s);
        set(&mut c.helo_ttl_s, self.helo_ttl_s);
        set(&mut c.source_ttl_s, self.source_ttl_s);
        if self.fleet.is_some() {
            c.fleet = self.fleet;
        }
        if self.fleet_name.is_some() {
            c.fleet_name = self.fleet_name;
        }
        match (&c.iface, c.no_xdp) {
            (None, false) => anyhow::bail!("--iface is required (or `iface` in the config file), unless --no-xdp"),
            (Some(_), true) => anyhow::bail!("--no-xdp and an interface to attach to contradict each other"),
            _ => {}
        }
        c.validate()?;
        Ok(c)
    }
}
