//! The allow list's terms: what an operator's allow entry is, as stored, how an operator's
//! spelling of one is read, how `allow list` shows one, and how the operator's entries merge with
//! the config file's `[classifier.allow]`. Here, below the store, `allow/` (the operator's
//! commands, which keep the classifier and the kernel in step) and reloads, so that none of them
//! imports another to speak of an allow entry.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::classify::ClassifierConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AllowKind {
    /// A greeting name, accepted from any client.
    Name,
    /// A client address or network, whose greetings are all accepted.
    Net,
}

impl AllowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowKind::Name => "name",
            AllowKind::Net => "net",
        }
    }
}

/// One operator allow entry, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub kind: AllowKind,
    /// The normalised greeting name, or the network in canonical CIDR form (`198.18.30.2/32`).
    pub value: String,
    pub added_unix_s: u64,
}

/// Where an allow entry comes from, as `allow list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowOrigin {
    /// The config file's `[classifier.allow]`.
    Config,
    /// `allow add`, kept in the store.
    Operator,
}

impl AllowOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowOrigin::Config => "config",
            AllowOrigin::Operator => "operator",
        }
    }
}

/// An entry as `allow list` shows it: where it comes from, and when an operator added it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    pub kind: AllowKind,
    pub value: String,
    pub origin: AllowOrigin,
    /// 0 for the file's entries.
    pub added_unix_s: u64,
}

/// An address or network as written by an operator or in the config file: a CIDR, or a bare
/// address for one host. `strict` refuses host bits (`198.18.30.7/24`), which the file tolerates.
pub fn parse_net(text: &str, strict: bool) -> Result<IpNet> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().with_context(|| format!("{text:?} is not an address or a CIDR"))?),
    };
    if strict && net != net.trunc() {
        bail!("{text} has host bits set; did you mean {}?", net.trunc());
    }
    // An IPv4-mapped IPv6 address is the IPv4 address (the kernel keys both the same way).
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 && v6.addr().to_ipv4_mapped().is_some() => {
            IpNet::new(IpAddr::V4(v6.addr().to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)), v6.prefix_len() - 96)?
        }
        net => net.trunc(),
    })
}

/// A greeting name as the classifier compares it: ASCII lower case, one trailing dot dropped.
fn parse_name(text: &str) -> Result<String> {
    let name = super::name::from_operator(text.trim())?;
    if name.is_empty() || name.contains('\\') || !name.is_ascii() {
        bail!("{text:?} is not a greeting name an allow entry can hold (printable ASCII, no spaces)");
    }
    Ok(name)
}

impl AllowEntry {
    /// Reads an operator's spelling: `kind` if given, else an address or CIDR is a network and
    /// anything else a name.
    pub fn parse(text: &str, kind: Option<AllowKind>, added_unix_s: u64) -> Result<Self> {
        let kind = kind.unwrap_or_else(|| if parse_net(text, false).is_ok() { AllowKind::Net } else { AllowKind::Name });
        let value = match kind {
            AllowKind::Net => parse_net(text, true)?.to_string(),
            AllowKind::Name => parse_name(text)?,
        };
        Ok(Self { kind, value, added_unix_s })
    }

    /// The store's key: `kind/value`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.value)
    }

    pub fn net(&self) -> Option<IpNet> {
        match self.kind {
            AllowKind::Net => self.value.parse().ok(),
            AllowKind::Name => None,
        }
    }

    /// Whether the config file's `[classifier.allow]` holds this entry too.
    pub fn in_config(&self, config: &ClassifierConfig) -> bool {
        match self.kind {
            AllowKind::Net => config.allow.cidrs.iter().filter_map(|c| parse_net(c, false).ok()).any(|n| Some(n) == self.net()),
            AllowKind::Name => config.allow.names.iter().filter_map(|n| parse_name(n).ok()).any(|n| n == self.value),
        }
    }
}

/// The file's classifier configuration with the operator's entries added to its allow lists.
pub fn merged(config: &ClassifierConfig, operator: &[AllowEntry]) -> ClassifierConfig {
    let mut out = config.clone();
    for e in operator.iter().filter(|e| !e.in_config(config)) {
        match e.kind {
            AllowKind::Net => out.allow.cidrs.push(e.value.clone()),
            AllowKind::Name => out.allow.names.push(e.value.clone()),
        }
    }
    out
}

/// The greeting names allowed by `after` that `before` did not allow: they come off the blocklist.
pub fn newly_allowed_names(before: &ClassifierConfig, after: &ClassifierConfig) -> Vec<String> {
    let names = |c: &ClassifierConfig| -> std::collections::BTreeSet<String> {
        c.allow.names.iter().filter_map(|n| super::name::from_operator(n).ok()).collect()
    };
    let old = names(before);
    names(after).into_iter().filter(|n| !old.contains(n)).map(|n| format!("helo/{n}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn an_operator_spelling_is_read_as_a_network_or_a_name() {
        let e = AllowEntry::parse("198.18.30.2", None, 7).unwrap();
        assert_eq!((e.kind, e.value.as_str(), e.key().as_str()), (AllowKind::Net, "198.18.30.2/32", "net/198.18.30.2/32"));
        assert_eq!(AllowEntry::parse("2001:2::/48", None, 0).unwrap().value, "2001:2::/48");
        assert_eq!(AllowEntry::parse("::ffff:198.18.30.2", None, 0).unwrap().value, "198.18.30.2/32");
        let err = AllowEntry::parse("198.18.30.7/24", None, 0).unwrap_err().to_string();
        assert!(err.contains("198.18.30.0/24"), "{err}");
        let e = AllowEntry::parse("Legacy-Box.Example.NET.", None, 0).unwrap();
        assert_eq!((e.kind, e.value.as_str()), (AllowKind::Name, "legacy-box.example.net"));
        assert!(AllowEntry::parse("not a name", None, 0).is_err());
        assert!(AllowEntry::parse("198.18.30.2", Some(AllowKind::Name), 0).is_ok(), "a literal greeting can be allowed by name");
        assert!(AllowEntry::parse("box.example", Some(AllowKind::Net), 0).is_err());
    }

    /// A configuration file allowing `names` and `cidrs`.
    fn file(names: &[&str], cidrs: &[&str]) -> ClassifierConfig {
        let mut c = ClassifierConfig::default();
        c.allow.names = names.iter().map(|s| s.to_string()).collect();
        c.allow.cidrs = cidrs.iter().map(|s| s.to_string()).collect();
        c
    }

    /// The file of the allow tests, and the operator's entries beside it: two of them the file's
    /// own, spelled otherwise.
    pub(crate) fn file_and_operator_entries() -> (ClassifierConfig, Vec<AllowEntry>) {
        let config = file(&["Box.Example."], &["198.18.30.0/24"]);
        let operator = vec![
            AllowEntry::parse("box.example", None, 1).unwrap(),
            AllowEntry::parse("198.18.31.5", None, 2).unwrap(),
            AllowEntry::parse("198.18.30.0/24", None, 3).unwrap(),
            AllowEntry::parse("other.example", None, 4).unwrap(),
        ];
        (config, operator)
    }

    #[test]
    fn the_merge_is_a_union_without_duplicates() {
        let (config, operator) = file_and_operator_entries();
        assert!(operator[0].in_config(&config) && operator[2].in_config(&config) && !operator[1].in_config(&config));
        let m = merged(&config, &operator);
        assert_eq!(m.allow.names, vec!["Box.Example.".to_string(), "other.example".into()]);
        assert_eq!(m.allow.cidrs, vec!["198.18.30.0/24".to_string(), "198.18.31.5/32".into()]);
        // The merged lists compile, and the classifier's exemptions hold both origins.
        let nets: Vec<IpNet> = crate::classify::Classifier::new(&m).unwrap().exempt_networks().collect();
        assert_eq!(nets.len(), 2);
        assert_eq!(newly_allowed_names(&config, &m), vec!["helo/other.example".to_string()]);
    }
}
