//! The classifier's configuration as operators write it (TOML or JSON, same shape), and the
//! server facts the agent's command line adds to it.
//!
//! ```toml
//! relay-cidrs = ["192.0.2.0/24"]          # exempt from helo_matches_rcpt
//!
//! [server]
//! ips = ["192.0.2.25", "2001:db8::25"]
//! hostname = "mx.example.com"
//! domains = ["example.com", "example.org"]
//!
//! [allow]                                  # checked first; a match accepts outright
//! names = ["legacy-box.example.net"]
//! cidrs = ["198.51.100.0/24"]
//!
//! [rules.operator-deny]
//! enabled = true
//! names = ["ylmf-pc"]
//! regexes = ['^user-pc\.']                 # matched against the normalised argument, any case
//! reply = "550 5.7.1 Bogus HELO"
//!
//! [rules.bogus-helo]
//! enabled = true
//! allow-underscore = true
//!
//! [rules.helo-is-my-ip]
//! enabled = true
//!
//! [rules.helo-matches-rcpt]
//! enabled = true
//!
//! [rules.literal-mismatch]
//! mode = "observe"                         # off | observe | exact | same_24
//!
//! [rules.dynamic]
//! mode = "observe"                         # off | observe | reject
//!
//! [rules.brand-forgery]
//! mode = "observe"                         # off | observe
//! brands = ["google.com", "outlook.com"]
//! ```
//!
//! Every table and key is optional; what is left out takes the default shown. Unknown keys are an
//! error, so that a misspelt rule name does not silently leave a rule at its default. In the
//! agent's config file all of this sits under `[classifier]`.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The reply of `bogus_helo`, and the default one of `operator_deny`.
pub const BOGUS_HELO_REPLY: &str = "550 5.7.1 Bogus HELO";

/// Keys are kebab-case like the rest of the file; the snake_case spellings of earlier versions
/// (`relay_cidrs`, `[rules.operator_deny]`, `allow_underscore`) are still read, and `check-config`
/// says they are deprecated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClassifierConfig {
    pub server: ServerConfig,
    /// Relay/trusted client networks (CIDR, or a bare address for one host). Exempt from
    /// `helo_matches_rcpt`, because some real mail clients greet with their own domain.
    #[serde(alias = "relay_cidrs")]
    pub relay_cidrs: Vec<String>,
    pub allow: AllowConfig,
    pub rules: RulesConfig,
}

/// What the server is. The agent's `--server-ip`, `--hostname` and `--domain` options add to this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub ips: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// Domains the server receives mail for.
    pub domains: Vec<String>,
}

/// Operator allow lists, checked before every rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowConfig {
    /// Greeting names (compared after normalisation) that are always accepted.
    pub names: Vec<String>,
    /// Client networks (CIDR, or a bare address) whose greetings are always accepted.
    pub cidrs: Vec<String>,
}

/// One table per rule, named as the rule's id with dashes (`[rules.bogus-helo]` for `bogus_helo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RulesConfig {
    #[serde(alias = "operator_deny")]
    pub operator_deny: OperatorDenyConfig,
    #[serde(alias = "bogus_helo")]
    pub bogus_helo: BogusHeloConfig,
    #[serde(alias = "helo_is_my_ip")]
    pub helo_is_my_ip: SwitchConfig,
    #[serde(alias = "helo_matches_rcpt")]
    pub helo_matches_rcpt: SwitchConfig,
    #[serde(alias = "literal_mismatch")]
    pub literal_mismatch: LiteralMismatchConfig,
    pub dynamic: DynamicConfig,
    #[serde(alias = "brand_forgery")]
    pub brand_forgery: BrandForgeryConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchConfig {
    pub enabled: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig { enabled: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorDenyConfig {
    pub enabled: bool,
    /// Greeting names (compared after normalisation) that are rejected.
    pub names: Vec<String>,
    /// Regular expressions (Rust `regex` syntax, case-insensitive, unanchored unless written with
    /// `^`/`$`) matched against the normalised argument.
    pub regexes: Vec<String>,
    pub reply: String,
}

impl Default for OperatorDenyConfig {
    fn default() -> Self {
        OperatorDenyConfig { enabled: true, names: Vec::new(), regexes: Vec::new(), reply: BOGUS_HELO_REPLY.to_owned() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BogusHeloConfig {
    pub enabled: bool,
    #[serde(alias = "allow_underscore")]
    pub allow_underscore: bool,
}

impl Default for BogusHeloConfig {
    fn default() -> Self {
        BogusHeloConfig { enabled: true, allow_underscore: true }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiteralMismatchMode {
    Off,
    #[default]
    Observe,
    /// Reject any address literal that is not the client's address.
    Exact,
    /// Reject only a literal outside the client's /24 (IPv4) or /64 (IPv6), which tolerates hosts
    /// behind NAT or with several addresses on one segment; a nearer mismatch is observed.
    #[serde(rename = "same_24", alias = "same24")]
    Same24,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiteralMismatchConfig {
    pub mode: LiteralMismatchMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DynamicMode {
    Off,
    #[default]
    Observe,
    Reject,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicConfig {
    pub mode: DynamicMode,
}

/// `brand_forgery` has no reject mode on purpose: its only evidence is that the greeting and the
/// rDNS name disagree, and RFC 5321 4.1.4 forbids rejecting for that alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObserveMode {
    Off,
    #[default]
    Observe,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrandForgeryConfig {
    pub mode: ObserveMode,
    /// Domains that big senders greet from; a greeting under one of them from a client whose rDNS
    /// is not under the same one is observed.
    pub brands: Vec<String>,
}

pub const DEFAULT_BRANDS: [&str; 12] = [
    "google.com",
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "microsoft.com",
    "yahoo.com",
    "aol.com",
    "icloud.com",
    "apple.com",
    "amazon.com",
];

impl Default for BrandForgeryConfig {
    fn default() -> Self {
        BrandForgeryConfig { mode: ObserveMode::Observe, brands: DEFAULT_BRANDS.iter().map(|b| (*b).to_owned()).collect() }
    }
}

/// The two file formats a config can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    Toml,
    Json,
}

impl ConfigFormat {
    /// `.json` files are JSON; anything else is read as TOML.
    pub fn from_path(path: &Path) -> ConfigFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => ConfigFormat::Json,
            _ => ConfigFormat::Toml,
        }
    }
}

impl ClassifierConfig {
    pub fn parse(text: &str, format: ConfigFormat) -> Result<ClassifierConfig, ConfigError> {
        match format {
            ConfigFormat::Toml => Self::from_toml_str(text),
            ConfigFormat::Json => Self::from_json_str(text),
        }
    }

    pub fn from_toml_str(text: &str) -> Result<ClassifierConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    pub fn from_json_str(text: &str) -> Result<ClassifierConfig, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Adds the agent's command-line server facts: `--server-ip` and `--domain` are appended to
    /// the config's lists, `--hostname` replaces the config's hostname.
    pub fn with_server_facts(
        mut self,
        server_ips: impl IntoIterator<Item = IpAddr>,
        hostname: Option<String>,
        domains: impl IntoIterator<Item = String>,
    ) -> ClassifierConfig {
        self.server.ips.extend(server_ips);
        if hostname.is_some() {
            self.server.hostname = hostname;
        }
        self.server.domains.extend(domains);
        self
    }
}

/// A config that could not be read or compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML or JSON text is malformed or has unknown keys.
    Syntax(String),
    /// An entry of a CIDR list is neither `address/prefix` nor an address.
    Cidr { list: &'static str, value: String },
    /// An operator deny regex does not compile.
    Regex(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax(e) => write!(f, "classifier config: {e}"),
            ConfigError::Cidr { list, value } => {
                write!(f, "classifier config: {list}: {value:?} is not a CIDR or an IP address")
            }
            ConfigError::Regex(e) => {
                write!(f, "classifier config: rules.operator-deny.regexes: {e}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}
