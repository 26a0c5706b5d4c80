//! The agent's configuration: a TOML file and command-line flags with the same keys. Flags win.
//! Each option is one row of the `options!` table below: its key, flag, default and help
//! (`declare.rs` turns the table into [`Config`], its defaults, the flag structs and their merge).
//!
//! Everything is checked here, before anything is loaded or bound, so a mistake costs one clear
//! error line (and exit code 2), not a half-started agent.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::modes::{AttachMode, FilterMode};

pub(crate) mod declare;
#[cfg(test)]
mod options_tests;

use declare::options;

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
    /// Idle time allowed between client commands (RFC 5321 4.5.3.2: 5 minutes). Before the
    /// greeting and between relayed commands; shortened to `stress-s` under load.
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub command_s: u64,
    /// How long the MTA may take to answer relayed commands (RFC 5321 4.5.3.2: 10 minutes after
    /// the message's final dot).
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub reply_s: u64,
    /// How long a relayed session may go without a byte either way once it copies raw bytes
    /// (message content, TLS).
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub data_s: u64,
    /// How long one write may stall on a client (or MTA) that does not read.
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub write_s: u64,
    /// How long a refused client is still answered (its HELO fallback, its QUIT).
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub linger_s: u64,
    /// The command timeout when `stress-percent` of `max-sessions` are in use (postscreen's
    /// `${stress?10}`): idle and slow clients cannot starve the rest.
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub stress_s: u64,
    /// Connecting to the MTA.
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub backend_connect_s: u64,
    /// How long SIGTERM waits for open sessions before exiting.
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub shutdown_grace_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command_s: 300,
            reply_s: 600,
            data_s: 600,
            write_s: 60,
            linger_s: 10,
            stress_s: 10,
            backend_connect_s: 10,
            shutdown_grace_s: 30,
        }
    }
}

/// The offender ladder (`[ladder]`): a source whose greetings are refused `strikes` times within
/// `window-s` is listed, by the kernel itself where it drops the greeting, for `ttl-s`, doubled for
/// each offence after the first up to `max-ttl-s`. Its next `answers` connections are let through
/// and told why (a 554 banner with the entry's words); then its SYNs are dropped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LadderSettings {
    /// 0 turns the ladder off.
    pub strikes: u32,
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub window_s: u64,
    pub answers: u32,
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub ttl_s: u64,
    #[serde(deserialize_with = "crate::duration::seconds")]
    pub max_ttl_s: u64,
}

impl Default for LadderSettings {
    /// Bots reconnect every few seconds; a misconfigured server retries every few minutes, and
    /// each of its attempts now bounces with the reason at once: 10 refusals within a minute is a
    /// bot's pace, and even then 3 more connections are told why before any SYN is dropped.
    fn default() -> Self {
        Self { strikes: 10, window_s: 60, answers: 3, ttl_s: 600, max_ttl_s: 24 * 3600 }
    }
}

impl LadderSettings {
    pub fn kernel(&self) -> helo_common::maps::Ladder {
        const S: u64 = 1_000_000_000;
        helo_common::maps::Ladder {
            strikes: self.strikes,
            answers: self.answers,
            window_ns: self.window_s.saturating_mul(S),
            ttl_ns: self.ttl_s.saturating_mul(S),
            max_ttl_ns: self.max_ttl_s.max(self.ttl_s).saturating_mul(S),
        }
    }
}

/// Where `/metrics` is served: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|_| format!("{s:?} is neither ADDR:PORT nor off"))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for MetricsAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `scheme://user:PASSWORD@host…` with the password shown as `***`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/helo/admin.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/helo";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/helo";

options! {
    /// The agent's configuration: the config file's keys (kebab-case), with the command line's
    /// flags laid over them ([`RunFlags::lay_over`], [`FactFlags::lay_over`]). Flags win.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    pub struct Config;
    run flags: RunFlags;
    fact flags: FactFlags;

    /// Interface to attach the XDP program to (required unless --no-xdp).
    #[arg(long)]
    run iface: Option<String> = None, flag: Option<String>;
    /// How to attach: native (in the driver, or fail), skb (generic), auto (native, else skb)
    /// [default: native].
    #[arg(long, value_enum)]
    run xdp_mode: AttachMode = AttachMode::Native, flag: Option<AttachMode>;
    /// Attach no XDP program: classify, reply and keep the blocklist in user space only.
    #[arg(long, conflicts_with_all = ["iface", "xdp_mode"])]
    run no_xdp: bool = false, flag: bool;
    /// Address to accept SMTP on (repeat for several) [default: `0.0.0.0:25` and `[::]:25`].
    #[arg(long)]
    run listen: Vec<SocketAddr> = vec!["0.0.0.0:25".parse().unwrap(), "[::]:25".parse().unwrap()], flag: Vec<SocketAddr>;
    /// The MTA sessions are handed to (it must accept PROXY protocol v2) [default: 127.0.0.1:10025].
    #[arg(long)]
    run backend: SocketAddr = "127.0.0.1:10025".parse().unwrap(), flag: Option<SocketAddr>;
    /// This server's host name, as in the banner.
    #[arg(long)]
    fact hostname: Option<String> = None, flag: Option<String>;
    /// An IP address of this server (repeat for several).
    #[arg(long)]
    fact server_ip: Vec<IpAddr> = vec![], flag: Vec<IpAddr>;
    /// A domain this server receives mail for (repeat for several).
    #[arg(long)]
    fact domain: Vec<String> = vec![], flag: Vec<String>;
    /// enforce: drop listed greetings and sources; observe: count and report them, but pass
    /// [default: enforce].
    #[arg(long, value_enum)]
    run mode: FilterMode = FilterMode::Enforce, flag: Option<FilterMode>;
    /// TCP port the kernel filters (repeat for several) [default: 25].
    #[serde(rename = "port")]
    #[arg(long = "port")]
    run ports: Vec<u16> = vec![helo_common::maps::DEFAULT_PORT], flag: Vec<u16>;
    /// The durable store (blocklist, hash key, fleet outbox) [default: /var/lib/helo].
    #[arg(long)]
    run state_dir: PathBuf = PathBuf::from(DEFAULT_STATE_DIR), flag: Option<PathBuf>;
    /// What a sender whose greeting the kernel dropped reads before the close [default: reply].
    #[arg(long, value_enum)]
    run kernel_drop_reply: KernelDropReply = KernelDropReply::Reply, flag: Option<KernelDropReply>;
    /// Open SMTP sessions at most; more get 421 [default: 1000].
    #[arg(long)]
    run max_sessions: usize = 1000, flag: Option<usize>;
    /// Open SMTP sessions per client address at most [default: 50].
    #[arg(long)]
    run max_sessions_per_source: usize = 50, flag: Option<usize>;
    /// Threads running SMTP sessions, each with its own event loop and listening socket
    /// (SO_REUSEPORT); 0 is one per CPU core [default: 0].
    #[arg(long)]
    run session_threads: usize = 0, flag: Option<usize>;
    /// Protocol errors (unknown commands, overlong lines) before a 421.
    file max_errors: u32 = 10;
    /// New greeting names one source may get listed per hour; past that it is still refused, but
    /// nothing new is listed (anyone can get a name listed: one client must not fill the map).
    file learned_per_source_per_hour: u32 = crate::blocklist::learned::PER_SOURCE_PER_HOUR;
    /// Commands of any kind (NOOP and RSET included) before the greeting, before a 421.
    file max_commands_before_greeting: u32 = 20;
    /// Sessions in use, in percent of `max-sessions`, from which timeouts shrink to `stress-s`.
    file stress_percent: u8 = 80;
    /// Hold the banner this long to catch clients that talk first: milliseconds, or a duration
    /// like `500ms` [default: 0].
    #[serde(deserialize_with = "crate::duration::millis")]
    #[arg(long, value_parser = crate::duration::parse_millis)]
    run pregreet_ms: u64 = 0, flag: Option<u64>;
    /// Log lines a minute that may quote what clients sent (greetings, bad commands); past that,
    /// protocol errors go unlogged and rejections are logged without the client's bytes, and a
    /// summary counts them [default: 600].
    #[arg(long)]
    run log_client_lines_per_minute: u64 = 600, flag: Option<u64>;
    /// A last line for every rejection reply, like Postfix's smtpd_reject_footer (`\n` starts
    /// another line) [default: none].
    #[arg(long)]
    run reply_footer: Option<String> = None, flag: Option<String>;
    /// The Public Suffix List file, read at start and on every reload [default:
    /// /usr/share/publicsuffix/public_suffix_list.dat when present, else the list compiled in].
    #[arg(long)]
    run public_suffix_list: Option<PathBuf> = None, flag: Option<PathBuf>;
    /// Time to live of a listed greeting: a duration like `7d`, `12h`, or seconds [default: 7d].
    #[serde(deserialize_with = "crate::duration::seconds")]
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    run helo_ttl_s: u64 = 7 * 24 * 3600, flag: Option<u64>;
    /// Time to live of a listed source address or network: a duration like `1d`, `90m`, or seconds
    /// [default: 1d].
    #[serde(deserialize_with = "crate::duration::seconds")]
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    run source_ttl_s: u64 = 24 * 3600, flag: Option<u64>;
    /// Names the kernel's HELO table holds (a pinned table keeps its size until `helo detach`).
    file helo_capacity: u32 = helo_common::maps::DEFAULT_HELO_CAPACITY;
    /// Where the maps and the XDP link are pinned, on a bpf filesystem [default: /sys/fs/bpf/helo].
    #[arg(long)]
    run pin_dir: PathBuf = PathBuf::from(DEFAULT_PIN_DIR), flag: Option<PathBuf>;
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, or `off` [default: 127.0.0.1:9725].
    /// A port that cannot be bound fails the start.
    #[arg(long, value_name = "ADDR:PORT|off")]
    run metrics: MetricsAddr = MetricsAddr(Some("127.0.0.1:9725".parse().unwrap())), flag: Option<MetricsAddr>;
    /// The root-only admin socket for blocklist, stats, top and reload [default: /run/helo/admin.sock].
    #[arg(long)]
    run admin_socket: PathBuf = PathBuf::from(DEFAULT_ADMIN_SOCKET), flag: Option<PathBuf>;
    /// Time between removals of expired entries from the store and the kernel: seconds, or a
    /// duration like `10s` [default: 10].
    #[serde(deserialize_with = "crate::duration::seconds")]
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    run expire_interval_s: u64 = 10, flag: Option<u64>;
    /// Time between checks for entries a full kernel map evicted: seconds, or a duration like
    /// `5m` [default: 300].
    #[serde(deserialize_with = "crate::duration::seconds")]
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    run reconcile_interval_s: u64 = 300, flag: Option<u64>;
    /// Share the blocklist through Redis: `redis://[user@]host:port/db` (`rediss://` for TLS). Put the
    /// password in --fleet-password-file, not here: a command line is readable by every local user.
    #[arg(long)]
    run fleet: Option<String> = None, flag: Option<String>;
    /// This box's name in the fleet [default: the hostname].
    #[arg(long)]
    run fleet_name: Option<String> = None, flag: Option<String>;
    /// A file (mode 0600) whose first line is the Redis password for --fleet.
    #[arg(long)]
    run fleet_password_file: Option<PathBuf> = None, flag: Option<PathBuf>;
    /// `[timeouts]`; `timeouts.command-s` also as `--command-timeout-s` (see [`crate::cli::RunArgs`]).
    file timeouts: Timeouts = Timeouts::default();
    /// `[ladder]`, the offender ladder.
    file ladder: LadderSettings = LadderSettings::default();
    /// `[classifier]`: the HELO rules, allow lists and server facts.
    file classifier: crate::classify::ClassifierConfig = Default::default();
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

    /// Keys written in the snake_case of earlier versions (`relay_cidrs`, `[rules.bogus_helo]`),
    /// still read as their kebab-case names, as `a.b.key → a.b.new-key` lines for a warning.
    pub fn deprecated_keys(text: &str) -> Vec<String> {
        fn walk(table: &toml::Table, path: &str, out: &mut Vec<String>) {
            for (key, value) in table {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if key.contains('_') {
                    let new = if path.is_empty() { key.replace('_', "-") } else { format!("{path}.{}", key.replace('_', "-")) };
                    out.push(format!("{here} → {new}"));
                }
                if let toml::Value::Table(t) = value {
                    walk(t, &here.replace('_', "-"), out);
                }
            }
        }
        let mut out = Vec::new();
        if let Ok(table) = text.parse::<toml::Table>() {
            walk(&table, "", &mut out);
        }
        out
    }

    /// [`Config::deprecated_keys`] of the file at `path` (none if it cannot be read).
    pub fn deprecated_keys_in(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path).map(|t| Self::deprecated_keys(&t)).unwrap_or_default()
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
        let t = &self.timeouts;
        if [t.command_s, t.reply_s, t.data_s, t.write_s, t.stress_s, t.backend_connect_s].contains(&0) {
            bail!("timeouts must be above 0 (command-s, reply-s, data-s, write-s, stress-s, backend-connect-s)");
        }
        if self.stress_percent == 0 || self.stress_percent > 100 {
            bail!("stress-percent must be 1 to 100");
        }
        if self.max_sessions == 0 || self.max_sessions_per_source == 0 {
            bail!("max-sessions and max-sessions-per-source must be above 0");
        }
        if let Some(footer) = &self.reply_footer {
            // Written to clients as reply lines: no control characters, and each line well
            // within the 512 octets of a reply line (RFC 5321 4.5.3.1.5).
            if footer.chars().any(|c| c.is_control()) || footer.split("\\n").any(|l| l.len() > 400) {
                bail!("reply-footer must be printable, lines (split at \\n) of at most 400 bytes");
            }
        }
        Ok(())
    }

    /// Where the filter runs, said exactly one way: an interface, or none (`no-xdp`). `run` and
    /// `check-config` both hold a configuration to this, so a file that cannot start fails its check.
    pub fn require_xdp_choice(&self) -> Result<()> {
        match (&self.iface, self.no_xdp) {
            (None, false) => bail!("--iface is required (or `iface` in the config file), unless --no-xdp"),
            (Some(_), true) => bail!("--no-xdp and an interface to attach to contradict each other"),
            _ => Ok(()),
        }
    }

    /// The classifier for these rules and server facts (flags add IPs and domains to the file's).
    pub fn classifier(&self) -> Result<crate::classify::Classifier> {
        let rules =
            self.classifier.clone().with_server_facts(self.server_ip.iter().copied(), self.hostname.clone(), self.domain.iter().cloned());
        let suffixes = crate::classify::suffixes::SuffixList::load(self.public_suffix_list.as_deref())?;
        Ok(crate::classify::Classifier::new(&rules).map_err(|e| anyhow::anyhow!("classifier: {e}"))?.with_suffixes(suffixes))
    }

    /// The fleet's Redis URL with the password from `fleet-password-file` filled in.
    pub fn fleet_url(&self) -> Result<Option<String>> {
        let Some(url) = &self.fleet else { return Ok(None) };
        let Some(path) = &self.fleet_password_file else { return Ok(Some(url.clone())) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading fleet-password-file {}", path.display()))?;
        let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if password.is_empty() {
            bail!("fleet-password-file {} is empty", path.display());
        }
        let (scheme, rest) = url.split_once("://").context("fleet is not a redis:// URL")?;
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((u, h)) => (u.split(':').next().unwrap_or(""), h),
            None => ("", rest),
        };
        // Percent-encode what would end the userinfo part.
        let encoded: String = password
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        Ok(Some(format!("{scheme}://{userinfo}:{encoded}@{host}")))
    }

    /// This configuration as `check-config` prints it: secrets masked.
    pub fn masked(&self) -> Self {
        let mut c = self.clone();
        c.fleet = c.fleet.as_deref().map(mask_url_password);
        c
    }

    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or("")
    }

    /// How many session threads to run: `session-threads`, or one per CPU core for 0.
    pub fn session_threads(&self) -> usize {
        match self.session_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.command_s)
    }

    /// What a refused client is still told, and for how long.
    pub fn linger(&self) -> crate::smtp::refused::Linger {
        crate::smtp::refused::Linger {
            within: Duration::from_secs(self.timeouts.linger_s),
            write: Duration::from_secs(self.timeouts.write_s),
            ..Default::default()
        }
    }

    pub fn relay_timeouts(&self) -> crate::proxy::relay::Timeouts {
        let t = &self.timeouts;
        crate::proxy::relay::Timeouts {
            command: Duration::from_secs(t.command_s),
            reply: Duration::from_secs(t.reply_s),
            data: Duration::from_secs(t.data_s),
            write: Duration::from_secs(t.write_s),
            close: Duration::from_secs(t.linger_s),
            linger: self.linger(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_style_and_durations_as_on_the_command_line() {
        let new: Config = toml::from_str(
            "helo-ttl-s = \"7d\"\nsource-ttl-s = \"90m\"\npregreet-ms = \"1s\"\n[timeouts]\ncommand-s = \"5m\"\n[ladder]\nwindow-s = \"1m\"\n\
             [classifier]\nrelay-cidrs = [\"198.18.0.0/15\"]\n[classifier.rules.bogus-helo]\nallow-underscore = false\n\
             [classifier.rules.operator-deny]\nnames = [\"x\"]\n",
        )
        .unwrap();
        assert_eq!((new.helo_ttl_s, new.source_ttl_s, new.pregreet_ms), (604_800, 5400, 1000));
        assert_eq!((new.timeouts.command_s, new.ladder.window_s), (300, 60));
        let old_text =
            "helo-ttl-s = 604800\nsource-ttl-s = 5400\npregreet-ms = 1000\n[timeouts]\ncommand-s = 300\n[ladder]\nwindow-s = 60\n\
                        [classifier]\nrelay_cidrs = [\"198.18.0.0/15\"]\n[classifier.rules.bogus_helo]\nallow_underscore = false\n\
                        [classifier.rules.operator_deny]\nnames = [\"x\"]\n";
        let old: Config = toml::from_str(old_text).unwrap();
        assert_eq!(toml::to_string(&old).unwrap(), toml::to_string(&new).unwrap());
        assert_eq!(
            Config::deprecated_keys(old_text),
            vec![
                "classifier.relay_cidrs → classifier.relay-cidrs",
                "classifier.rules.bogus_helo → classifier.rules.bogus-helo",
                "classifier.rules.bogus-helo.allow_underscore → classifier.rules.bogus-helo.allow-underscore",
                "classifier.rules.operator_deny → classifier.rules.operator-deny",
            ]
        );
        // What check-config prints is the new style.
        let printed = toml::to_string(&new).unwrap();
        assert!(printed.contains("relay-cidrs") && printed.contains("[classifier.rules.bogus-helo]"), "{printed}");
        assert!(!printed.lines().any(|l| l.split('=').next().unwrap_or("").contains('_')), "{printed}");
    }

    #[test]
    fn an_interface_or_no_xdp_is_required_and_not_both() {
        let neither = Config::default();
        assert!(neither.require_xdp_choice().unwrap_err().to_string().contains("--iface is required"));
        let both = Config { iface: Some("eth1".into()), no_xdp: true, ..Default::default() };
        assert!(both.require_xdp_choice().unwrap_err().to_string().contains("contradict"));
        assert!(Config { iface: Some("eth1".into()), ..Default::default() }.require_xdp_choice().is_ok());
        assert!(Config { no_xdp: true, ..Default::default() }.require_xdp_choice().is_ok());
    }
}
