//! What an entry lists: a greeting name, one client address, or a client network. Parsed once
//! where it comes in (a store load, an import, a fleet message, an operator's request), so the
//! blocklist and the kernel glue match on it instead of reading the name again.
//!
//! The name stays as it came, byte for byte: it is the entry's store key and fleet key, so an
//! address an older version stored in a spelling of its own (`2001:DB8::1`) is still found under
//! that key.

use std::{fmt, net::IpAddr};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A greeting name, dropped for every sender.
    Helo,
    /// A client address or network.
    Source,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Helo => "helo",
            Kind::Source => "source",
        }
    }
}

/// What the kernel matches a target on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// The greeting's argument: the keyed hash of the bytes the name stands for ([`name::bytes`]).
    Greeting,
    Addr(IpAddr),
    /// A network in its canonical form (`198.18.99.0/24`, never `198.18.99.7/24`).
    Net(IpNet),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// As stored: the escaped greeting name (see [`name`]), or the address or CIDR.
    name: String,
    matches: Match,
}

impl Target {
    /// A target as stored, exported or published: any name for a greeting (a name stored before
    /// the escape existed is taken as it is; [`Target::validate`] checks imports), an
    /// address or a network without host bits for a source.
    pub fn parse(kind: Kind, name: String) -> Result<Self> {
        let matches = match kind {
            Kind::Helo => Match::Greeting,
            Kind::Source if name.contains('/') => {
                let net: IpNet = name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?;
                if net != net.trunc() {
                    bail!("{name:?} has host bits set; write {}", net.trunc());
                }
                Match::Net(net)
            }
            Kind::Source => Match::Addr(name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?),
        };
        Ok(Self { name, matches })
    }

    /// A target as an operator spells it: a greeting name in any case, with a trailing dot or the
    /// escape; an address (IPv4-mapped IPv6 is the IPv4 address) or a network, where a /32 or
    /// /128 is one address (kept in the cheaper exact map).
    pub fn from_operator(kind: Kind, text: &str) -> Result<Self> {
        match kind {
            Kind::Helo => Ok(Self::greeting(name::from_operator(text)?)),
            Kind::Source => match text.parse::<IpNet>() {
                Ok(net) if net.prefix_len() == net.max_prefix_len() => Ok(Self::addr(net.addr())),
                Ok(net) if net != net.trunc() => bail!("{text} has host bits set; did you mean {}?", net.trunc()),
                Ok(net) => Ok(Self { name: net.to_string(), matches: Match::Net(net) }),
                Err(_) => Ok(Self::addr(text.parse::<IpAddr>().with_context(|| format!("{text:?} is not an address or a CIDR"))?)),
            },
        }
    }

    /// A greeting name in its stored (normalised, escaped) form: [`name::from_wire`] or
    /// [`name::from_operator`] made it.
    pub fn greeting(stored_name: String) -> Self {
        Self { name: stored_name, matches: Match::Greeting }
    }

    /// One client address (IPv4-mapped IPv6 is the IPv4 address, as the kernel keys it).
    pub fn addr(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self { name: ip.to_string(), matches: Match::Addr(ip) }
    }

    pub fn kind(&self) -> Kind {
        match self.matches {
            Match::Greeting => Kind::Helo,
            Match::Addr(_) | Match::Net(_) => Kind::Source,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn matches(&self) -> Match {
        self.matches
    }

    /// Checks what reading a stored greeting name lets through (names stored before the escape
    /// existed) and an import or an operator must not add: a name that is not the canonical escape
    /// of normalised bytes, or that cannot be a greeting's argument. Addresses and networks were
    /// checked when they were parsed.
    pub fn validate(&self) -> Result<()> {
        if self.matches != Match::Greeting {
            return Ok(());
        }
        let stored = self.name.as_str();
        let bytes = name::unescape(stored)?;
        if !name::is_canonical(stored) {
            bail!("name {stored:?} is not in its canonical escaped form ({:?})", name::escape(&bytes));
        }
        if bytes.iter().any(|b| b.is_ascii_uppercase()) {
            bail!("name {stored:?} is not normalised (ASCII lower case)");
        }
        if bytes.len() > helo_common::greeting::MAX_ARG_LEN || bytes.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n')) {
            bail!("name {stored:?} cannot be a greeting argument");
        }
        Ok(())
    }

    /// The store's key: `kind/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind().as_str(), self.name)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind().as_str(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str) -> Result<Target> {
        Target::parse(Kind::Source, name.into())
    }

    #[test]
    fn a_stored_name_is_parsed_once_and_kept_as_it_was() {
        assert_eq!(source("198.18.7.9").unwrap().matches(), Match::Addr("198.18.7.9".parse().unwrap()));
        assert_eq!(source("2001:2::/48").unwrap().matches(), Match::Net("2001:2::/48".parse().unwrap()));
        // Another spelling of an address keeps its spelling: it is the store's key.
        let upper = source("2001:DB8::1").unwrap();
        assert_eq!((upper.name(), upper.key().as_str()), ("2001:DB8::1", "source/2001:DB8::1"));
        assert!(source("198.18.99.7/24").unwrap_err().to_string().contains("198.18.99.0/24"));
        assert!(source("mail.example").is_err());
        let g = Target::parse(Kind::Helo, "caf\\xe9.example".into()).unwrap();
        assert_eq!((g.kind(), g.matches()), (Kind::Helo, Match::Greeting));
    }

    #[test]
    fn an_operators_spelling_is_made_canonical() {
        let op = |kind, text| Target::from_operator(kind, text).map(|t| t.name().to_owned());
        assert_eq!(op(Kind::Helo, "Caf\\xE9.Example.").unwrap(), "caf\\xe9.example");
        assert_eq!(op(Kind::Source, "198.18.7.9/32").unwrap(), "198.18.7.9");
        assert_eq!(op(Kind::Source, "::ffff:198.18.7.9").unwrap(), "198.18.7.9");
        assert_eq!(op(Kind::Source, "2001:DB8::/32").unwrap(), "2001:db8::/32");
        assert!(op(Kind::Source, "198.18.7.9/24").unwrap_err().to_string().contains("did you mean 198.18.7.0/24"));
        assert!(op(Kind::Source, "not-an-address").is_err());
        assert_eq!(Target::from_operator(Kind::Source, "198.18.7.0/24").unwrap().matches(), Match::Net("198.18.7.0/24".parse().unwrap()));
    }
}
