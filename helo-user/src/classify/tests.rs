//! Table-driven tests of the classifier, a property test of its normalisation invariance, and
//! tests of the config and JSON-lines front ends.

use std::net::IpAddr;

use proptest::prelude::*;

use super::config::{ClassifierConfig, ConfigError, ConfigFormat, DynamicMode, LiteralMismatchMode, ObserveMode};
use super::input::{GreetingFacts, Verb};
use super::jsonl::run_jsonl;
use super::rules::Classifier;
use super::verdict::{BogusReason, Classification, ObservationKind, RuleId, Scope, Verdict};

use BogusReason as B;
use ObservationKind as O;

const SERVER_V4: &str = "192.0.2.25";
const SERVER_V6: &str = "2001:db8::25";
const CLIENT: &str = "203.0.113.7";
const RELAY_CLIENT: &str = "198.51.100.9";
const ALLOWED_CLIENT: &str = "100.64.1.2";

/// The server every case runs against unless its config tweak says otherwise.
fn base_config() -> ClassifierConfig {
    let mut config = ClassifierConfig::default().with_server_facts(
        [SERVER_V4.parse().unwrap(), SERVER_V6.parse().unwrap()],
        Some("mx.example.com".to_owned()),
        ["example.com".to_owned(), "example.org".to_owned()],
    );
    config.relay_cidrs = vec!["198.51.100.0/24".to_owned()];
    config
}

#[derive(Clone, Debug)]
enum Expect {
    Accept(&'static [ObservationKind]),
    Bogus(BogusReason),
    Reject(RuleId, Scope),
    RejectWith(RuleId, Scope, &'static str),
}

#[derive(Clone)]
struct Case {
    helo: &'static str,
    client: &'static str,
    rcpt: &'static [&'static str],
    rdns: Option<&'static str>,
    tweak: fn(&mut ClassifierConfig),
    expect: Expect,
}

fn no_tweak(_: &mut ClassifierConfig) {}

fn case(helo: &'static str, expect: Expect) -> Case {
    Case { helo, client: CLIENT, rcpt: &[], rdns: None, tweak: no_tweak, expect }
}

impl Case {
    fn from(mut self, client: &'static str) -> Self {
        self.client = client;
        self
    }
    fn rcpt(mut self, rcpt: &'static [&'static str]) -> Self {
        self.rcpt = rcpt;
        self
    }
    fn rdns(mut self, rdns: &'static str) -> Self {
        self.rdns = Some(rdns);
        self
    }
    fn with(mut self, tweak: fn(&mut ClassifierConfig)) -> Self {
        self.tweak = tweak;
        self
    }
}

fn accept(helo: &'static str) -> Case {
    case(helo, Expect::Accept(&[]))
}
fn accept_obs(helo: &'static str, obs: &'static [ObservationKind]) -> Case {
    case(helo, Expect::Accept(obs))
}
fn bogus(helo: &'static str, reason: BogusReason) -> Case {
    case(helo, Expect::Bogus(reason))
}
fn my_ip(helo: &'static str, reply: &'static str) -> Case {
    case(helo, Expect::RejectWith(RuleId::HeloIsMyIp, Scope::Helo, reply))
}
fn rejected(helo: &'static str, rule: RuleId, scope: Scope) -> Case {
    case(helo, Expect::Reject(rule, scope))
}

const MY_V4_REPLY: &str = "550 5.7.1 Bogus HELO (192.0.2.25)";
const MY_V6_REPLY: &str = "550 5.7.1 Bogus HELO (2001:db8::25)";
const MATCHES_RCPT_REPLY: &str = "550 5.7.1 Bogus HELO matches RCPT";

fn bogus_off(c: &mut ClassifierConfig) {
    c.rules.bogus_helo.enabled = false;
}
fn no_underscore(c: &mut ClassifierConfig) {
    c.rules.bogus_helo.allow_underscore = false;
}
fn my_ip_off(c: &mut ClassifierConfig) {
    c.rules.helo_is_my_ip.enabled = false;
}
fn matches_rcpt_off(c: &mut ClassifierConfig) {
    c.rules.helo_matches_rcpt.enabled = false;
}
fn literal_off(c: &mut ClassifierConfig) {
    c.rules.literal_mismatch.mode = LiteralMismatchMode::Off;
}
fn literal_exact(c: &mut ClassifierConfig) {
    c.rules.literal_mismatch.mode = LiteralMismatchMode::Exact;
}
fn literal_same_24(c: &mut ClassifierConfig) {
    c.rules.literal_mismatch.mode = LiteralMismatchMode::Same24;
}
fn dynamic_off(c: &mut ClassifierConfig) {
    c.rules.dynamic.mode = DynamicMode::Off;
}
fn dynamic_reject(c: &mut ClassifierConfig) {
    c.rules.dynamic.mode = DynamicMode::Reject;
}
fn brand_off(c: &mut ClassifierConfig) {
    c.rules.brand_forgery.mode = ObserveMode::Off;
}
fn brand_custom(c: &mut ClassifierConfig) {
    c.rules.brand_forgery.brands = vec!["Bank.Example.NET.".to_owned()];
}
fn operator_lists(c: &mut ClassifierConfig) {
    c.rules.operator_deny.names = vec!["Spam.Example.NET.".to_owned(), "ylmf-pc".to_owned()];
    c.rules.operator_deny.regexes = vec![r"^user-[0-9]+\.example\.net$".to_owned()];
    c.allow.names = vec!["LocalHost".to_owned(), "user-1.example.net".to_owned()];
    c.allow.cidrs = vec!["100.64.0.0/10".to_owned()];
}
fn operator_lists_deny_off(c: &mut ClassifierConfig) {
    operator_lists(c);
    c.rules.operator_deny.enabled = false;
}
fn operator_custom_reply(c: &mut ClassifierConfig) {
    operator_lists(c);
    c.rules.operator_deny.reply = "554 5.7.1 Go away".to_owned();
}
fn no_relays(c: &mut ClassifierConfig) {
    c.relay_cidrs.clear();
}
fn everything_strict(c: &mut ClassifierConfig) {
    c.rules.literal_mismatch.mode = LiteralMismatchMode::Exact;
    c.rules.dynamic.mode = DynamicMode::Reject;
    c.rules.bogus_helo.allow_underscore = false;
}
fn mapped_server_ip(c: &mut ClassifierConfig) {
    c.server.ips = vec!["::ffff:192.0.2.25".parse().unwrap()];
}
fn no_server_facts(c: &mut ClassifierConfig) {
    c.server = Default::default();
}

fn label63() -> &'static str {
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
}

fn cases() -> Vec<Case> {
    use RuleId as R;
    use Scope as S;
    let long_label: &'static str = Box::leak(format!("{}a.example.com", label63()).into_boxed_str());
    let max_label: &'static str = Box::leak(format!("{}.example.com", label63()).into_boxed_str());
    // 3 x 64 + 61 = 253 bytes, the longest valid name; one more byte is too long.
    let name_253: &'static str = Box::leak(format!("{l}.{l}.{l}.{m}.com", l = label63(), m = &label63()[..57]).into_boxed_str());
    let name_254: &'static str = Box::leak(format!("{l}.{l}.{l}.{m}.com", l = label63(), m = &label63()[..58]).into_boxed_str());
    let name_253_dot: &'static str = Box::leak(format!("{name_253}.").into_boxed_str());
    assert_eq!(name_253.len(), 253);
    assert_eq!(name_254.len(), 254);

    vec![
        // ---- bogus_helo: the issue's examples ----
        bogus("", B::Empty),
        bogus("1.2.3.4", B::BareIp),
        bogus("203.0.113.7", B::BareIp),
        bogus("::1", B::BareIp),
        bogus("2001:db8::1", B::BareIp),
        bogus("2001:DB8::1", B::BareIp),
        bogus("::ffff:1.2.3.4", B::BareIp),
        bogus("001.002.003.004", B::BareIp),
        bogus("[0.1.2.3]", B::UnusableLiteral),
        bogus("[000.0.0.0]", B::UnusableLiteral),
        bogus("[224.0.0.1]", B::UnusableLiteral),
        bogus("[240.1.2.3]", B::UnusableLiteral),
        bogus("[255.255.255.255]", B::UnusableLiteral),
        bogus("[IPv6:::]", B::UnusableLiteral),
        bogus("[IPv6:ff02::1]", B::UnusableLiteral),
        bogus("[IPv6:::ffff:224.1.1.1]", B::UnusableLiteral),
        bogus("[1.2.3]", B::MalformedLiteral),
        bogus("[1..2.3.4]", B::MalformedLiteral),
        bogus("[321.1.1.1]", B::MalformedLiteral),
        bogus("[::1]", B::MalformedLiteral),
        bogus("localhost", B::SingleLabel),
        bogus("www", B::SingleLabel),
        bogus("mail", B::SingleLabel),
        bogus("rad.internal", B::NotUnderPublicSuffix),
        bogus("x.local", B::NotUnderPublicSuffix),
        bogus("x.lan", B::NotUnderPublicSuffix),
        bogus("x.home", B::NotUnderPublicSuffix),
        bogus("x.localdomain", B::NotUnderPublicSuffix),
        bogus("mail.123", B::NumericTld),
        // ---- RFC 5321 4.1.3 literal grammar: malformed ----
        bogus("[]", B::MalformedLiteral),
        bogus("[1.2.3.4", B::MalformedLiteral),
        bogus("[1.2.3.4]x", B::MalformedLiteral),
        bogus("[[1.2.3.4]]", B::MalformedLiteral),
        bogus("[1.2.3.4.]", B::MalformedLiteral),
        bogus("[1.2.3.4.5]", B::MalformedLiteral),
        bogus("[.1.2.3.4]", B::MalformedLiteral),
        bogus("[0001.2.3.4]", B::MalformedLiteral),
        bogus("[256.0.0.1]", B::MalformedLiteral),
        bogus("[1.2.3.-4]", B::MalformedLiteral),
        bogus("[1.2.3.4 ]", B::MalformedLiteral),
        bogus("[0x7f.0.0.1]", B::MalformedLiteral),
        bogus("[2001:db8::1]", B::MalformedLiteral),
        bogus("[2001:DB8::1]", B::MalformedLiteral),
        bogus("[IPv6:2001:db8:0:0:0:0::99]", B::MalformedLiteral),
        bogus("[IPv6:1.2.3.4]", B::MalformedLiteral),
        bogus("[IPv6:]", B::MalformedLiteral),
        bogus("[IPv6]", B::MalformedLiteral),
        bogus("[IPv6::1]", B::MalformedLiteral),
        bogus("[IPv6:1::2::3]", B::MalformedLiteral),
        bogus("[IPv6:1:::2]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5:6:7]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5:6:7:8:9]", B::MalformedLiteral),
        bogus("[IPv6:12345::1]", B::MalformedLiteral),
        bogus("[IPv6:g::1]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5:6:7::]", B::MalformedLiteral),
        bogus("[IPv6:::2:3:4:5:6:7:8]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5::1.2.3.4]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5:1.2.3.4]", B::MalformedLiteral),
        bogus("[IPv6:1:2:3:4:5:6:7:1.2.3.4]", B::MalformedLiteral),
        bogus("[IPv6:::1.2.3]", B::MalformedLiteral),
        bogus("[IPv6:::256.1.1.1]", B::MalformedLiteral),
        bogus("[IPv6:::1.2.3.4:5]", B::MalformedLiteral),
        bogus("[IPv6:1.2.3.4::]", B::MalformedLiteral),
        bogus("[IPv6:fe80::1%eth0]", B::MalformedLiteral),
        bogus("[IPv6 ::1]", B::MalformedLiteral),
        bogus("[X400:c=us;a=;p=x]", B::UnknownLiteralTag),
        bogus("[IPv5:1.2.3.4]", B::UnknownLiteralTag),
        bogus("[tag:content]", B::UnknownLiteralTag),
        bogus("[tag:]", B::MalformedLiteral),
        bogus("[tag-:x]", B::MalformedLiteral),
        // ---- characters ----
        bogus("mail.exa mple.com", B::InvalidChar),
        bogus("mail!.example.com", B::InvalidChar),
        bogus("mail.example.com:25", B::InvalidChar),
        bogus("postmaster@example.com", B::InvalidChar),
        bogus("mail.ex*ample.com", B::InvalidChar),
        bogus("mail/example.com", B::InvalidChar),
        bogus("mail.example.com\t", B::InvalidChar),
        bogus("mail\0.example.com", B::InvalidChar),
        bogus("1.2.3.4]", B::InvalidChar),
        bogus("mail.münchen.de", B::NonAscii),
        bogus("почта.рф", B::NonAscii),
        // ---- labels and lengths ----
        bogus(".example.com", B::EmptyLabel),
        bogus(".", B::Empty),
        bogus("..", B::EmptyLabel),
        bogus("mail..example.com", B::EmptyLabel),
        bogus("example.com..", B::EmptyLabel),
        bogus("-mail.example.com", B::HyphenAtLabelEdge),
        bogus("mail-.example.com", B::HyphenAtLabelEdge),
        bogus("mail.-example.com", B::HyphenAtLabelEdge),
        bogus("xn--.com", B::HyphenAtLabelEdge),
        bogus(long_label, B::LabelTooLong),
        accept(max_label),
        accept(name_253),
        accept(name_253_dot),
        bogus(name_254, B::NameTooLong),
        // ---- single labels, upper case, trailing dot ----
        bogus("LOCALHOST", B::SingleLabel),
        bogus("localhost.", B::SingleLabel),
        bogus("ylmf-pc", B::SingleLabel),
        bogus("com", B::SingleLabel),
        // ---- the Public Suffix List ----
        bogus("mail.corp", B::NotUnderPublicSuffix),
        bogus("host.test", B::NotUnderPublicSuffix),
        bogus("host.example", B::NotUnderPublicSuffix),
        bogus("host.invalid", B::NotUnderPublicSuffix),
        bogus("RAD.Internal.", B::NotUnderPublicSuffix),
        bogus("co.uk", B::PublicSuffixOnly),
        bogus("CO.UK.", B::PublicSuffixOnly),
        bogus("com.au", B::PublicSuffixOnly),
        bogus("foo.ck", B::PublicSuffixOnly),
        accept("www.ck"),
        accept("mx1.mail.bbc.co.uk"),
        accept("foo.blogspot.com"),
        accept("github.io"),
        accept("ec2-54-1-2-3.compute-1.amazonaws.com"),
        bogus("1.2.3", B::NumericTld),
        bogus("1.2.3.4.5", B::NumericTld),
        bogus("mail.example.1", B::NumericTld),
        bogus("example.4com", B::NotUnderPublicSuffix),
        // ---- well-formed names: upper case, trailing dot, IDNA ----
        accept("mail.example.net"),
        accept("MAIL.EXAMPLE.NET"),
        accept("mail.example.net."),
        accept("Mail.Example.Net."),
        accept("a.b.c.d.example.com"),
        accept("mail.example.com"),
        accept("123.example.net"),
        accept("3com.com"),
        accept("xn--mnchen-3ya.de"),
        accept("XN--MNCHEN-3YA.DE."),
        accept("mail.xn--p1ai"),
        accept("xn--80ak6aa92e.com"),
        accept("mail.xn--fiqs8s"),
        accept("ab--cd.example.net"),
        accept("my_host.example.com"),
        accept("_dmarc.example.net"),
        bogus("my_host.example.com", B::InvalidChar).with(no_underscore),
        accept("my-host.example.com").with(no_underscore),
        // ---- well-formed address literals ----
        accept("[203.0.113.7]"),
        accept("[203.0.113.7]."),
        accept("[203.000.113.007]"),
        accept("[001.002.003.004]").from("1.2.3.4"),
        accept("[127.0.0.1]").from("127.0.0.1"),
        accept("[10.1.2.3]").from("10.1.2.3"),
        accept_obs("[192.168.1.10]", &[ObservationKind::LiteralMismatch]),
        accept_obs("[IPv6:::1]", &[ObservationKind::LiteralMismatch]),
        accept("[IPv6:2001:db8::99]").from("2001:db8::99"),
        accept("[ipv6:2001:db8::99]").from("2001:db8::99"),
        accept("[IPV6:2001:DB8::99]").from("2001:db8::99"),
        accept("[IPv6:2001:db8:0:0:0:0:0:99]").from("2001:db8::99"),
        accept("[IPv6:2001:0db8:0000:0000:0000:0000:0000:0099]").from("2001:db8::99"),
        accept("[IPv6:2001:db8::0:99]").from("2001:db8::99"),
        accept("[IPv6:2001:db8:0:0::99]").from("2001:db8::99"),
        accept("[IPv6:::ffff:203.0.113.7]"),
        accept("[IPv6:0:0:0:0:0:ffff:cb00:7107]"),
        accept("[IPv6:0:0:0:0:0:ffff:203.0.113.7]"),
        accept("[203.0.113.7]").from("::ffff:203.0.113.7"),
        accept("[IPv6:1:2:3:4:5:6:7:8]").from("1:2:3:4:5:6:7:8"),
        accept("[IPv6:1::8]").from("1::8"),
        accept("[IPv6:1:2:3:4:5:6::]").from("1:2:3:4:5:6::"),
        accept("[IPv6:::3:4:5:6:7:8]").from("::3:4:5:6:7:8"),
        accept("[IPv6:::2]").from("::2"),
        accept("[IPv6:1:2:3:4:5:6:1.2.3.4]").from("1:2:3:4:5:6:102:304"),
        accept("[IPv6:1:2:3:4::1.2.3.4]").from("1:2:3:4::102:304"),
        accept("[IPv6:1::2:3:4:1.2.3.4]").from("1::2:3:4:102:304"),
        accept("[IPv6:2001:db8::1.2.3.4]").from("2001:db8::102:304"),
        // ---- helo_is_my_ip: every spelling of the server's addresses ----
        my_ip("192.0.2.25", MY_V4_REPLY),
        my_ip("[192.0.2.25]", MY_V4_REPLY),
        my_ip("[192.0.2.25].", MY_V4_REPLY),
        my_ip("[192.000.002.025]", MY_V4_REPLY),
        my_ip("[IPv6:::ffff:192.0.2.25]", MY_V4_REPLY),
        my_ip("[IPv6:::FFFF:C000:219]", MY_V4_REPLY),
        my_ip("[IPv6:0:0:0:0:0:ffff:192.0.2.25]", MY_V4_REPLY),
        my_ip("[IPv6:::192.0.2.25]", MY_V4_REPLY),
        my_ip("::ffff:192.0.2.25", MY_V4_REPLY),
        my_ip("2001:db8::25", MY_V6_REPLY),
        my_ip("2001:DB8::25", MY_V6_REPLY),
        my_ip("[IPv6:2001:db8::25]", MY_V6_REPLY),
        my_ip("[IPv6:2001:DB8::25]", MY_V6_REPLY),
        my_ip("[ipv6:2001:0db8:0000:0000:0000:0000:0000:0025]", MY_V6_REPLY),
        my_ip("[IPv6:2001:db8:0:0::25]", MY_V6_REPLY),
        my_ip("[IPv6:2001:db8::0:0:25]", MY_V6_REPLY),
        my_ip("[IPv6:2001:db8:0:0:0:0:0.0.0.37]", MY_V6_REPLY),
        my_ip("[192.0.2.25]", MY_V4_REPLY).with(mapped_server_ip),
        my_ip("[192.0.2.25]", MY_V4_REPLY).from(RELAY_CLIENT),
        accept_obs("[192.0.2.25]", &[O::LiteralMismatch]).with(my_ip_off),
        bogus("192.0.2.25", B::BareIp).with(my_ip_off),
        accept("[192.0.2.26]").from("192.0.2.26"),
        accept("[IPv6:2001:db8::26]").from("2001:db8::26"),
        // ---- helo_matches_rcpt, HELO-time form ----
        case("mx.example.com", Expect::RejectWith(R::HeloMatchesRcpt, S::Helo, MATCHES_RCPT_REPLY)),
        rejected("MX.EXAMPLE.COM.", R::HeloMatchesRcpt, S::Helo),
        rejected("example.com", R::HeloMatchesRcpt, S::Helo),
        rejected("Example.Org", R::HeloMatchesRcpt, S::Helo),
        rejected("example.org.", R::HeloMatchesRcpt, S::Helo),
        accept("sub.example.com"),
        accept("mx.example.com.evil.net"),
        accept_obs("mx.example.com", &[O::RelayExempt]).from(RELAY_CLIENT),
        accept_obs("example.com", &[O::RelayExempt]).from("198.51.100.200"),
        rejected("example.com", R::HeloMatchesRcpt, S::Helo).from("198.51.101.1"),
        rejected("example.com", R::HeloMatchesRcpt, S::Helo).from(RELAY_CLIENT).with(no_relays),
        accept("mx.example.com").with(matches_rcpt_off),
        accept("example.com").with(no_server_facts),
        // ---- helo_matches_rcpt, RCPT-time form ----
        rejected("customer.example.net", R::HeloMatchesRcpt, S::Client).rcpt(&["bob@customer.example.net"]),
        rejected("Customer.Example.NET.", R::HeloMatchesRcpt, S::Client).rcpt(&["bob@customer.example.net"]),
        rejected("customer.example.net", R::HeloMatchesRcpt, S::Client).rcpt(&["<Bob@Customer.Example.NET>"]),
        rejected("customer.example.net", R::HeloMatchesRcpt, S::Client).rcpt(&["bob@customer.example.net."]),
        rejected("customer.example.net", R::HeloMatchesRcpt, S::Client)
            .rcpt(&["alice@other.example.net", "<@relay.example:bob@customer.example.net>"]),
        accept("customer.example.net").rcpt(&["bob@other.example.net"]),
        accept("sub.customer.example.net").rcpt(&["bob@customer.example.net"]),
        accept("customer.example.net").rcpt(&["<>"]),
        accept("customer.example.net").rcpt(&["customer.example.net"]),
        accept_obs("customer.example.net", &[O::RelayExempt]).rcpt(&["bob@customer.example.net"]).from(RELAY_CLIENT),
        accept("customer.example.net").rcpt(&["bob@customer.example.net"]).with(matches_rcpt_off),
        rejected("example.com", R::HeloMatchesRcpt, S::Helo).rcpt(&["bob@example.com"]),
        // ---- literal_mismatch ----
        accept_obs("[198.18.0.1]", &[O::LiteralMismatch]),
        accept_obs("[IPv6:2001:db8::99]", &[O::LiteralMismatch]),
        accept("[198.18.0.1]").with(literal_off),
        rejected("[198.18.0.1]", R::LiteralMismatch, S::Client).with(literal_exact),
        rejected("[IPv6:::ffff:198.18.0.1]", R::LiteralMismatch, S::Client).with(literal_exact),
        rejected("[IPv6:2001:db8::99]", R::LiteralMismatch, S::Client).with(literal_exact),
        accept("[203.0.113.7]").with(literal_exact),
        accept("[IPv6:::ffff:cb00:7107]").with(literal_exact),
        accept("[203.0.113.7]").from("::ffff:203.0.113.7").with(literal_exact),
        accept_obs("[203.0.113.99]", &[O::LiteralMismatch]).with(literal_same_24),
        rejected("[203.0.114.7]", R::LiteralMismatch, S::Client).with(literal_same_24),
        rejected("[198.18.0.1]", R::LiteralMismatch, S::Client).with(literal_same_24),
        accept_obs("[IPv6:2001:db8:0:1::99]", &[O::LiteralMismatch]).from("2001:db8:0:1::1").with(literal_same_24),
        rejected("[IPv6:2001:db8:0:2::99]", R::LiteralMismatch, S::Client).from("2001:db8:0:1::1").with(literal_same_24),
        accept("[IPv6:2001:db8:0:1::1]").from("2001:db8:0:1::1").with(literal_same_24),
        bogus("[1.2.3]", B::MalformedLiteral).with(literal_off),
        // ---- dynamic ----
        accept_obs("c-76-121-96-159.hsd1.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("159.96.121.76.dsl.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("host76x121y96z159.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("host076121096159.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("159096121076.cust.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("host4c79609f.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("9f60794c.example.net", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("C-76-121-96-159.HSD1.EXAMPLE.NET.", &[O::Dynamic]).from("76.121.96.159"),
        accept_obs("c-76-121-96-159.hsd1.example.net", &[O::Dynamic]).from("::ffff:76.121.96.159"),
        accept("c-76-121-96-158.hsd1.example.net").from("76.121.96.159"),
        accept("c-76-121-96.hsd1.example.net").from("76.121.96.159"),
        accept("mail.example.net").from("76.121.96.159"),
        accept("c-76-121-96-159.hsd1.example.net").from("2001:db8::1"),
        accept("c-76-121-96-159.hsd1.example.net").from("76.121.96.159").with(dynamic_off),
        case("c-76-121-96-159.hsd1.example.net", Expect::RejectWith(R::Dynamic, S::Client, "550 5.7.1 Bogus HELO (dynamic address name)"))
            .from("76.121.96.159")
            .with(dynamic_reject),
        accept("mail.example.net").from("76.121.96.159").with(dynamic_reject),
        // ---- brand_forgery and rDNS: observations only ----
        accept("mail-yw1-f41.google.com").rdns("mail-yw1-f41.google.com"),
        accept("mail-yw1-f41.google.com").rdns("MAIL-YW1-F41.GOOGLE.COM."),
        accept_obs("mail-yw1-f41.google.com", &[O::BrandForgery, O::HeloNotRdns]).rdns("host.evil.example"),
        accept_obs("GOOGLE.COM", &[O::BrandForgery, O::HeloNotRdns]).rdns("dsl-1.isp.example"),
        accept_obs("mail.outlook.com", &[O::BrandForgery, O::HeloNotRdns]).rdns(""),
        accept("mail.outlook.com"),
        accept_obs("google.com", &[O::HeloNotRdns]).rdns("mail-yw1-f41.google.com"),
        accept_obs("notgoogle.com", &[O::HeloNotRdns]).rdns("host.evil.example"),
        accept_obs("mail-yw1-f41.google.com", &[O::HeloNotRdns]).rdns("host.evil.example").with(brand_off),
        accept_obs("mx.bank.example.net", &[O::BrandForgery, O::HeloNotRdns]).rdns("x.evil.example").with(brand_custom),
        accept_obs("mail.google.com", &[O::HeloNotRdns]).rdns("x.evil.example").with(brand_custom),
        // ---- never reject only because the greeting differs from rDNS ----
        accept_obs("mail.example.net", &[O::HeloNotRdns]).rdns("other.example.org"),
        accept_obs("mail.example.net", &[O::HeloNotRdns]).rdns("other.example.org").with(everything_strict),
        accept_obs("mail.example.net", &[O::HeloNotRdns]).rdns("").with(everything_strict),
        accept_obs("mail-yw1-f41.google.com", &[O::BrandForgery, O::HeloNotRdns]).rdns("").with(everything_strict),
        accept("[203.0.113.7]").rdns("other.example.org").with(everything_strict),
        // ---- operator lists ----
        rejected("spam.example.net", R::OperatorDeny, S::Helo).with(operator_lists),
        rejected("SPAM.example.net.", R::OperatorDeny, S::Helo).with(operator_lists),
        rejected("USER-7.Example.Net", R::OperatorDeny, S::Helo).with(operator_lists),
        rejected("ylmf-pc", R::OperatorDeny, S::Helo).with(operator_lists),
        accept("user-x.example.net").with(operator_lists),
        accept_obs("user-1.example.net", &[O::OperatorAllow]).with(operator_lists),
        accept_obs("localhost", &[O::OperatorAllow]).with(operator_lists),
        accept_obs("LOCALHOST.", &[O::OperatorAllow]).with(operator_lists),
        accept_obs("spam.example.net", &[O::OperatorAllow]).from(ALLOWED_CLIENT).with(operator_lists),
        accept_obs("[1.2.3]", &[O::OperatorAllow]).from(ALLOWED_CLIENT).with(operator_lists),
        accept_obs("mx.example.com", &[O::OperatorAllow]).from(ALLOWED_CLIENT).with(operator_lists),
        accept("spam.example.net").with(operator_lists_deny_off),
        bogus("ylmf-pc", B::SingleLabel).with(operator_lists_deny_off),
        case("spam.example.net", Expect::RejectWith(R::OperatorDeny, S::Helo, "554 5.7.1 Go away")).with(operator_custom_reply),
        // ---- bogus_helo off ----
        accept("localhost").with(bogus_off),
        accept("rad.internal").with(bogus_off),
        accept("[1.2.3]").with(bogus_off),
        accept("1.2.3.4").with(bogus_off),
        accept("").with(bogus_off),
        my_ip("[192.0.2.25]", MY_V4_REPLY).with(bogus_off),
        rejected("mx.example.com", R::HeloMatchesRcpt, S::Helo).with(bogus_off),
    ]
}

fn classify_case(c: &Case) -> Classification {
    let mut config = base_config();
    (c.tweak)(&mut config);
    let classifier = Classifier::new(&config).expect("test config compiles");
    let client: IpAddr = c.client.parse().unwrap();
    let greeting = GreetingFacts::new(Verb::Ehlo, c.helo.as_bytes(), client).with_rcpt(c.rcpt).with_rdns(c.rdns);
    classifier.classify(&greeting)
}

fn check(c: &Case, got: &Classification) -> Result<(), String> {
    let ok = match (&c.expect, &got.verdict) {
        (Expect::Accept(obs), Verdict::Accept) => got.observations == obs.iter().copied().collect(),
        (Expect::Bogus(reason), Verdict::Reject(r)) => {
            r.rule == RuleId::BogusHelo && r.scope == Scope::Helo && r.reply == "550 5.7.1 Bogus HELO" && r.bogus_reason == Some(*reason)
        }
        (Expect::Reject(rule, scope), Verdict::Reject(r)) => r.rule == *rule && r.scope == *scope,
        (Expect::RejectWith(rule, scope, reply), Verdict::Reject(r)) => r.rule == *rule && r.scope == *scope && r.reply == *reply,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("helo {:?} from {} rcpt {:?} rdns {:?}: expected {:?}, got {:?}", c.helo, c.client, c.rcpt, c.rdns, c.expect, got))
    }
}

#[test]
fn table() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c, &classify_case(c)).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("{} table cases passed", cases.len());
}

/// Every case gives the same answer in upper case, in lower case, with HELO instead of EHLO, and
/// (when it does not already end in a dot) with one trailing dot added.
#[test]
fn table_is_normalisation_invariant() {
    for c in cases() {
        let want = classify_case(&c);
        let upper: &'static str = Box::leak(c.helo.to_ascii_uppercase().into_boxed_str());
        let lower: &'static str = Box::leak(c.helo.to_ascii_lowercase().into_boxed_str());
        for variant in [upper, lower] {
            let got = classify_case(&Case { helo: variant, ..c.clone() });
            assert_eq!(got, want, "{:?} vs {:?}", variant, c.helo);
        }
        if !c.helo.ends_with('.') {
            let dotted: &'static str = Box::leak(format!("{}.", c.helo).into_boxed_str());
            let got = classify_case(&Case { helo: dotted, ..c.clone() });
            assert_eq!(got, want, "{:?} vs {:?}", dotted, c.helo);
        }
    }
}

#[test]
fn verb_does_not_matter() {
    let classifier = Classifier::new(&base_config()).unwrap();
    let client: IpAddr = CLIENT.parse().unwrap();
    for c in cases().iter().filter(|c| c.client == CLIENT && c.rcpt.is_empty()) {
        let ehlo = classifier.classify(&GreetingFacts::new(Verb::Ehlo, c.helo.as_bytes(), client));
        let helo = classifier.classify(&GreetingFacts::new(Verb::Helo, c.helo.as_bytes(), client));
        assert_eq!(ehlo, helo, "{:?}", c.helo);
    }
}

/// The only rules with `helo` scope are those whose verdict needs nothing but the greeting: the
/// same greeting from any client (outside the exempt networks) gets the same verdict.
#[test]
fn helo_scope_verdicts_do_not_depend_on_the_client() {
    let classifier = Classifier::new(&base_config()).unwrap();
    let clients = ["203.0.113.7", "76.121.96.159", "2001:db8:1::1", "192.0.2.26", "::ffff:10.1.2.3"];
    for c in cases().iter().filter(|c| std::ptr::fn_addr_eq(c.tweak, no_tweak as fn(&mut ClassifierConfig))) {
        let got = classify_case(c);
        let Verdict::Reject(r) = &got.verdict else {
            continue;
        };
        if r.scope != Scope::Helo {
            continue;
        }
        for client in clients {
            let g = GreetingFacts::new(Verb::Ehlo, c.helo.as_bytes(), client.parse().unwrap()).with_rdns(Some("whatever.example.net"));
            assert_eq!(classifier.classify(&g).verdict, got.verdict, "{:?} from {client}", c.helo);
        }
    }
}

/// Whatever the configuration, a well-formed name that is not the server's, not a RCPT domain,
/// and does not embed the client's address is accepted, whatever rDNS says.
#[test]
fn never_rejects_for_rdns_mismatch_alone() {
    let tweaks: [fn(&mut ClassifierConfig); 4] = [no_tweak, everything_strict, literal_exact, dynamic_reject];
    let names = ["mail.example.net", "mail-yw1-f41.google.com", "smtp.outlook.com", "a.b.example.co.uk"];
    let rdns = [Some(""), Some("other.example.org"), Some("x.y.z"), None];
    for tweak in tweaks {
        let mut config = base_config();
        tweak(&mut config);
        let classifier = Classifier::new(&config).unwrap();
        for name in names {
            for r in rdns {
                let g = GreetingFacts::new(Verb::Ehlo, name.as_bytes(), CLIENT.parse().unwrap()).with_rdns(r);
                assert!(classifier.classify(&g).verdict.is_accept(), "{name} rdns {r:?}");
            }
        }
    }
}

fn arg_strategy() -> impl Strategy<Value = String> {
    let samples: Vec<&'static str> = cases().into_iter().map(|c| c.helo).collect();
    prop_oneof![
        proptest::sample::select(samples).prop_map(str::to_owned),
        "[a-zA-Z0-9.\\-_]{0,40}",
        "([a-zA-Z0-9\\-]{1,12}\\.){1,4}(com|net|co\\.uk|LOCAL|internal|xn--p1ai|123)",
        "\\[(IPv6:|ipv6:|IPV6:)?[0-9a-fA-F:.]{0,30}\\]",
        "[0-9a-fA-F:.]{0,30}",
        any::<String>(),
    ]
}

fn strict_classifier() -> Classifier {
    let mut config = base_config();
    everything_strict(&mut config);
    operator_lists(&mut config);
    config.rules.bogus_helo.allow_underscore = true;
    Classifier::new(&config).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn case_and_one_trailing_dot_do_not_change_the_classification(
        arg in arg_strategy(),
        client in prop_oneof![Just(CLIENT), Just("76.121.96.159"), Just("192.0.2.25"), Just(ALLOWED_CLIENT), Just("2001:db8::99")],
        rcpt_domain in prop_oneof![Just("example.net"), Just("customer.example.net"), Just("a.b")],
        rdns in prop_oneof![Just(None), Just(Some("")), Just(Some("mail.example.net")), Just(Some("x.google.com"))],
    ) {
        let rcpt_addr = format!("bob@{rcpt_domain}");
        let rcpt = [rcpt_addr.as_str()];
        let client: IpAddr = client.parse().unwrap();
        for classifier in [Classifier::new(&base_config()).unwrap(), strict_classifier()] {
            let run = |a: &str| {
                let g = GreetingFacts::new(Verb::Ehlo, a.as_bytes(), client).with_rcpt(&rcpt).with_rdns(rdns);
                classifier.classify(&g)
            };
            let want = run(&arg);
            prop_assert_eq!(&run(&arg.to_ascii_uppercase()), &want);
            prop_assert_eq!(&run(&arg.to_ascii_lowercase()), &want);
            if !arg.ends_with('.') {
                prop_assert_eq!(&run(&format!("{arg}.")), &want);
                prop_assert_eq!(&run(&format!("{}.", arg.to_ascii_uppercase())), &want);
            }
        }
    }

    /// Arbitrary bytes never panic the classifier.
    #[test]
    fn arbitrary_bytes_never_panic(arg in proptest::collection::vec(any::<u8>(), 0..400)) {
        let classifier = strict_classifier();
        let _ = classifier.classify(&GreetingFacts::new(Verb::Helo, &arg, CLIENT.parse().unwrap()));
    }
}

// ---- config ----

const FULL_TOML: &str = r#"
relay_cidrs = ["198.51.100.0/24", "2001:db8:ffff::/48", "192.0.2.200"]

[server]
ips = ["192.0.2.25", "2001:db8::25"]
hostname = "MX.Example.COM."
domains = ["example.com", "example.org"]

[allow]
names = ["legacy-box.example.net"]
cidrs = ["100.64.0.0/10"]

[rules.operator_deny]
enabled = true
names = ["ylmf-pc"]
regexes = ['^user-pc\.']
reply = "550 5.7.1 Bogus HELO"

[rules.bogus_helo]
enabled = true
allow_underscore = false

[rules.helo_is_my_ip]
enabled = false

[rules.helo_matches_rcpt]
enabled = true

[rules.literal_mismatch]
mode = "same_24"

[rules.dynamic]
mode = "reject"

[rules.brand_forgery]
mode = "off"
brands = ["google.com"]
"#;

#[test]
fn config_toml_round_trip_and_json_equivalence() {
    let config = ClassifierConfig::from_toml_str(FULL_TOML).unwrap();
    assert_eq!(config.server.hostname.as_deref(), Some("MX.Example.COM."));
    assert!(!config.rules.helo_is_my_ip.enabled);
    assert!(!config.rules.bogus_helo.allow_underscore);
    assert_eq!(config.rules.literal_mismatch.mode, LiteralMismatchMode::Same24);
    assert_eq!(config.rules.dynamic.mode, DynamicMode::Reject);
    assert_eq!(config.rules.brand_forgery.mode, ObserveMode::Off);
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(ClassifierConfig::parse(&json, ConfigFormat::Json).unwrap(), config);
    let toml_again = toml::to_string(&config).unwrap();
    assert_eq!(ClassifierConfig::from_toml_str(&toml_again).unwrap(), config);

    let classifier = Classifier::new(&config).unwrap();
    let run = |helo: &str, client: &str| classifier.classify(&GreetingFacts::new(Verb::Ehlo, helo.as_bytes(), client.parse().unwrap()));
    assert_eq!(run("mx.example.com", CLIENT).verdict.rule(), Some(RuleId::HeloMatchesRcpt));
    assert_eq!(run("mx.example.com", "2001:db8:ffff::1").observations, [O::RelayExempt].into_iter().collect());
    assert_eq!(run("mx.example.com", "192.0.2.200").observations, [O::RelayExempt].into_iter().collect());
    assert_eq!(run("user-pc.example.net", CLIENT).verdict.rule(), Some(RuleId::OperatorDeny));
    assert!(run("[192.0.2.25]", "192.0.2.99").verdict.is_accept());
    assert_eq!(run("my_host.example.net", CLIENT).verdict.rule(), Some(RuleId::BogusHelo));
    let exempt: Vec<String> = classifier.exempt_networks().map(|n| n.to_string()).collect();
    assert_eq!(exempt, ["100.64.0.0/10", "198.51.100.0/24", "2001:db8:ffff::/48", "192.0.2.200/32"]);
}

#[test]
fn config_defaults_follow_the_issue() {
    let config = ClassifierConfig::from_toml_str("").unwrap();
    assert_eq!(config, ClassifierConfig::default());
    assert_eq!(ClassifierConfig::from_json_str("{}").unwrap(), config);
    let rules = &config.rules;
    assert!(rules.operator_deny.enabled && rules.bogus_helo.enabled && rules.bogus_helo.allow_underscore);
    assert!(rules.helo_is_my_ip.enabled && rules.helo_matches_rcpt.enabled);
    assert_eq!(rules.literal_mismatch.mode, LiteralMismatchMode::Observe);
    assert_eq!(rules.dynamic.mode, DynamicMode::Observe);
    assert_eq!(rules.brand_forgery.mode, ObserveMode::Observe);
    assert!(rules.brand_forgery.brands.iter().any(|b| b == "google.com"));
}

#[test]
fn config_errors() {
    assert!(matches!(ClassifierConfig::from_toml_str("[rules.bogus_hello]\nenabled = false"), Err(ConfigError::Syntax(_))));
    assert!(matches!(ClassifierConfig::from_toml_str("[rules.dynamic]\nmode = \"sometimes\""), Err(ConfigError::Syntax(_))));
    assert!(matches!(ClassifierConfig::from_json_str("{\"server\": {\"ips\": [\"not-an-ip\"]}}"), Err(ConfigError::Syntax(_))));
    let config = ClassifierConfig { relay_cidrs: vec!["10.0.0.0/33".to_owned()], ..Default::default() };
    assert!(matches!(Classifier::new(&config), Err(ConfigError::Cidr { list: "relay-cidrs", .. })));
    let mut config = ClassifierConfig::default();
    config.allow.cidrs = vec!["nope".to_owned()];
    assert!(matches!(Classifier::new(&config), Err(ConfigError::Cidr { list: "allow.cidrs", .. })));
    let mut config = ClassifierConfig::default();
    config.rules.operator_deny.regexes = vec!["(".to_owned()];
    let err = Classifier::new(&config).unwrap_err();
    assert!(matches!(err, ConfigError::Regex(_)));
    assert!(err.to_string().contains("operator-deny"));
    assert_eq!(ConfigFormat::from_path("a/b.JSON".as_ref()), ConfigFormat::Json);
    assert_eq!(ConfigFormat::from_path("a/b.toml".as_ref()), ConfigFormat::Toml);
}

#[test]
fn cli_facts_add_to_the_config() {
    let config =
        ClassifierConfig::from_toml_str("[server]\nips = [\"192.0.2.1\"]\nhostname = \"a.example.com\"\ndomains = [\"a.example\"]")
            .unwrap()
            .with_server_facts(["192.0.2.2".parse().unwrap()], Some("b.example.com".to_owned()), ["b.example".to_owned()]);
    assert_eq!(config.server.ips.len(), 2);
    assert_eq!(config.server.hostname.as_deref(), Some("b.example.com"));
    assert_eq!(config.server.domains, ["a.example", "b.example"]);
    let kept = ClassifierConfig::from_toml_str("[server]\nhostname = \"a.example.com\"").unwrap().with_server_facts([], None, []);
    assert_eq!(kept.server.hostname.as_deref(), Some("a.example.com"));
}

// ---- JSON lines ----

fn jsonl(input: &str) -> Vec<serde_json::Value> {
    let classifier = Classifier::new(&base_config()).unwrap();
    let mut out = Vec::new();
    run_jsonl(&classifier, input.as_bytes(), &mut out).unwrap();
    String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn jsonl_answers_every_line_in_order() {
    let input = concat!(
        r#"{"helo": "mail.example.net", "verb": "EHLO", "client_ip": "203.0.113.7"}"#,
        "\n",
        r#"{"helo": "[1.2.3]", "verb": "HELO", "client_ip": "203.0.113.7"}"#,
        "\n",
        "this is not json\n",
        r#"{"helo": "[192.0.2.25]", "client_ip": "203.0.113.7"}"#,
        "\r\n",
        r#"{"helo": "x", "verb": "MAIL", "client_ip": "203.0.113.7"}"#,
        "\n",
        r#"{"helo": "x.example.net", "client_ip": "999.1.1.1"}"#,
        "\n",
        r#"{"helo": "cust.example.net", "client_ip": "203.0.113.7", "rcpt": "bob@cust.example.net"}"#,
        "\n",
        r#"{"helo": "cust.example.net", "client_ip": "203.0.113.7", "rcpt": ["a@b.example", "<bob@CUST.example.net>"]}"#,
        "\n",
        r#"{"helo": "mail-1.google.com", "client_ip": "203.0.113.7", "client_rdns": "dsl.isp.example", "extra": 1}"#,
        "\n",
        "\n",
        r#"{"verb": "EHLO", "client_ip": "203.0.113.7"}"#,
        "\n",
        r#"{"helo": "[198.18.0.1]", "client_ip": "203.0.113.7"}"#,
    );
    let out = jsonl(input);
    assert_eq!(out.len(), 12);
    assert_eq!(out[0], serde_json::json!({"verdict": "accept", "observations": []}));
    assert_eq!(
        out[1],
        serde_json::json!({"verdict": "reject", "rule": "bogus_helo", "reply": "550 5.7.1 Bogus HELO", "scope": "helo", "observations": []})
    );
    assert!(out[2]["error"].is_string());
    assert_eq!(out[3]["rule"], "helo_is_my_ip");
    assert_eq!(out[3]["reply"], "550 5.7.1 Bogus HELO (192.0.2.25)");
    assert!(out[4]["error"].as_str().unwrap().contains("verb"));
    assert!(out[5]["error"].as_str().unwrap().contains("client_ip"));
    assert_eq!(out[6]["rule"], "helo_matches_rcpt");
    assert_eq!(out[6]["scope"], "client");
    assert_eq!(out[6]["reply"], "550 5.7.1 Bogus HELO matches RCPT");
    assert_eq!(out[7]["rule"], "helo_matches_rcpt");
    assert_eq!(out[8], serde_json::json!({"verdict": "accept", "observations": ["brand_forgery", "helo_not_rdns"]}));
    assert!(out[9]["error"].is_string());
    assert!(out[10]["error"].is_string());
    assert_eq!(out[11], serde_json::json!({"verdict": "accept", "observations": ["literal_mismatch"]}));
}

#[test]
fn jsonl_survives_invalid_utf8() {
    let classifier = Classifier::new(&base_config()).unwrap();
    let mut input = b"{\"helo\": \"a\xff\", \"client_ip\": \"203.0.113.7\"}\n".to_vec();
    input.extend_from_slice(b"{\"helo\": \"mail.example.net\", \"client_ip\": \"203.0.113.7\"}\n");
    let mut out = Vec::new();
    run_jsonl(&classifier, &input[..], &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["error"].is_string());
    assert_eq!(lines[1]["verdict"], "accept");
}

#[test]
fn ids_are_stable() {
    let rules: Vec<&str> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(rules, ["operator_deny", "bogus_helo", "helo_is_my_ip", "helo_matches_rcpt", "literal_mismatch", "dynamic"]);
    let obs: Vec<&str> = ObservationKind::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(obs, ["literal_mismatch", "dynamic", "brand_forgery", "helo_not_rdns", "relay_exempt", "operator_allow"]);
}
