//! What the classifier hands back: a verdict, and the observations made on the way.
//!
//! The ids in here ([`RuleId::as_str`], [`ObservationKind::as_str`]) appear in config files, logs,
//! metrics and the JSON-lines output, so they are stable: rename a variant, never its string.

use std::borrow::Cow;
use std::fmt;

/// A rule that can reject a greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleId {
    OperatorDeny,
    BogusHelo,
    HeloIsMyIp,
    HeloMatchesRcpt,
    LiteralMismatch,
    Dynamic,
}

impl RuleId {
    pub const ALL: [RuleId; 6] =
        [RuleId::OperatorDeny, RuleId::BogusHelo, RuleId::HeloIsMyIp, RuleId::HeloMatchesRcpt, RuleId::LiteralMismatch, RuleId::Dynamic];

    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::OperatorDeny => "operator_deny",
            RuleId::BogusHelo => "bogus_helo",
            RuleId::HeloIsMyIp => "helo_is_my_ip",
            RuleId::HeloMatchesRcpt => "helo_matches_rcpt",
            RuleId::LiteralMismatch => "literal_mismatch",
            RuleId::Dynamic => "dynamic",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a rejection applies to, which decides which kernel map the agent puts it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The greeting is bad whoever sends it: the agent may drop that name for every client
    /// (the kernel's HELO map).
    Helo,
    /// The verdict depends on who sent it (its IP, rDNS or RCPT): only this client is blocked
    /// (the kernel's source map, with a time to live).
    Client,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Helo => "helo",
            Scope::Client => "client",
        }
    }
}

/// Why `bogus_helo` fired. Not part of the JSON-lines interface; for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BogusReason {
    Empty,
    BareIp,
    MalformedLiteral,
    UnknownLiteralTag,
    /// An address literal that can never be a client's address (Postfix's
    /// `reject_invalid_helo_hostname` parity): `0.0.0.0/8`, `224.0.0.0` and up (multicast,
    /// reserved, broadcast), IPv6 `::` and multicast `ff00::/8`.
    UnusableLiteral,
    NonAscii,
    InvalidChar,
    EmptyLabel,
    LabelTooLong,
    HyphenAtLabelEdge,
    NameTooLong,
    SingleLabel,
    NumericTld,
    NotUnderPublicSuffix,
    PublicSuffixOnly,
}

impl BogusReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            BogusReason::Empty => "empty",
            BogusReason::BareIp => "bare_ip",
            BogusReason::MalformedLiteral => "malformed_literal",
            BogusReason::UnknownLiteralTag => "unknown_literal_tag",
            BogusReason::UnusableLiteral => "unusable_literal",
            BogusReason::NonAscii => "non_ascii",
            BogusReason::InvalidChar => "invalid_char",
            BogusReason::EmptyLabel => "empty_label",
            BogusReason::LabelTooLong => "label_too_long",
            BogusReason::HyphenAtLabelEdge => "hyphen_at_label_edge",
            BogusReason::NameTooLong => "name_too_long",
            BogusReason::SingleLabel => "single_label",
            BogusReason::NumericTld => "numeric_tld",
            BogusReason::NotUnderPublicSuffix => "not_under_public_suffix",
            BogusReason::PublicSuffixOnly => "public_suffix_only",
        }
    }
}

/// A rejection: the rule that fired, the SMTP reply to send, and its scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub rule: RuleId,
    /// The full SMTP reply line without CRLF, e.g. `550 5.7.1 Bogus HELO`.
    pub reply: Cow<'static, str>,
    pub scope: Scope,
    /// Set when `rule` is [`RuleId::BogusHelo`].
    pub bogus_reason: Option<BogusReason>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Rejection),
}

impl Verdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Verdict::Accept => None,
            Verdict::Reject(r) => Some(r),
        }
    }

    /// The rule that rejected, if any.
    pub fn rule(&self) -> Option<RuleId> {
        self.rejection().map(|r| r.rule)
    }
}

/// A finding that did not reject but that operators want to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObservationKind {
    /// An address literal that is not the client's IP (rule `literal_mismatch` in `observe` mode,
    /// or in `same_24` mode when the literal is in the client's /24).
    LiteralMismatch,
    /// A name that embeds the client's IPv4 octets (rule `dynamic` in `observe` mode).
    Dynamic,
    /// A name under a brand domain from a client whose rDNS is not (rule `brand_forgery`).
    BrandForgery,
    /// The greeting differs from the client's rDNS name. Counted, never a reason to reject
    /// (RFC 5321 4.1.4).
    HeloNotRdns,
    /// `helo_matches_rcpt` would have rejected, but the client is in a relay/trusted CIDR.
    RelayExempt,
    /// An operator allow list (name or CIDR) accepted the greeting before any other rule ran.
    OperatorAllow,
}

impl ObservationKind {
    pub const ALL: [ObservationKind; 6] = [
        ObservationKind::LiteralMismatch,
        ObservationKind::Dynamic,
        ObservationKind::BrandForgery,
        ObservationKind::HeloNotRdns,
        ObservationKind::RelayExempt,
        ObservationKind::OperatorAllow,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ObservationKind::LiteralMismatch => "literal_mismatch",
            ObservationKind::Dynamic => "dynamic",
            ObservationKind::BrandForgery => "brand_forgery",
            ObservationKind::HeloNotRdns => "helo_not_rdns",
            ObservationKind::RelayExempt => "relay_exempt",
            ObservationKind::OperatorAllow => "operator_allow",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for ObservationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of observations. A bit set rather than a `Vec`, so that recording them never allocates;
/// iteration yields them in the order of [`ObservationKind::ALL`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Observations(u8);

impl Observations {
    pub const fn empty() -> Self {
        Observations(0)
    }

    pub fn insert(&mut self, kind: ObservationKind) {
        self.0 |= kind.bit();
    }

    pub const fn contains(self, kind: ObservationKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = ObservationKind> {
        ObservationKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for Observations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<ObservationKind> for Observations {
    fn from_iter<I: IntoIterator<Item = ObservationKind>>(iter: I) -> Self {
        let mut set = Observations::empty();
        for k in iter {
            set.insert(k);
        }
        set
    }
}

/// The classifier's answer for one greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    pub observations: Observations,
}
