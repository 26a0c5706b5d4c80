//! The command line: `run` (the agent), `classify` (the rules on JSON lines).
//!
//! `run`'s flags are the config file's keys; a flag given on the command line wins over the file.
//! A flag whose default lives in the configuration (so that the file can set it) names that
//! default in its help text rather than through clap, which would make it always win.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{declare::LayOver, Config, FactFlags, RunFlags, DEFAULT_ADMIN_SOCKET, DEFAULT_STATE_DIR},
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

/// Server facts shared by `run` and `classify`: the config file, and the fact flags over it.
#[derive(Args, Debug, Default, Clone)]
pub struct FactArgs {
    /// TOML config file; flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub flags: FactFlags,
}

/// `helo run`'s flags: every agent option with a flag is a row of the table in
/// [`crate::config`]; `--command-timeout-s` is the one flag that reaches into a table
/// (`timeouts.command-s`).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub facts: FactArgs,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Idle time allowed between client commands (timeouts.command-s): seconds, or a duration like
    /// `5m` [default: 300].
    #[arg(long = "command-timeout-s", value_parser = crate::duration::parse_seconds)]
    pub command_timeout_s: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub facts: FactArgs,
}

impl FactArgs {
    /// The file's configuration with these flags laid over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.flags.clone().lay_over(&mut c);
        Ok(c)
    }
}

impl RunArgs {
    pub fn config(self) -> anyhow::Result<Config> {
        let mut c = self.facts.config()?;
        self.flags.lay_over(&mut c);
        LayOver::lay_over(self.command_timeout_s, &mut c.timeouts.command_s);
        c.require_xdp_choice()?;
        c.validate()?;
        Ok(c)
    }
}
