//! The property issue 13 asks for: a listed name or source never gets a `250` to its greeting or
//! to MAIL/RCPT, and never has a message queued, however it frames its traffic. Random framings
//! from a seeded RNG (printed; `HELO_FRAMING_SEED=N` replays a run, `HELO_FRAMING_CASES=N` sets
//! the count per arm): the opening cut into segments at random offsets, leading NOOP/RSET/HELP,
//! HELO or EHLO in any case, names in any case with or without a trailing dot, a clean greeting
//! first, over plain IPv4, IPv4 fragments (through a router whose path MTU is 68, DF cleared) and
//! IPv6 with hop-by-hop and destination options headers. A real agent (native XDP on the edge
//! veth, and `--no-xdp`) in front of a real Postfix. Every framing is also sent with a clean name
//! from an unlisted address, which must get through to delivery, so the test can fail.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result};
use helo_common::maps::counter;
use helo_testbed::{
    framing::{self, Ipv6Ext, Session, Transcript},
    lab::{one_source_many_names, reply, Lab, LabOptions, USER},
    netns::{link, Netns},
    privilege::require_root,
};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};

/// Listed by the operator.
const OPERATOR_NAME: &str = "listed.example.net";
/// Listed by the agent itself (the classifier refuses it), before the cases run.
const LEARNED_NAME: &str = "localhost";
/// What the control sessions greet with; the classifier accepts it.
const CLEAN_NAME: &str = "mta.sender-isp.net";
/// The clean greeting some framings send before the one under test.
const CLEAN_FIRST_NAME: &str = "relay.sender-isp.net";

/// The client namespace's second address (listed) beside its first (clean), on every path.
const LISTED_V4: &str = "198.18.30.3";
const LISTED_V6: &str = "2001:2:0:30::3";
/// The fragmenting client sits behind the lab's client namespace, which routes for it.
const FRAG_SUBNET: u8 = 32;
const FRAG_CLEAN: &str = "198.18.32.2";
const FRAG_LISTED: &str = "198.18.32.3";
/// The router's path MTU toward the edge: the smallest IPv4 allows, so any segment carrying more
/// than a few bytes of data arrives in fragments.
const FRAG_MTU: &str = "68";
/// A piece of at least this many bytes cannot fit one 68-byte packet beside its IP header (20 bytes)
/// and its TCP header (20, and 12 more with timestamps).
const SURELY_FRAGMENTED: usize = 29;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    OperatorName,
    LearnedName,
    Source,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    V4,
    V4Fragments,
    V6(Ipv6Ext),
}

/// One framing, applied to the session under test and to its control.
#[derive(Clone, Debug)]
struct Case {
    id: usize,
    target: Target,
    path: Path,
    leading: Vec<&'static str>,
    verb: String,
    separator: &'static str,
    /// Which letters of the name are upper case (by position).
    upper: Vec<bool>,
    trailing_dot: bool,
    clean_first: bool,
    /// Where the opening is cut, as fractions of its length.
    cuts: Vec<f64>,
    gap_ms: u64,
}

fn random_case(rng: &mut StdRng, id: usize) -> Case {
    let target = *[Target::OperatorName, Target::OperatorName, Target::LearnedName, Target::Source, Target::Source].choose(rng).unwrap();
    let path = match rng.random_range(0..3) {
        0 => Path::V4,
        1 => Path::V4Fragments,
        _ => {
            let size = |rng: &mut StdRng| rng.random_bool(0.6).then(|| 8 * rng.random_range(1..=32usize));
            Path::V6(Ipv6Ext { hop_by_hop: size(rng), dest_opts: size(rng) })
        }
    };
    let leading_count = rng.random_range(0..=3);
    let leading = (0..leading_count).map(|_| *["NOOP", "RSET", "HELP", "noop"].choose(rng).unwrap()).collect();
    let verb = if rng.random_bool(0.5) { "EHLO" } else { "HELO" };
    let verb = vary_case(rng, verb);
    let separator = *[" ", " ", "  ", "\t"].choose(rng).unwrap();
    let upper = (0..64).map(|_| rng.random_bool(0.3)).collect();
    let cut_count = rng.random_range(0..=4);
    let mut cuts: Vec<f64> = (0..cut_count).map(|_| rng.random_range(0.0..1.0)).collect();
    cuts.sort_by(f64::total_cmp);
    Case {
        id,
        target,
        path,
        leading,
        verb,
        separator,
        upper,
        trailing_dot: rng.random_bool(0.3),
        clean_first: rng.random_bool(0.25),
        cuts,
        gap_ms: rng.random_range(5..40),
    }
}

fn vary_case(rng: &mut StdRng, s: &str) -> String {
    s.chars().map(|c| if rng.random_bool(0.5) { c.to_ascii_lowercase() } else { c }).collect()
}

/// Which session of a case: the one under test, or its clean control.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Target,
    Control,
}

impl Case {
    fn name(&self, role: Role) -> String {
        let base = match (role, self.target) {
            (Role::Control, _) | (Role::Target, Target::Source) => CLEAN_NAME,
            (Role::Target, Target::OperatorName) => OPERATOR_NAME,
            (Role::Target, Target::LearnedName) => LEARNED_NAME,
        };
        let mut name: String = base
            .chars()
            .zip(self.upper.iter().chain(std::iter::repeat(&false)))
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        if self.trailing_dot {
            name.push('.');
        }
        name
    }

    /// Leading commands, the clean greeting if any, then the greeting under test.
    fn opening(&self, role: Role) -> (Vec<u8>, usize) {
        let mut lines: Vec<String> = self.leading.iter().map(|c| format!("{c}\r\n")).collect();
        if self.clean_first {
            lines.push(format!("EHLO {CLEAN_FIRST_NAME}\r\n"));
        }
        lines.push(format!("{}{}{}\r\n", self.verb, self.separator, self.name(role)));
        (lines.concat().into_bytes(), lines.len())
    }

    /// The index, among the opening's replies, of the greeting under test.
    fn greeting_index(&self) -> usize {
        self.leading.len() + self.clean_first as usize
    }

    /// 250s the opening may get before the greeting under test: NOOP, RSET, the clean greeting.
    fn allowed_250s(&self, role: Role) -> usize {
        if role == Role::Target && self.target == Target::Source {
            return 0; // a listed source is refused from its banner on: 503 even to NOOP
        }
        self.leading.iter().filter(|c| matches!(c.to_ascii_uppercase().as_str(), "NOOP" | "RSET")).count() + self.clean_first as usize
    }

    fn source(&self, role: Role, lab: &Lab) -> IpAddr {
        let listed = role == Role::Target && self.target == Target::Source;
        let s = match (self.path, listed) {
            (Path::V4, false) => lab.client_end.v4.as_str(),
            (Path::V4, true) => LISTED_V4,
            (Path::V4Fragments, false) => FRAG_CLEAN,
            (Path::V4Fragments, true) => FRAG_LISTED,
            (Path::V6(_), false) => lab.client_end.v6.as_str(),
            (Path::V6(_), true) => LISTED_V6,
        };
        s.parse().unwrap()
    }

    fn session(&self, role: Role, lab: &Lab) -> Session {
        let (opening, opening_lines) = self.opening(role);
        let mut cuts: Vec<usize> = self.cuts.iter().map(|f| ((opening.len() as f64 * f) as usize).clamp(1, opening.len() - 1)).collect();
        cuts.dedup();
        let (server, ipv6_ext) = match self.path {
            Path::V6(ext) => (SocketAddr::new(lab.edge_end.v6.parse().unwrap(), 25), ext),
            _ => (SocketAddr::new(lab.edge_end.v4.parse().unwrap(), 25), Ipv6Ext::default()),
        };
        Session {
            source: self.source(role, lab),
            server,
            ipv6_ext,
            opening,
            opening_lines,
            cuts,
            gap: Duration::from_millis(self.gap_ms),
            // A listed source's SYN may be dropped: do not wait for the retransmissions.
            connect_timeout: Duration::from_millis(1500),
            read_timeout: Duration::from_secs(5),
            mail_from: "sender@sender-isp.net".into(),
            rcpt: USER.into(),
            message: format!("Subject: framing case {}\r\nX-Framing-Case: {} {role:?}\r\n\r\nframed\r\n", self.id, self.id),
        }
    }
}

/// Why a session under test broke the property, if it did.
fn target_violation(case: &Case, t: &Transcript) -> Option<String> {
    let count_250 = t.all().filter(|(_, r)| r.starts_with("250")).count();
    if let Some((what, _)) = t.all().find(|(_, r)| r.starts_with("354")) {
        return Some(format!("354 to {what}: a message could be sent"));
    }
    if let Some(r) = t.opening.get(case.greeting_index()) {
        if r.starts_with("250") {
            return Some("250 to the greeting".into());
        }
    }
    for what in ["MAIL", "RCPT"] {
        if t.reply_to(what).is_some_and(|r| r.starts_with("250")) {
            return Some(format!("250 to {what}"));
        }
    }
    if count_250 > case.allowed_250s(Role::Target) {
        return Some(format!("{count_250} replies 250, at most {} expected", case.allowed_250s(Role::Target)));
    }
    None
}

/// Why a control session did not get its mail through, if it did not.
fn control_failure(case: &Case, t: &Transcript) -> Option<String> {
    if let Some(e) = &t.not_connected {
        return Some(format!("no connection: {e}"));
    }
    let greeting = t.opening.get(case.greeting_index()).map(String::as_str).unwrap_or("<none>");
    let steps = [("greeting", Some(greeting)), ("MAIL", t.reply_to("MAIL")), ("RCPT", t.reply_to("RCPT")), ("DATA", t.reply_to("DATA"))];
    for (what, got) in steps {
        let want = if what == "DATA" { "354" } else { "250" };
        if !got.is_some_and(|r| r.starts_with(want)) {
            return Some(format!("{what}: expected {want}, got {got:?}"));
        }
    }
    if !t.reply_to("end of data").is_some_and(|r| r.starts_with("250")) {
        return Some(format!("message not accepted: {:?}", t.reply_to("end of data")));
    }
    None
}

/// The lab's client namespace also routes for a third namespace whose packets it fragments.
struct FragmentingClient {
    ns: Netns,
}

fn fragmenting_client(lab: &Lab) -> Result<FragmentingClient> {
    let ns = Netns::new("f")?;
    let (router_end, client_end) = link(&lab.client, &ns, FRAG_SUBNET)?;
    assert_eq!(client_end.v4, FRAG_CLEAN);
    ns.ip(&["addr", "add", &format!("{FRAG_LISTED}/24"), "dev", &client_end.ifname])?;
    ns.ip(&["route", "add", "default", "via", &router_end.v4])?;
    // DF cleared on everything the client sends, so the router fragments instead of refusing.
    helo_testbed::netns::run(ns.command("sysctl").args(["-qw", "net.ipv4.ip_no_pmtu_disc=1"]))?;
    helo_testbed::netns::run(lab.client.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
    // Only forwarded packets take the small MTU: the lab client's own sessions keep theirs.
    lab.client.ip(&["rule", "add", "iif", &router_end.ifname, "table", "100"])?;
    lab.client.ip(&["route", "add", "198.18.30.0/24", "dev", &lab.client_end.ifname, "mtu", "lock", FRAG_MTU, "table", "100"])?;
    lab.edge.ip(&["route", "add", &format!("198.18.{FRAG_SUBNET}.0/24"), "via", &lab.client_end.v4])?;
    Ok(FragmentingClient { ns })
}

/// `Ip: ReasmOKs` of the edge namespace: datagrams it reassembled from fragments.
fn reassembled(lab: &Lab) -> Result<u64> {
    let out = helo_testbed::netns::run(lab.edge.command("cat").arg("/proc/net/snmp"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().context("no Ip: header")?, ip.next().context("no Ip: values")?);
    let i = names.split_whitespace().position(|n| n == "ReasmOKs").context("no ReasmOKs")?;
    Ok(values.split_whitespace().nth(i).context("short Ip: line")?.parse()?)
}

/// Counts, in the edge namespace before anything else sees them (XDP aside), the packets that
/// carry each IPv6 options header: the proof the client's headers were on the wire.
fn count_ipv6_options_headers(lab: &Lab) -> Result<()> {
    let nft = |args: &[&str]| helo_testbed::netns::run(lab.edge.command("nft").args(args)).map(|_| ());
    nft(&["add", "table", "inet", "framing"])?;
    nft(&["add", "chain", "inet", "framing", "pre", "{ type filter hook prerouting priority -500; }"])?;
    nft(&["add", "rule", "inet", "framing", "pre", "exthdr", "hbh", "exists", "counter"])?;
    nft(&["add", "rule", "inet", "framing", "pre", "exthdr", "dst", "exists", "counter"])
}

/// (hop-by-hop, destination options) packets counted so far.
fn ipv6_options_headers_seen(lab: &Lab) -> Result<(u64, u64)> {
    let out = helo_testbed::netns::run(lab.edge.command("nft").args(["list", "chain", "inet", "framing", "pre"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let packets = |kind: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(&format!("exthdr {kind} exists")))
            .and_then(|l| l.split("packets ").nth(1)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((packets("hbh"), packets("dst")))
}

fn seed() -> u64 {
    std::env::var("HELO_FRAMING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random())
}

fn case_count() -> usize {
    std::env::var("HELO_FRAMING_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

fn run_arm(xdp: bool) -> Result<()> {
    let seed = seed();
    let arm = if xdp { "native XDP" } else { "--no-xdp" };
    println!("framing property ({arm}): seed {seed} (HELO_FRAMING_SEED={seed} replays it), {} cases", case_count());
    let dir = tempfile::tempdir()?;
    let mut args = one_source_many_names(dir.path())?;
    // The lab's agent listens on IPv4 only; the IPv6 path needs its address too.
    args.extend(["--listen".into(), "[2001:2:0:30::2]:25".into()]);
    let lab = Lab::new(LabOptions { agent_args: args, no_xdp: !xdp, ..Default::default() })?;
    lab.client.ip(&["addr", "add", &format!("{LISTED_V4}/24"), "dev", &lab.client_end.ifname])?;
    lab.client.ip(&["addr", "add", &format!("{LISTED_V6}/64"), "dev", &lab.client_end.ifname, "nodad"])?;
    let frag = fragmenting_client(&lab)?;
    count_ipv6_options_headers(&lab)?;
    for entry in [OPERATOR_NAME, LISTED_V4, LISTED_V6, FRAG_LISTED] {
        let out = lab.blocklist(&["add", entry, "--reason", "framing property"])?;
        assert!(out.status.success(), "blocklist add {entry}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The agent lists the learned name itself.
    let first = lab.dialog(&[&format!("EHLO {LEARNED_NAME}\r\n"), "QUIT\r\n"])?;
    assert!(reply(&first, 0).starts_with("550 5.7.1"), "{first}");
    let out = lab.blocklist(&["get", LEARNED_NAME])?;
    assert!(out.status.success(), "the learned name is not listed: {}", String::from_utf8_lossy(&out.stderr));

    let (reasm_before, counters_before) = (reassembled(&lab)?, if xdp { Some(lab.counters()?) } else { None });
    let mut rng = StdRng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..case_count()).map(|id| random_case(&mut rng, id)).collect();
    let (mut failures, mut delivered, mut surely_fragmented) = (Vec::new(), BTreeSet::new(), 0usize);
    let mut refused_how = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        for role in [Role::Target, Role::Control] {
            let session = case.session(role, &lab);
            let ns = if case.path == Path::V4Fragments { &frag.ns } else { &lab.client };
            let t = ns.enter({
                let session = session.clone();
                move || framing::run(&session)
            })?;
            if case.path == Path::V4Fragments && t.pieces.iter().any(|&n| n >= SURELY_FRAGMENTED) {
                surely_fragmented += 1;
            }
            let problem = match role {
                Role::Target => {
                    let how = match (&t.not_connected, t.banner.as_deref()) {
                        (Some(_), _) => "no connection (SYN dropped)".to_owned(),
                        (None, Some(b)) if !b.starts_with("220") => format!("banner {}", &b[..3.min(b.len())]),
                        (None, _) => {
                            t.all().find(|(_, r)| !r.starts_with("2")).map(|(_, r)| format!("reply {}", &r[..3])).unwrap_or_default()
                        }
                    };
                    *refused_how.entry(how).or_default() += 1;
                    target_violation(case, &t)
                }
                Role::Control => {
                    let failure = control_failure(case, &t);
                    if failure.is_none() {
                        delivered.insert(case.id);
                    }
                    failure
                }
            };
            if let Some(p) = problem {
                failures.push(format!(
                    "case {} {role:?}: {p}\n  {case:?}\n  opening {:?}\n  {t:?}",
                    case.id,
                    String::from_utf8_lossy(&session.opening)
                ));
            }
        }
    }
    println!("{arm}: the sessions under test were refused by: {refused_how:?}");
    assert!(failures.is_empty(), "seed {seed} ({arm}): {} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Exactly the controls' messages reached the backend's Maildir, none of the listed ones.
    let files = lab.postfix().wait_for_messages(USER, delivered.len(), Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let files = if lab.postfix().maildir_messages(USER).len() != files.len() { lab.postfix().maildir_messages(USER) } else { files };
    let mut seen = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let header =
            text.lines().find_map(|l| l.strip_prefix("X-Framing-Case: ")).with_context(|| format!("no case header in {}", f.display()))?;
        assert!(header.ends_with(" Control"), "a session under test had its message delivered: {header}");
        seen.insert(header.split(' ').next().unwrap().parse::<usize>()?);
    }
    assert_eq!(seen, delivered, "delivered messages and accepted controls differ");

    // The framings were what they say: fragments reassembled, IPv6 options headers on the wire.
    let reasm = reassembled(&lab)? - reasm_before;
    let (hbh, dst) = ipv6_options_headers_seen(&lab)?;
    println!(
        "{arm}: {} controls delivered; {reasm} datagrams reassembled from fragments ({surely_fragmented} sessions sent a piece \
         that cannot fit the path MTU); IPv6 packets with hop-by-hop options {hbh}, with destination options {dst}",
        delivered.len()
    );
    assert!(reasm >= surely_fragmented as u64, "fewer reassemblies ({reasm}) than sessions that had to fragment ({surely_fragmented})");
    let uses = |f: fn(&Ipv6Ext) -> bool| cases.iter().any(|c| matches!(&c.path, Path::V6(e) if f(e)));
    assert!(!uses(|e| e.hop_by_hop.is_some()) || hbh > 0, "no hop-by-hop header reached the edge");
    assert!(!uses(|e| e.dest_opts.is_some()) || dst > 0, "no destination options header reached the edge");
    if let Some(before) = counters_before {
        let c = lab.counters()?.since(&before);
        println!(
            "{arm}: XDP passed {} fragments, dropped {} greetings and {} SYNs of listed sources",
            c.get(counter::PASS_FRAGMENT),
            c.get(counter::DROP_HELO),
            c.get(counter::DROP_SOURCE)
        );
        assert!(c.get(counter::PASS_FRAGMENT) >= surely_fragmented as u64);
    }
    Ok(())
}

#[test]
fn a_listed_name_or_source_never_gets_250_however_framed_with_xdp() -> Result<()> {
    if !require_root("a_listed_name_or_source_never_gets_250_however_framed_with_xdp") {
        return Ok(());
    }
    run_arm(true)
}

#[test]
fn a_listed_name_or_source_never_gets_250_however_framed_without_xdp() -> Result<()> {
    if !require_root("a_listed_name_or_source_never_gets_250_however_framed_without_xdp") {
        return Ok(());
    }
    run_arm(false)
}
