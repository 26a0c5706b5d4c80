//! The classifier: the server facts and rules compiled from a [`ClassifierConfig`], and the order
//! in which the rules run.
//!
//! Order, first rejection wins:
//! 1. operator allow lists (client CIDR or name): accept, nothing else runs;
//! 2. `operator_deny` (names, regexes): scope `helo`;
//! 3. `helo_is_my_ip`, then `bogus_helo`: scope `helo`. An IP in any spelling is checked against
//!    the server's IPs before a bare IP is called bogus, so the more telling reply wins;
//! 4. `helo_matches_rcpt`, HELO-time form (the server's hostname or a hosted domain): scope `helo`;
//! 5. `helo_matches_rcpt`, RCPT-time form (a RCPT domain): scope `client`;
//! 6. `literal_mismatch`, then `dynamic`: scope `client`, observations by default.
//!
//! Rules whose verdict needs nothing but the greeting run before those that look at the client,
//! so a greeting that is bad for everyone is reported with scope `helo` and the kernel can drop
//! it for every sender.
//!
//! The client's rDNS name feeds observations only (`brand_forgery`, `helo_not_rdns`): no rule
//! rejects because the greeting differs from rDNS or forward DNS (RFC 5321 4.1.4, RFC 1123 5.2.5).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex::bytes::{RegexSet, RegexSetBuilder};

use super::config::{ClassifierConfig, ConfigError, DynamicMode, LiteralMismatchMode, ObserveMode, BOGUS_HELO_REPLY};
use super::dynamic::embeds_ipv4;
use super::input::GreetingFacts;
use super::literal::{canonical_ip, parse_address_literal, parse_bare_ip, LiteralError};
use super::name::check_host_name;
use super::normal::{eq_normalised, is_at_or_under, normalise_owned, NormalisedArg};
use super::suffixes::SuffixList;
use super::verdict::{BogusReason, Classification, ObservationKind, Observations, Rejection, RuleId, Scope, Verdict};

pub const HELO_MATCHES_RCPT_REPLY: &str = "550 5.7.1 Bogus HELO matches RCPT";
pub const LITERAL_MISMATCH_REPLY: &str = "550 5.7.1 Bogus HELO (address literal is not your address)";
pub const DYNAMIC_REPLY: &str = "550 5.7.1 Bogus HELO (dynamic address name)";

/// The reply of `helo_is_my_ip`: `550 5.7.1 Bogus HELO (<the IP it claimed>)`.
pub fn helo_is_my_ip_reply(claimed: IpAddr) -> String {
    format!("{BOGUS_HELO_REPLY} ({claimed})")
}

/// What the argument is, before any rule looks at it.
enum Shape {
    /// `[...]`, well-formed or not.
    Literal(Result<IpAddr, LiteralError>),
    /// An IP address without brackets.
    BareIp(IpAddr),
    /// Anything else: a would-be host name, and what its syntax check found.
    Name(Result<(), BogusReason>),
}

/// A compiled, immutable classifier. Cheap to share between threads (`&Classifier` is all
/// `classify` needs).
#[derive(Debug)]
pub struct Classifier {
    server_ips: Vec<IpAddr>,
    hostname: Option<Box<[u8]>>,
    hosted_domains: HashSet<Box<[u8]>>,
    relay_nets: Vec<IpNet>,
    allow_names: HashSet<Box<[u8]>>,
    allow_nets: Vec<IpNet>,
    deny: Option<DenyRule>,
    bogus_helo: Option<BogusHeloRule>,
    helo_is_my_ip: bool,
    helo_matches_rcpt: bool,
    literal_mismatch: LiteralMismatchMode,
    dynamic: DynamicMode,
    brands: Vec<Box<[u8]>>,
    suffixes: SuffixList,
}

#[derive(Debug)]
struct DenyRule {
    names: HashSet<Box<[u8]>>,
    regexes: Option<RegexSet>,
    reply: Cow<'static, str>,
}

#[derive(Debug)]
struct BogusHeloRule {
    allow_underscore: bool,
}

fn parse_nets(list: &'static str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    values
        .iter()
        .map(|v| {
            let v_trim = v.trim();
            IpNet::from_str(v_trim)
                .or_else(|_| IpAddr::from_str(v_trim).map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError::Cidr { list, value: v.clone() })
        })
        .collect()
}

fn name_set(names: &[String]) -> HashSet<Box<[u8]>> {
    names.iter().map(|n| normalise_owned(n.trim())).collect()
}

fn in_nets(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(&ip))
}

impl Classifier {
    /// Compiles a config. Fails on a bad CIDR or regex; names are taken as given (normalised).
    pub fn new(config: &ClassifierConfig) -> Result<Classifier, ConfigError> {
        let rules = &config.rules;
        let deny = if rules.operator_deny.enabled {
            let regexes = if rules.operator_deny.regexes.is_empty() {
                None
            } else {
                let set = RegexSetBuilder::new(&rules.operator_deny.regexes)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| ConfigError::Regex(e.to_string()))?;
                Some(set)
            };
            Some(DenyRule { names: name_set(&rules.operator_deny.names), regexes, reply: Cow::Owned(rules.operator_deny.reply.clone()) })
        } else {
            None
        };
        let hostname = config.server.hostname.as_deref().map(str::trim).filter(|h| !h.is_empty()).map(normalise_owned);
        Ok(Classifier {
            server_ips: config.server.ips.iter().map(|ip| canonical_ip(*ip)).collect(),
            hostname,
            hosted_domains: name_set(&config.server.domains),
            relay_nets: parse_nets("relay-cidrs", &config.relay_cidrs)?,
            allow_names: name_set(&config.allow.names),
            allow_nets: parse_nets("allow.cidrs", &config.allow.cidrs)?,
            deny,
            bogus_helo: rules.bogus_helo.enabled.then_some(BogusHeloRule { allow_underscore: rules.bogus_helo.allow_underscore }),
            helo_is_my_ip: rules.helo_is_my_ip.enabled,
            helo_matches_rcpt: rules.helo_matches_rcpt.enabled,
            literal_mismatch: rules.literal_mismatch.mode,
            dynamic: rules.dynamic.mode,
            brands: match rules.brand_forgery.mode {
                ObserveMode::Off => Vec::new(),
                ObserveMode::Observe => rules.brand_forgery.brands.iter().map(|b| normalise_owned(b.trim())).collect(),
            },
            suffixes: SuffixList::Builtin,
        })
    }

    /// This classifier with `suffixes` as its Public Suffix List (the compiled-in one otherwise).
    pub fn with_suffixes(mut self, suffixes: SuffixList) -> Self {
        self.suffixes = suffixes;
        self
    }

    /// The Public Suffix List in use.
    pub fn suffixes(&self) -> &SuffixList {
        &self.suffixes
    }

    /// Networks whose clients this classifier never rejects for a `helo`-scope reason (allow
    /// CIDRs) or for `helo_matches_rcpt` (relay CIDRs). A `helo`-scope rejection is dropped for
    /// every sender by the kernel, so the agent must let these networks past the kernel's HELO map
    /// for the exemptions to hold.
    pub fn exempt_networks(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.allow_nets.iter().chain(self.relay_nets.iter()).copied()
    }

    /// Classifies one greeting. Pure: the same input always gives the same answer, and nothing is
    /// remembered between calls.
    pub fn classify(&self, greeting: &GreetingFacts<'_>) -> Classification {
        let mut observations = Observations::empty();
        let verdict = self.verdict(greeting, &mut observations);
        Classification { verdict, observations }
    }

    fn verdict(&self, greeting: &GreetingFacts<'_>, observations: &mut Observations) -> Verdict {
        let normalised = NormalisedArg::new(greeting.arg);
        let arg = normalised.as_bytes();
        let client_ip = canonical_ip(greeting.client_ip);

        if in_nets(&self.allow_nets, client_ip) || self.allow_names.contains(arg) {
            observations.insert(ObservationKind::OperatorAllow);
            return Verdict::Accept;
        }
        if let Some(deny) = &self.deny {
            let by_regex = deny.regexes.as_ref().is_some_and(|set| set.is_match(arg));
            if by_regex || deny.names.contains(arg) {
                return reject(RuleId::OperatorDeny, deny.reply.clone(), Scope::Helo, None);
            }
        }

        let allow_underscore = self.bogus_helo.as_ref().is_none_or(|b| b.allow_underscore);
        let shape = if arg.first() == Some(&b'[') {
            Shape::Literal(parse_address_literal(arg))
        } else if let Some(ip) = parse_bare_ip(arg) {
            Shape::BareIp(ip)
        } else {
            Shape::Name(check_host_name(arg, allow_underscore, &self.suffixes))
        };

        self.observe_rdns(arg, &shape, greeting.client_rdns, observations);

        if self.helo_is_my_ip {
            if let Shape::Literal(Ok(ip)) | Shape::BareIp(ip) = shape {
                let claimed = canonical_ip(ip);
                if self.server_ips.contains(&claimed) {
                    let reply = Cow::Owned(helo_is_my_ip_reply(claimed));
                    return reject(RuleId::HeloIsMyIp, reply, Scope::Helo, None);
                }
            }
        }
        if self.bogus_helo.is_some() {
            let bogus = match shape {
                Shape::BareIp(_) => Some(BogusReason::BareIp),
                Shape::Literal(Err(LiteralError::Malformed)) => Some(BogusReason::MalformedLiteral),
                Shape::Literal(Err(LiteralError::UnknownTag)) => Some(BogusReason::UnknownLiteralTag),
                Shape::Literal(Ok(ip)) if !can_be_a_host(canonical_ip(ip)) => Some(BogusReason::UnusableLiteral),
                Shape::Literal(Ok(_)) => None,
                Shape::Name(result) => result.err(),
            };
            if let Some(reason) = bogus {
                let reply = Cow::Borrowed(BOGUS_HELO_REPLY);
                return reject(RuleId::BogusHelo, reply, Scope::Helo, Some(reason));
            }
        }

        if self.helo_matches_rcpt && matches!(shape, Shape::Name(_)) {
            let is_server = self.hostname.as_deref() == Some(arg) || self.hosted_domains.contains(arg);
            let is_rcpt = !is_server && greeting.rcpt.iter().any(|r| rcpt_domain_is(r, arg));
            if is_server || is_rcpt {
                if in_nets(&self.relay_nets, client_ip) {
                    observations.insert(ObservationKind::RelayExempt);
                } else {
                    // The server's own name is bogus from anyone; a RCPT domain only from a sender
                    // that also sends to it, which is a property of this client's session.
                    let scope = if is_server { Scope::Helo } else { Scope::Client };
                    let reply = Cow::Borrowed(HELO_MATCHES_RCPT_REPLY);
                    return reject(RuleId::HeloMatchesRcpt, reply, scope, None);
                }
            }
        }

        if let Shape::Literal(Ok(ip)) = shape {
            if let Some(verdict) = self.literal_mismatch(canonical_ip(ip), client_ip, observations) {
                return verdict;
            }
        }

        if let (Shape::Name(_), IpAddr::V4(client_v4)) = (&shape, client_ip) {
            if self.dynamic != DynamicMode::Off && embeds_ipv4(arg, client_v4) {
                if self.dynamic == DynamicMode::Reject {
                    let reply = Cow::Borrowed(DYNAMIC_REPLY);
                    return reject(RuleId::Dynamic, reply, Scope::Client, None);
                }
                observations.insert(ObservationKind::Dynamic);
            }
        }
        Verdict::Accept
    }

    fn literal_mismatch(&self, literal: IpAddr, client_ip: IpAddr, observations: &mut Observations) -> Option<Verdict> {
        if literal == client_ip {
            return None;
        }
        let reject_it = match self.literal_mismatch {
            LiteralMismatchMode::Off => return None,
            LiteralMismatchMode::Observe => false,
            LiteralMismatchMode::Exact => true,
            LiteralMismatchMode::Same24 => !same_segment(literal, client_ip),
        };
        if reject_it {
            let reply = Cow::Borrowed(LITERAL_MISMATCH_REPLY);
            return Some(reject(RuleId::LiteralMismatch, reply, Scope::Client, None));
        }
        observations.insert(ObservationKind::LiteralMismatch);
        None
    }

    /// Observations that use the client's rDNS name. Never a verdict.
    fn observe_rdns(&self, arg: &[u8], shape: &Shape, rdns: Option<&str>, observations: &mut Observations) {
        let (Shape::Name(_), Some(rdns)) = (shape, rdns) else {
            return;
        };
        let rdns = rdns.trim().as_bytes();
        if !eq_normalised(arg, rdns) {
            observations.insert(ObservationKind::HeloNotRdns);
        }
        let forged = self.brands.iter().any(|brand| is_at_or_under(arg, brand) && !rdns_is_under(rdns, brand));
        if forged {
            observations.insert(ObservationKind::BrandForgery);
        }
    }
}

fn reject(rule: RuleId, reply: Cow<'static, str>, scope: Scope, bogus_reason: Option<BogusReason>) -> Verdict {
    Verdict::Reject(Rejection { rule, reply, scope, bogus_reason })
}

/// `rdns` (raw) is `brand` or under it, in any case, with or without a trailing dot.
fn rdns_is_under(rdns: &[u8], brand: &[u8]) -> bool {
    is_at_or_under(rdns.strip_suffix(b".").unwrap_or(rdns), brand)
}

/// The domain of a RCPT address (`user@domain` or `<user@domain>`, source routes allowed) equals
/// the normalised greeting.
fn rcpt_domain_is(rcpt: &str, normalised_helo: &[u8]) -> bool {
    let addr = rcpt.trim();
    let addr = addr.strip_prefix('<').unwrap_or(addr);
    let addr = addr.strip_suffix('>').unwrap_or(addr);
    match addr.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => eq_normalised(normalised_helo, domain.as_bytes()),
        _ => false,
    }
}

/// Same /24 for IPv4, same /64 for IPv6 (the IPv6 counterpart of a customer's segment).
fn same_segment(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// Whether an address could be a client host's own. Loopback and private addresses can (a client
/// behind NAT greets with its inside address), so they stay for `literal_mismatch` to observe;
/// "this network" (`0/8`), multicast and the reserved space above it, the unspecified address and
/// IPv6 multicast never can.
fn can_be_a_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !matches!(v4.octets()[0], 0 | 224..=255),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}
