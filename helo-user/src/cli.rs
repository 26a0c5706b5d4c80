//! The command line: `run` (the agent), `classify` (the rules on JSON lines).
//!
//! `run`'s flags are the config file's keys; a flag given on the command line wins over the file.
//! A flag whose default lives in the configuration (so that the file can set it) names that
//! default in its help text rather than through clap, which would make it always win.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Config, KernelDropReply, MetricsAddr, DEFAULT_ADMIN_SOCKET, DEFAULT_STATE_DIR},
    kernel::{AttachMode, FilterMode},
    logging::LogFormat,
};

#[derive(Parser, Debug)]
#[command(name = "helo", version, about = "XDP-assisted SMTP HELO edge filter")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines look on stderr: `text` (one line per event, `session=<id> word key=value`) or
    /// `json` (one object per line). Under systemd, lines carry journald priorities either way.
    #[arg(long = "log-format", value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to log: `error`, `warn`, `info`, `debug`, or `tracing` directives
    /// (`info,helo_user::fleet=debug`) [default: RUST_LOG, else info].
    #[arg(long = "log-level", global = true)]
    pub log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant, reason = "parsed once, at start")]
pub enum Command {
    /// Attach the XDP filter and run the SMTP edge agent.
    Run(RunArgs),
    /// Classify greetings read as JSON lines on stdin; one JSON verdict per line on stdout.
    Classify(ClassifyArgs),
    /// List and edit the blocklist (through the running agent, or its store when none runs).
    Blocklist(BlocklistArgs),
    /// List and edit the allow list at run time: client addresses, networks and greeting names that
    /// are always accepted (through the running agent, or its store and pinned maps when none runs).
    Allow(AllowArgs),
    /// The agent's counters, with per-second rates.
    Stats(StatsArgs),
    /// A live view of the running agent (q or Ctrl-C to quit).
    Top(TopArgs),
    /// Re-read the running agent's configuration (as SIGHUP does) and apply what can change at run
    /// time: classifier rules, reply texts, allow lists (the kernel's too). On an error the agent
    /// keeps its configuration and this command prints why.
    Reload(ReloadArgs),
    /// Remove the pinned XDP link (detaching the filter) and the pinned maps.
    Detach {
        /// Where the agent pinned them.
        #[arg(long = "pin-dir", default_value = "/sys/fs/bpf/helo")]
        pin_dir: PathBuf,
    },
    /// Validate a config file and print it back, resolved with every default (secrets masked).
    CheckConfig {
        /// The TOML file, as given to `run --config`.
        file: PathBuf,
    },
    /// Write the man pages and the bash, zsh and fish completions under DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// Where `man/` and `completions/` are written.
        dir: PathBuf,
    },
}

/// Where to find the agent, or its store.
#[derive(Args, Debug, Clone, Default)]
pub struct AdminArgs {
    /// The agent's config file: its `state-dir` and `admin-socket` are used unless given here.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The agent's admin socket [default: the config file's, else /run/helo/admin.sock].
    #[arg(long = "admin-socket", global = true)]
    pub admin_socket: Option<PathBuf>,
    /// The agent's state directory, used when no agent runs [default: the config file's, else
    /// /var/lib/helo]. It must exist.
    #[arg(long = "state-dir", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Where the agent pins its maps: with no agent running, changes go there too [default: the
    /// config file's, else /sys/fs/bpf/helo].
    #[arg(long = "pin-dir", global = true)]
    pub pin_dir: Option<PathBuf>,
}

impl AdminArgs {
    /// (admin socket, state directory): the flag, else the config file's, else the default.
    pub fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let file = match &self.config {
            Some(path) => Some(Config::from_file(path)?),
            None => None,
        };
        let socket = self
            .admin_socket
            .clone()
            .or_else(|| file.as_ref().map(|c| c.admin_socket.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET));
        let state = self
            .state_dir
            .clone()
            .or_else(|| file.as_ref().map(|c| c.state_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok((socket, state))
    }

    /// The pin directory: the flag, else the config file's, else the default.
    pub fn resolve_pin_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.pin_dir {
            return Ok(dir.clone());
        }
        Ok(match &self.config {
            Some(path) => Config::from_file(path)?.pin_dir,
            None => PathBuf::from(crate::config::DEFAULT_PIN_DIR),
        })
    }
}

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
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
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a greeting name, or a source address.
    Add {
        /// A greeting name, an IP address or a CIDR network.
        name: String,
        /// Default: `source` for an IP address or CIDR, `helo` otherwise.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Time to live, e.g. `90m`, `24h`, `7d`, or plain seconds; `0` never expires. Default: the
        /// agent's (helo-ttl-s, source-ttl-s).
        #[arg(long, value_parser = crate::duration::parse_seconds)]
        ttl: Option<u64>,
        /// Why it is listed, shown by `list` [default: operator].
        #[arg(long)]
        reason: Option<String>,
        /// The reply a dropped sender reads [default: 550 5.7.1 Bogus HELO].
        #[arg(long)]
        reply: Option<String>,
    },
    /// Remove a greeting name, an address or a network (any spelling of a name).
    Del {
        /// The greeting name, address or network.
        name: String,
        /// Default: `source` for an IP address or CIDR, `helo` otherwise.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Remove it on every box of the fleet, not only here.
        #[arg(long)]
        fleet: bool,
    },
    /// Show one entry (exit 1 if it is not listed).
    Get {
        /// The greeting name, address or network.
        name: String,
        /// Default: `source` for an IP address or CIDR, `helo` otherwise.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Remove every entry.
    Flush,
    /// Write every entry as JSON Lines to stdout.
    Export,
    /// Add entries from a JSON Lines file (as `export` writes): all of them, or none.
    Import {
        /// The JSON Lines file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct AllowArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: AllowCommand,
}

#[derive(Subcommand, Debug)]
pub enum AllowCommand {
    /// Every allowed entry: kind, value, origin (config or operator), when an operator added it.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Allow a client address or CIDR network (every greeting from it is accepted, and the kernel
    /// never drops it), or a greeting name (accepted from any client, and taken off the blocklist).
    /// Kept in the state directory: it survives restarts.
    Add {
        /// An IP address, a CIDR network or a greeting name.
        value: String,
        /// Default: `net` for an IP address or CIDR, `name` otherwise.
        #[arg(long, value_enum)]
        kind: Option<crate::allow::AllowKind>,
    },
    /// Remove an entry `allow add` made (the config file's entries stay: edit the file and reload).
    Del {
        /// The address, network or name, as given to `add` (any spelling).
        value: String,
        /// Default: `net` for an IP address or CIDR, `name` otherwise.
        #[arg(long, value_enum)]
        kind: Option<crate::allow::AllowKind>,
    },
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
#[derive(Args, Debug, Default, Clone)]
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

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub facts: FactArgs,
    /// Interface to attach the XDP program to (required unless --no-xdp).
    #[arg(long)]
    pub iface: Option<String>,
    /// How to attach: native (in the driver, or fail), skb (generic), auto (native, else skb)
    /// [default: native].
    #[arg(long = "xdp-mode", value_enum)]
    pub xdp_mode: Option<AttachMode>,
    /// Attach no XDP program: classify, reply and keep the blocklist in user space only.
    #[arg(long = "no-xdp", conflicts_with_all = ["iface", "xdp_mode"])]
    pub no_xdp: bool,
    /// Address to accept SMTP on (repeat for several) [default: 0.0.0.0:25 and [::]:25].
    #[arg(long)]
    pub listen: Vec<SocketAddr>,
    /// The MTA sessions are handed to (it must accept PROXY protocol v2) [default: 127.0.0.1:10025].
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    /// enforce: drop listed greetings and sources; observe: count and report them, but pass
    /// [default: enforce].
    #[arg(long, value_enum)]
    pub mode: Option<FilterMode>,
    /// TCP port the kernel filters (repeat for several) [default: 25].
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// The durable store (blocklist, hash key, fleet outbox) [default: /var/lib/helo].
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// What a sender whose greeting the kernel dropped reads before the close [default: reply].
    #[arg(long = "kernel-drop-reply", value_enum)]
    pub kernel_drop_reply: Option<KernelDropReply>,
    /// Open SMTP sessions at most; more get 421 [default: 1000].
    #[arg(long = "max-sessions")]
    pub max_sessions: Option<usize>,
    /// Open SMTP sessions per client address at most [default: 50].
    #[arg(long = "max-sessions-per-source")]
    pub max_sessions_per_source: Option<usize>,
    /// Threads running SMTP sessions, each with its own event loop and listening socket; 0 is one
    /// per CPU core [default: 0].
    #[arg(long = "session-threads")]
    pub session_threads: Option<usize>,
    /// Hold the banner this long to catch clients that talk first: milliseconds, or a duration
    /// like `500ms` [default: 0].
    #[arg(long = "pregreet-ms", value_parser = crate::duration::parse_millis)]
    pub pregreet_ms: Option<u64>,
    /// Log lines a minute that may quote what clients sent (greetings, bad commands); past that,
    /// protocol errors go unlogged and rejections are logged without the client's bytes, and a
    /// summary counts them [default: 600].
    #[arg(long = "log-client-lines-per-minute")]
    pub log_client_lines_per_minute: Option<u64>,
    /// A last line for every rejection reply, like Postfix's smtpd_reject_footer (`\n` starts
    /// another line) [default: none].
    #[arg(long = "reply-footer")]
    pub reply_footer: Option<String>,
    /// The Public Suffix List file, read at start and on every reload [default:
    /// /usr/share/publicsuffix/public_suffix_list.dat when present, else the list compiled in].
    #[arg(long = "public-suffix-list")]
    pub public_suffix_list: Option<PathBuf>,
    /// Idle time allowed between client commands (timeouts.command-s): seconds, or a duration like
    /// `5m` [default: 300].
    #[arg(long = "command-timeout-s", value_parser = crate::duration::parse_seconds)]
    pub command_timeout_s: Option<u64>,
    /// Where the maps and the XDP link are pinned, on a bpf filesystem [default: /sys/fs/bpf/helo].
    #[arg(long = "pin-dir")]
    pub pin_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, or `off` [default: 127.0.0.1:9725].
    /// A port that cannot be bound fails the start.
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub metrics: Option<MetricsAddr>,
    /// The root-only admin socket for blocklist, stats, top and reload [default: /run/helo/admin.sock].
    #[arg(long = "admin-socket")]
    pub admin_socket: Option<PathBuf>,
    /// Time between removals of expired entries from the store and the kernel: seconds, or a
    /// duration like `10s` [default: 10].
    #[arg(long = "expire-interval-s", value_parser = crate::duration::parse_seconds)]
    pub expire_interval_s: Option<u64>,
    /// Time between checks for entries a full kernel map evicted: seconds, or a duration like
    /// `5m` [default: 300].
    #[arg(long = "reconcile-interval-s", value_parser = crate::duration::parse_seconds)]
    pub reconcile_interval_s: Option<u64>,
    /// Time to live of a listed greeting: a duration like `7d`, `12h`, or seconds [default: 7d].
    #[arg(long = "helo-ttl-s", value_parser = crate::duration::parse_seconds)]
    pub helo_ttl_s: Option<u64>,
    /// Time to live of a listed source address or network: a duration like `1d`, `90m`, or seconds
    /// [default: 1d].
    #[arg(long = "source-ttl-s", value_parser = crate::duration::parse_seconds)]
    pub source_ttl_s: Option<u64>,
    /// Share the blocklist through Redis: redis://[user@]host:port/db (rediss:// for TLS). Put the
    /// password in --fleet-password-file, not here: a command line is readable by every local user.
    #[arg(long)]
    pub fleet: Option<String>,
    /// This box's name in the fleet [default: the hostname].
    #[arg(long = "fleet-name")]
    pub fleet_name: Option<String>,
    /// A file (mode 0600) whose first line is the Redis password for --fleet.
    #[arg(long = "fleet-password-file")]
    pub fleet_password_file: Option<PathBuf>,
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
        set(&mut c.session_threads, self.session_threads);
        set(&mut c.pregreet_ms, self.pregreet_ms);
        set(&mut c.log_client_lines_per_minute, self.log_client_lines_per_minute);
        if self.reply_footer.is_some() {
            c.reply_footer = self.reply_footer;
        }
        if self.public_suffix_list.is_some() {
            c.public_suffix_list = self.public_suffix_list;
        }
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
        if self.fleet_password_file.is_some() {
            c.fleet_password_file = self.fleet_password_file;
        }
        c.require_xdp_choice()?;
        c.validate()?;
        Ok(c)
    }
}
