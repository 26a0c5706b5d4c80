//! The real XDP program, loaded into the kernel and run through BPF_PROG_TEST_RUN on a generated
//! corpus of frames. For every frame the kernel's verdict must equal the reference's, over the
//! same map contents. The reference is written independently of the program: etherparse for the
//! headers, and for the greeting a plain reading of the README's grammar hashed with the
//! `siphasher` crate (not helo-common's scanner or hash, which the program runs). Flows are made
//! the way the program makes them: each flow's SYN goes through the program first, and the
//! reference keeps its own flow table from the SYNs it saw.

use std::{
    collections::{HashMap, HashSet},
    hash::Hasher,
    net::IpAddr,
};

use aya::programs::{TestRun, TestRunOptions};
use helo_common::{
    hash_helo_arg,
    maps::{config_flags, counter, BlockEntry, FlowKey},
    HashKey,
};
use helo_testbed::{
    frames::{Frame, Ipv6Ext, TCP_ACK, TCP_PSH, TCP_SYN, TPID_8021AD, TPID_8021Q},
    lab::BpfFs,
    privilege::require_root,
};
use helo_user::{
    kernel::{addr::addr_key, blocks::BlockMaps, BlockTables, KernelFilter, LoadOptions},
    modes::FilterMode,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const KEY: HashKey = HashKey { k0: 0x5eed_0001_dead_beef, k1: 0x0123_4567_89ab_cdef };
const PORTS: [u16; 2] = [25, 587];

/// What user space put in the maps, and the flows the reference saw SYNs for.
struct Model {
    /// siphasher hashes of the listed (normalised) names.
    helo: HashSet<u64>,
    sources: HashSet<IpAddr>,
    allow: Vec<(IpAddr, u8)>,
    /// Flow → the sequence number of its first payload byte, from the SYNs seen so far.
    flows: HashMap<FlowKey, u32>,
}

fn flow_key(f: &Frame) -> FlowKey {
    FlowKey::new(addr_key(f.src).addr, addr_key(f.dst).addr, f.sport.to_be(), f.dport.to_be())
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// SipHash-2-4 of a name with the test key, by the `siphasher` crate.
fn reference_hash(name: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_key(&KEY.to_bytes());
    h.write(name);
    h.finish()
}

/// What the start of a payload is, read the way the README states the grammar.
#[derive(Debug, PartialEq)]
#[allow(clippy::enum_variant_names, reason = "NotGreeting reads as the grammar says it")]
enum Greeting {
    /// A greeting, with its argument normalised.
    Name(Vec<u8>),
    NotGreeting,
    TooLong,
    /// The payload (or the 512 bytes looked at) ends before the greeting does.
    Truncated,
}

/// The README: "`HELO`/`EHLO` in any case, then spaces or tabs (or directly CR/LF: an empty
/// argument), then the argument up to the first space, CR or LF. [...] normalised by ASCII
/// lower-casing and dropping one trailing dot"; at most 255 bytes of argument, within the first
/// 512 payload bytes. Written from that text alone, with slices, not a state machine.
fn reference_greeting(payload: &[u8]) -> Greeting {
    let w = &payload[..payload.len().min(512)];
    let verb = w[..w.len().min(4)].to_ascii_lowercase();
    if !b"helo".starts_with(&verb) && !b"ehlo".starts_with(&verb) {
        return Greeting::NotGreeting;
    }
    if w.len() < 4 {
        return Greeting::Truncated;
    }
    let rest = &w[4..];
    match rest.first() {
        None => return Greeting::Truncated,
        Some(b'\r' | b'\n') => return Greeting::Name(vec![]),
        Some(b' ' | b'\t') => {}
        Some(_) => return Greeting::NotGreeting,
    }
    let blanks = rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    let rest = &rest[blanks..];
    match rest.first() {
        None => return Greeting::Truncated,
        Some(b'\r' | b'\n') => return Greeting::Name(vec![]),
        Some(_) => {}
    }
    let arg = match rest.iter().position(|b| matches!(b, b' ' | b'\r' | b'\n')) {
        Some(len) if len <= 255 => &rest[..len],
        Some(_) => return Greeting::TooLong,
        None if rest.len() > 255 => return Greeting::TooLong,
        None => return Greeting::Truncated,
    };
    let mut name = arg.to_ascii_lowercase();
    if name.last() == Some(&b'.') {
        name.pop();
    }
    Greeting::Name(name)
}

impl Model {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|&(net, p)| in_net(ip, net, p))
    }

    /// The verdict the program should reach, from an independent parse of the bytes; a SYN the
    /// program would remember is remembered here too.
    fn verdict(&mut self, frame: &[u8]) -> u32 {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let Ok(p) = SlicedPacket::from_ethernet(frame) else { return XDP_PASS };
        let (src, dst, fragmented) = match &p.net {
            Some(NetSlice::Ipv4(v4)) => {
                (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.payload().fragmented)
            }
            Some(NetSlice::Ipv6(v6)) => {
                (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr()), v6.payload().fragmented)
            }
            _ => return XDP_PASS,
        };
        if fragmented {
            return XDP_PASS;
        }
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { return XDP_PASS };
        if !PORTS.contains(&tcp.destination_port()) {
            return XDP_PASS;
        }
        let drop_unless_allowed = |model: &Self| if model.allowed(src) { XDP_PASS } else { XDP_DROP };
        let flow = FlowKey::new(addr_key(src).addr, addr_key(dst).addr, tcp.source_port().to_be(), tcp.destination_port().to_be());
        if tcp.syn() && !tcp.ack() {
            // Listed sources are judged at their SYN, and only there; their flows are not
            // remembered (allowed or not), every other SYN's is.
            if self.sources.contains(&src) {
                return drop_unless_allowed(self);
            }
            self.flows.insert(flow, tcp.sequence_number().wrapping_add(1));
            return XDP_PASS;
        }
        let payload = tcp.payload();
        if payload.is_empty() || self.flows.get(&flow) != Some(&tcp.sequence_number()) {
            return XDP_PASS;
        }
        match reference_greeting(payload) {
            Greeting::Name(name) if self.helo.contains(&reference_hash(&name)) => drop_unless_allowed(self),
            _ => XDP_PASS,
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const BLOCKED_NAMES: &[&[u8]] = &[b"blocked.example.com", b"bad.example", b"[198.51.100.7]", b"1.2.3.4", b"localhost", b"", b"abc"];

/// Listed names whose lengths fall around the program's 8-byte words (its fast path): the name's
/// end, and a dropped trailing dot, on either side of a word boundary, and of the edge between the
/// first four words (read inline) and the rest (read in the program's bpf_loop). Each is sent in
/// several spellings ([`payloads`]).
const WORD_EDGE_NAMES: &[&[u8]] = &[
    b"abcdefg",
    b"abcdefgh",
    b"abcdefghi",
    b"abcdefghijklmno",
    b"abcdefghijklmnop",
    b"abcdefghijklmnopq",
    b"abcdefghijklmnopqrstuvwxyz01234",
    b"abcdefghijklmnopqrstuvwxyz012345",
    b"abcdefghijklmnopqrstuvwxyz0123456",
];

/// Payload lengths of 8 or more whose argument has no end: a frame trailer after them (Ethernet
/// padding) must not be read as its end.
const UNTERMINATED: &[&[u8]] = &[b"EHLO abcdefg", b"EHLO abcdefghijklmno", b"HELO abc"];
const EXPIRED_NAME: &[u8] = b"expired.example.com";

fn long_name(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"abcdefghij."[i % 11]).map(|b| if b == b'.' { b'x' } else { b }).collect()
}

/// Greeting payloads: listed names in other spellings, names that are not listed, and non-greetings.
fn payloads() -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = vec![
        b"EHLO blocked.example.com\r\n".to_vec(),
        b"HELO BLOCKED.Example.COM.\r\n".to_vec(),
        b"ehlo \t blocked.example.com\r\n".to_vec(),
        b"EHLO blocked.example.com\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n".to_vec(),
        b"EHLO blocked.example.com extra\r\n".to_vec(),
        b"HeLo bad.example\n".to_vec(),
        b"EHLO [198.51.100.7]\r\n".to_vec(),
        b"EHLO 198.51.100.7\r\n".to_vec(), // not listed: brackets make a different name
        b"EHLO 1.2.3.4\r\n".to_vec(),
        b"EHLO [1.2.3.4]\r\n".to_vec(),
        b"EHLO localhost\r\n".to_vec(),
        b"HELO\r\n".to_vec(),
        b"HELO \r\n".to_vec(),
        b"EHLO mail.example.org\r\n".to_vec(),
        b"EHLO blocked.example.com.evil\r\n".to_vec(),
        b"EHLO blocked.example.co\r\n".to_vec(),
        b"EHLO expired.example.com\r\n".to_vec(),
        b"EHLO blocked\0.example.com\r\n".to_vec(),
        b"EHLO bl\xc3\xb6cked.example.com\r\n".to_vec(),
        b"EHLO blocked.example.com".to_vec(), // no terminator: truncated
        b"EHL".to_vec(),
        b"HELLO blocked.example.com\r\n".to_vec(),
        b"MAIL FROM:<x@blocked.example.com>\r\n".to_vec(),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
        b" EHLO blocked.example.com\r\n".to_vec(),
    ];
    for len in [0usize, 1, 254, 255, 256] {
        let name = long_name(len);
        p.push([b"EHLO ".as_slice(), &name, b"\r\n"].concat());
    }
    // Where the program's fast path (verb, one space, the argument read eight bytes per step) and
    // its slow path (anything else, byte by byte) part ways, both sides of each line.
    p.extend([
        b"EHLO\tblocked.example.com\r\n".to_vec(),
        b"EHLO  blocked.example.com\r\n".to_vec(),
        b"HELO abc\n".to_vec(),
        b"HELO ab\n".to_vec(),
        b"HELO a\n".to_vec(),
        b"EHLO\r\n".to_vec(),
        b"EHLO\n".to_vec(),
        b"EHLO \r\nMAIL FROM:<a@b.example>\r\n".to_vec(),
        [b"EHLO blocked.example.com\r\n".as_slice(), &[b'x'; 600]].concat(),
        [b"EHLO".as_slice(), &[b' '; 200], b"blocked.example.com\r\n"].concat(),
        [b"EHLO".as_slice(), &[b' '; 300], b"blocked.example.com\r\n"].concat(),
        [b"EHLO\t".as_slice(), &long_name(255), b"\r\n"].concat(),
        [b"EHLO ".as_slice(), &long_name(255), b".\r\n"].concat(),
        [b"EHLO ".as_slice(), &long_name(254), b".\r\n"].concat(),
    ]);
    for &name in WORD_EDGE_NAMES {
        let upper = name.to_ascii_uppercase();
        p.push([b"EHLO ".as_slice(), name, b"\r\n"].concat());
        p.push([b"helo ".as_slice(), &upper, b".\n"].concat());
        p.push([b"EHLO ".as_slice(), name, b"..\r\n"].concat()); // normalises to "name.": not listed
        p.push([b"EHLO ".as_slice(), &name[1..], b"\r\n"].concat()); // one shorter: not listed
        p.push([b"EHLO ".as_slice(), name, b" more\r\n"].concat());
    }
    p.extend(UNTERMINATED.iter().map(|u| u.to_vec()));
    p
}

struct Corpus {
    frames: Vec<Frame>,
}

fn corpus() -> Corpus {
    // Clean; listed; listed and allowed; allowed only.
    let v4_sources = [ip("198.18.1.10"), ip("198.18.9.9"), ip("198.18.7.5"), ip("198.18.7.20")];
    let v6_sources = [ip("2001:2::1:10"), ip("2001:2::9:9"), ip("2001:2:0:7::5"), ip("2001:2:0:7::20")];
    let mut frames = Vec::new();
    let mut sport = 20000u16;
    let mut next_sport = || {
        sport = sport.wrapping_add(1);
        sport
    };
    for payload in payloads() {
        for (srcs, dst) in [(v4_sources, ip("198.18.0.2")), (v6_sources, ip("2001:2::2"))] {
            for src in srcs {
                for vlans in [vec![], vec![TPID_8021Q], vec![TPID_8021AD, TPID_8021Q]] {
                    for ip_opt in [0u8, 1, 10] {
                        for tcp_opt in [0u8, 3, 10] {
                            for dport in [25u16, 587, 80] {
                                let mut f = Frame::tcp(src, dst, &payload);
                                f.vlan_tpids = vlans.clone();
                                f.sport = next_sport();
                                f.dport = dport;
                                f.seq = 0x1000_0000u32.wrapping_add(f.sport as u32 * 7919);
                                f.tcp_option_words = tcp_opt;
                                if src.is_ipv4() {
                                    f.ipv4_option_words = ip_opt;
                                } else {
                                    f.ipv6_ext = match ip_opt {
                                        0 => vec![],
                                        1 => vec![Ipv6Ext::HopByHop],
                                        _ => vec![Ipv6Ext::HopByHop, Ipv6Ext::DestOpts, Ipv6Ext::Routing],
                                    };
                                }
                                frames.push(f);
                            }
                        }
                    }
                }
            }
        }
    }
    Corpus { frames }
}

/// Frames that break the headers: every truncation point, bad IHL / data offset, fragments,
/// SYNs, other protocols, segments that are not the first payload.
fn broken_frames(base: &[Frame]) -> Vec<(Vec<u8>, Option<Frame>)> {
    let mut out = Vec::new();
    for f in base {
        let bytes = f.build();
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (a NIC never delivers
        // one), so the cuts start there.
        for cut in 14..bytes.len() {
            out.push((bytes[..cut].to_vec(), Some(f.clone())));
        }
        for ihl in 0..5u8 {
            let mut g = f.clone();
            if g.src.is_ipv4() {
                g.ipv4_ihl_override = Some(ihl);
                out.push((g.build(), Some(g)));
            }
        }
        for doff in 0..5u8 {
            let mut g = f.clone();
            g.tcp_doff_override = Some(doff);
            out.push((g.build(), Some(g)));
        }
        // Data offset beyond the segment.
        let mut g = f.clone();
        g.tcp_doff_override = Some(15);
        g.payload.truncate(10);
        out.push((g.build(), Some(g)));
        for frag in [0x2000u16, 0x0001, 0x3fff] {
            let mut g = f.clone();
            if g.src.is_ipv4() {
                g.ipv4_frag = frag;
            } else {
                g.ipv6_ext = vec![Ipv6Ext::Fragment];
            }
            out.push((g.build(), Some(g)));
        }
        let mut g = f.clone();
        g.ip_proto = 17;
        out.push((g.build(), None));
        let syn = f.syn();
        out.push((syn.build(), Some(syn)));
        let mut g = f.clone();
        g.seq = g.seq.wrapping_add(100); // a later segment of the flow
        out.push((g.build(), Some(g)));
        let mut g = f.clone();
        g.tcp_flags = TCP_SYN | TCP_ACK;
        out.push((g.build(), Some(g)));
        let mut g = f.clone();
        g.tcp_flags = TCP_ACK | TCP_PSH;
        g.payload.clear();
        out.push((g.build(), Some(g)));
        // Three VLAN tags: more than the parser walks.
        let mut g = f.clone();
        g.vlan_tpids = vec![TPID_8021AD, TPID_8021Q, TPID_8021Q];
        out.push((g.build(), Some(g)));
        // An ARP frame.
        let mut arp = bytes.clone();
        arp[12] = 0x08;
        arp[13] = 0x06;
        out.push((arp, None));
    }
    out
}

#[test]
fn kernel_verdicts_match_the_reference_on_a_generated_corpus() {
    if !require_root("kernel_verdicts_match_the_reference_on_a_generated_corpus") {
        return;
    }
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();

    let mut model = Model { helo: HashSet::new(), sources: HashSet::new(), allow: vec![], flows: HashMap::new() };
    let listed = BlockEntry { reason: 2, added_unix_s: 1, ..Default::default() };
    let mut long_names = [long_name(254), long_name(255)];
    long_names.iter_mut().for_each(|n| n.make_ascii_lowercase());
    for name in BLOCKED_NAMES.iter().chain(WORD_EDGE_NAMES).copied().chain(long_names.iter().map(|n| n.as_slice())) {
        // The kernel gets the agent's hash; the reference computes its own.
        filter.block_helo(hash_helo_arg(&KEY, name), listed).unwrap();
        model.helo.insert(reference_hash(name));
    }
    // An expired entry: still in the map, but the kernel must ignore it.
    filter.block_helo(hash_helo_arg(&KEY, EXPIRED_NAME), BlockEntry { expires_mono_ns: 1, ..listed }).unwrap();
    for src in [ip("198.18.9.9"), ip("2001:2::9:9"), ip("198.18.7.5"), ip("2001:2:0:7::5")] {
        filter.block_source(src, listed).unwrap();
        model.sources.insert(src);
    }
    for (net, prefix) in [(ip("198.18.7.0"), 24u8), (ip("2001:2:0:7::"), 64)] {
        filter.maps.allow(net, prefix).unwrap();
        model.allow.push((net, prefix));
    }

    let Corpus { frames } = corpus();
    let truncation_base: Vec<Frame> =
        frames.iter().filter(|f| f.dport == 25 && f.payload.len() < 64).step_by(97).take(24).cloned().collect();
    let mut cases: Vec<(Vec<u8>, Option<Frame>)> = Vec::new();
    for f in &frames {
        cases.push((f.build(), Some(f.clone())));
        if UNTERMINATED.contains(&f.payload.as_slice()) {
            // A trailer after the IP packet, as Ethernet padding would be: not payload.
            let mut padded = f.build();
            padded.extend_from_slice(b"\r\n\r\n");
            cases.push((padded, Some(f.clone())));
        }
    }
    cases.extend(broken_frames(&truncation_base));

    // Every flow starts with its SYN, through the program, as on the wire: the program's own SYN
    // handling makes the flows, and the reference follows it from the same frames.
    let mut runs: Vec<Vec<u8>> = Vec::with_capacity(cases.len() * 2);
    let mut started: HashSet<FlowKey> = HashSet::new();
    for (bytes, frame) in cases {
        if let Some(f) = frame {
            if started.insert(flow_key(&f)) {
                runs.push(f.syn().build());
            }
        }
        runs.push(bytes);
    }

    let before = filter.maps.counters().unwrap();
    let (mut drops, mut passes, mut mismatches) = (0usize, 0usize, Vec::new());
    for bytes in &runs {
        let result =
            filter.program().test_run(TestRunOptions { data_in: Some(bytes), repeat: 1, ..Default::default() }).expect("BPF_PROG_TEST_RUN");
        let want = model.verdict(bytes);
        if result.return_value != want {
            mismatches.push((bytes.clone(), result.return_value, want));
        }
        match result.return_value {
            XDP_DROP => drops += 1,
            XDP_PASS => passes += 1,
            other => panic!("unexpected XDP action {other}"),
        }
    }
    let counted = filter.maps.counters().unwrap().since(&before);

    println!("corpus: {} frames ({} flows started by their SYN), {drops} dropped, {passes} passed", runs.len(), started.len());
    for (name, n) in counted.named() {
        println!("  {name:<24} {n}");
    }
    for (bytes, got, want) in mismatches.iter().take(10) {
        eprintln!("MISMATCH kernel={got} reference={want} frame={bytes:02x?}");
    }
    assert!(mismatches.is_empty(), "{} of {} verdicts differ from the reference", mismatches.len(), runs.len());
    assert!(runs.len() >= 10_000, "the corpus must hold at least 10,000 frames");
    // Every frame lands in exactly one verdict counter.
    let verdicts: u64 = counted.named().filter(|(n, _)| *n != "events_lost").map(|(_, n)| n).sum();
    assert_eq!(verdicts, runs.len() as u64);
    assert_eq!(counted.get(counter::DROP_HELO) + counted.get(counter::DROP_SOURCE), drops as u64);
    for c in [
        counter::DROP_HELO,
        counter::DROP_SOURCE,
        counter::PASS_ALLOW_LISTED,
        counter::PASS_NOT_LISTED,
        counter::PASS_OTHER_PORT,
        counter::PASS_FRAGMENT,
        counter::PASS_MALFORMED,
        counter::PASS_NO_PAYLOAD,
        counter::PASS_NOT_FIRST_PAYLOAD,
        counter::PASS_NOT_GREETING,
        counter::PASS_ARG_TOO_LONG,
        counter::PASS_TRUNCATED,
        counter::PASS_NOT_TCP,
        counter::PASS_NOT_IP,
    ] {
        assert!(counted.get(c) > 0, "the corpus never reached counter {}", counter::NAMES[c as usize]);
    }
}

#[test]
fn observe_mode_passes_what_enforce_mode_drops() {
    if !require_root("observe_mode_passes_what_enforce_mode_drops") {
        return;
    }
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Observe, &PORTS).unwrap();
    let name = b"blocked.example.com";
    filter.block_helo(hash_helo_arg(&KEY, name), BlockEntry { reason: 2, ..Default::default() }).unwrap();
    let f = Frame::tcp(ip("198.18.1.10"), ip("198.18.0.2"), b"EHLO blocked.example.com\r\n");
    filter.maps.remember_flow(flow_key(&f), f.seq).unwrap();
    let bytes = f.build();
    let run = |filter: &KernelFilter| {
        filter.program().test_run(TestRunOptions { data_in: Some(&bytes), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    assert_eq!(run(&filter), XDP_PASS);
    assert_eq!(filter.maps.counters().unwrap().get(counter::OBSERVE_HELO), 1);
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    assert_eq!(run(&filter), XDP_DROP);
    let entry = filter.helo_entry(hash_helo_arg(&KEY, name)).unwrap();
    assert_eq!(entry.hits, 2, "both runs hit the entry");
    assert!(entry.last_hit_mono_ns > 0);
}

#[test]
fn an_unconfigured_program_passes_everything() {
    if !require_root("an_unconfigured_program_passes_everything") {
        return;
    }
    let filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    let f = Frame::tcp(ip("198.18.1.10"), ip("198.18.0.2"), b"EHLO x\r\n");
    let r = filter.program().test_run(TestRunOptions { data_in: Some(&f.build()), repeat: 1, ..Default::default() }).unwrap();
    assert_eq!(r.return_value, XDP_PASS);
    assert_eq!(filter.maps.counters().unwrap().get(counter::PASS_UNCONFIGURED), 1);
}

#[test]
fn the_verifier_accepts_the_program() {
    if !require_root("the_verifier_accepts_the_program") {
        return;
    }
    let filter = KernelFilter::load(LoadOptions::default()).expect("the verifier must accept the program");
    let info = filter.program().info().unwrap();
    let translated = info.size_translated().unwrap_or(0) / 8;
    let verified = info.verified_instruction_count().unwrap_or(0);
    // Recorded in the README ("The XDP program").
    println!("program size: {translated} BPF instructions; the verifier processed {verified}");
    assert!(translated > 0 && verified > 0);
}

#[test]
fn a_listed_network_drops_its_sources_and_only_them() {
    if !require_root("a_listed_network_drops_its_sources_and_only_them") {
        return;
    }
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    let flags = |filter: &KernelFilter| filter.maps.config.get(&0, 0).unwrap().flags;
    // Both tries empty: a SYN looks in neither.
    assert_eq!(flags(&filter), config_flags::ALLOW_EMPTY | config_flags::SOURCE_NETS_EMPTY);
    let listed = BlockEntry { reason: 1, ..Default::default() };
    filter.block_source_net(ip("198.18.44.0"), 24, listed).unwrap();
    assert_eq!(flags(&filter) & config_flags::SOURCE_NETS_EMPTY, 0, "a network went in with the program told to skip the trie");
    filter.block_source_net(ip("2001:2:0:44::"), 64, listed).unwrap();
    // An expired network entry is ignored.
    filter.block_source_net(ip("198.18.46.0"), 24, BlockEntry { expires_mono_ns: 1, ..listed }).unwrap();
    filter.maps.allow(ip("198.18.44.128"), 25).unwrap();
    let run = |filter: &KernelFilter, src: &str, dst: &str| {
        let syn = Frame::tcp(ip(src), ip(dst), b"").syn();
        filter.program().test_run(TestRunOptions { data_in: Some(&syn.build()), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    assert_eq!(run(&filter, "198.18.44.7", "198.18.0.2"), XDP_DROP);
    assert_eq!(run(&filter, "2001:2:0:44::7", "2001:2::2"), XDP_DROP);
    assert_eq!(run(&filter, "198.18.45.7", "198.18.0.2"), XDP_PASS);
    assert_eq!(run(&filter, "198.18.46.7", "198.18.0.2"), XDP_PASS, "an expired network still drops");
    assert_eq!(run(&filter, "198.18.44.200", "198.18.0.2"), XDP_PASS, "the allow list must win over a listed network");
    assert!(filter.source_net_entry(ip("198.18.44.0"), 24).unwrap().hits >= 1);
    // Configured again over tries that already hold entries (an agent restarting on pinned maps):
    // the program must still look in both.
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    assert_eq!(run(&filter, "198.18.44.7", "198.18.0.2"), XDP_DROP);
    assert_eq!(run(&filter, "198.18.44.200", "198.18.0.2"), XDP_PASS, "the allow list must still win");
    assert!(filter.unblock_source_net(ip("198.18.44.0"), 24).unwrap());
    assert_eq!(run(&filter, "198.18.44.7", "198.18.0.2"), XDP_PASS);
    // Both emptied: the program may skip both tries again.
    assert!(filter.unblock_source_net(ip("198.18.46.0"), 24).unwrap());
    assert_eq!(flags(&filter) & config_flags::SOURCE_NETS_EMPTY, 0, "the trie still holds a network");
    assert!(filter.unblock_source_net(ip("2001:2:0:44::"), 64).unwrap());
    assert!(filter.maps.disallow(ip("198.18.44.128"), 25).unwrap());
    assert_eq!(flags(&filter), config_flags::ALLOW_EMPTY | config_flags::SOURCE_NETS_EMPTY);
}

#[test]
fn an_offline_network_listing_reaches_the_running_program() {
    if !require_root("an_offline_network_listing_reaches_the_running_program") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = BpfFs::mount(dir.path().join("bpffs")).unwrap();
    let pins = fs.path.join("helo");
    std::fs::create_dir_all(&pins).unwrap();
    let mut filter = KernelFilter::load(LoadOptions { pin_dir: Some(pins.clone()), ..Default::default() }).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    let syn = Frame::tcp(ip("198.18.47.7"), ip("198.18.0.2"), b"").syn().build();
    let run = |filter: &KernelFilter| {
        filter.program().test_run(TestRunOptions { data_in: Some(&syn), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    assert_eq!(run(&filter), XDP_PASS);
    // `blocklist add` with no agent running: the pinned maps, opened on their own.
    let mut offline = BlockMaps::open_pinned(&pins).unwrap().expect("the maps are pinned");
    offline.block_source_net(ip("198.18.47.0"), 24, BlockEntry { reason: 1, ..Default::default() }).unwrap();
    assert_eq!(run(&filter), XDP_DROP, "the program skipped the trie the offline command wrote");
    assert!(offline.unblock_source_net(ip("198.18.47.0"), 24).unwrap());
    assert_eq!(run(&filter), XDP_PASS);
    assert_ne!(filter.maps.config.get(&0, 0).unwrap().flags & config_flags::SOURCE_NETS_EMPTY, 0);
}

#[test]
fn a_flow_is_reported_once_and_a_listed_source_is_sampled() {
    if !require_root("a_flow_is_reported_once_and_a_listed_source_is_sampled") {
        return;
    }
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    let mut ring = filter.take_events().unwrap();
    let mut drain = || {
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        n
    };
    let run = |filter: &KernelFilter, bytes: &[u8], repeat: u32| {
        filter.program().test_run(TestRunOptions { data_in: Some(bytes), repeat, ..Default::default() }).unwrap().return_value
    };
    filter.block_helo(hash_helo_arg(&KEY, b"flood.example.com"), BlockEntry { reason: 2, ..Default::default() }).unwrap();
    // One flow's listed greeting, replayed 1,000 times: every copy dropped and counted, one event.
    let f = Frame::tcp(ip("198.18.1.10"), ip("198.18.0.2"), b"EHLO flood.example.com\r\n");
    filter.maps.remember_flow(flow_key(&f), f.seq).unwrap();
    assert_eq!(run(&filter, &f.build(), 1000), XDP_DROP);
    assert_eq!(filter.maps.counters().unwrap().get(counter::DROP_HELO), 1000);
    assert_eq!(drain(), 1, "one event for one flow");
    // A new connection (a new SYN, so a new flow entry) is reported again.
    let mut g = f.clone();
    g.sport += 1;
    filter.maps.remember_flow(flow_key(&g), g.seq).unwrap();
    assert_eq!(run(&filter, &g.build(), 3), XDP_DROP);
    assert_eq!(drain(), 1, "the second flow gets its event");
    // SYNs of a listed source: every one dropped, events sampled (one per entry per second).
    filter.block_source(ip("198.18.9.9"), BlockEntry { reason: 1, ..Default::default() }).unwrap();
    let syn = Frame::tcp(ip("198.18.9.9"), ip("198.18.0.2"), b"").syn().build();
    assert_eq!(run(&filter, &syn, 500), XDP_DROP);
    assert_eq!(filter.maps.counters().unwrap().get(counter::DROP_SOURCE), 500);
    assert_eq!(filter.source_entry(ip("198.18.9.9")).unwrap().hits, 500);
    let events = drain();
    assert!((1..=2).contains(&events), "{events} events for 500 SYNs within a second");
}

#[test]
fn a_spoofed_syn_does_not_re_key_an_established_flow() {
    if !require_root("a_spoofed_syn_does_not_re_key_an_established_flow") {
        return;
    }
    let mut filter = KernelFilter::load(LoadOptions::default()).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &PORTS).unwrap();
    let mut ring = filter.take_events().unwrap();
    let mut events = || {
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        n
    };
    let run = |filter: &KernelFilter, f: &Frame| {
        filter.program().test_run(TestRunOptions { data_in: Some(&f.build()), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    filter.block_helo(hash_helo_arg(&KEY, b"listed.example.com"), BlockEntry { reason: 2, ..Default::default() }).unwrap();
    let (client, server) = (ip("198.18.1.10"), ip("198.18.0.2"));

    // The victim: SYN (ISN 999), handshake ACK at ISN + 1.
    let victim = Frame::tcp(client, server, b"EHLO ok.example.org\r\n");
    let ack = Frame { payload: vec![], tcp_flags: TCP_ACK, ..victim.clone() };
    assert_eq!(run(&filter, &victim.syn()), XDP_PASS);
    assert_eq!(run(&filter, &ack), XDP_PASS);
    let state = filter.maps.flow_state(flow_key(&victim)).expect("the SYN made a flow");
    assert!(state.established(), "the handshake ACK establishes the flow");
    assert_eq!(state.first_payload_seq, victim.seq);

    // The attacker: a SYN on the victim's 4-tuple with an ISN of its choosing, then a listed
    // greeting at that ISN + 1. Not the flow's first payload: passed (the victim's TCP stack
    // drops it as out of window), and no drop event that would end the victim's session.
    let spoofed = Frame { seq: 70_001, ..Frame::tcp(client, server, b"EHLO listed.example.com\r\n") };
    assert_eq!(run(&filter, &spoofed.syn()), XDP_PASS);
    assert_eq!(filter.maps.flow_state(flow_key(&victim)).unwrap().first_payload_seq, victim.seq, "the spoofed SYN re-keyed the flow");
    let before = filter.maps.counters().unwrap();
    assert_eq!(run(&filter, &spoofed), XDP_PASS);
    let after = filter.maps.counters().unwrap().since(&before);
    assert_eq!(after.get(counter::PASS_NOT_FIRST_PAYLOAD), 1);
    assert_eq!(after.get(counter::DROP_HELO), 0);
    assert_eq!(events(), 0, "a drop event for the victim's flow");
    // The victim's own first payload is still judged (here: clean, passed).
    assert_eq!(run(&filter, &victim), XDP_PASS);
    assert_eq!(filter.maps.counters().unwrap().since(&before).get(counter::PASS_NOT_LISTED), 1);

    // A flow still in its handshake is not re-keyed either, ...
    let other = Frame { sport: 40001, ..victim.clone() };
    assert_eq!(run(&filter, &other.syn()), XDP_PASS);
    assert_eq!(run(&filter, &Frame { sport: 40001, ..spoofed.syn() }), XDP_PASS);
    assert_eq!(filter.maps.flow_state(flow_key(&other)).unwrap().first_payload_seq, other.seq);
    // ... while a stale one is (a port the client reused): here one user space wrote with no SYN
    // time, and the new connection's listed greeting is judged and dropped.
    let reused = Frame { sport: 40002, ..spoofed.clone() };
    filter.maps.remember_flow(flow_key(&reused), 12_345).unwrap();
    assert_eq!(run(&filter, &reused.syn()), XDP_PASS);
    assert_eq!(filter.maps.flow_state(flow_key(&reused)).unwrap().first_payload_seq, reused.seq);
    assert_eq!(run(&filter, &reused), XDP_DROP);
    assert_eq!(events(), 1);
}

#[test]
fn the_greeting_reference_reads_the_readme_grammar() {
    use Greeting::*;
    let name = |s: &str| Name(s.as_bytes().to_vec());
    assert_eq!(reference_greeting(b"EHLO Mail.Example.COM.\r\n"), name("mail.example.com"));
    assert_eq!(reference_greeting(b"helo \t x y\r\n"), name("x"));
    assert_eq!(reference_greeting(b"HELO\r\n"), name(""));
    assert_eq!(reference_greeting(b"HELO  \n"), name(""));
    assert_eq!(reference_greeting(b"EHLO a\tb\r\n"), name("a\tb"));
    assert_eq!(reference_greeting(b"EHLO foo..\r\n"), name("foo."));
    assert_eq!(reference_greeting(b"EHL"), Truncated);
    assert_eq!(reference_greeting(b"EHLO"), Truncated);
    assert_eq!(reference_greeting(b"EHLO  "), Truncated);
    assert_eq!(reference_greeting(b"EHLO abc"), Truncated);
    assert_eq!(reference_greeting(b"EHLOX a\r\n"), NotGreeting);
    assert_eq!(reference_greeting(b"EHX"), NotGreeting);
    assert_eq!(reference_greeting(b" EHLO a\r\n"), NotGreeting);
    let arg = |n: usize, end: &[u8]| [b"EHLO ".as_slice(), &vec![b'a'; n], end].concat();
    assert_eq!(reference_greeting(&arg(255, b"\r\n")), Name(vec![b'a'; 255]));
    assert_eq!(reference_greeting(&arg(256, b"\r\n")), TooLong);
    assert_eq!(reference_greeting(&arg(255, b"")), Truncated);
    assert_eq!(reference_greeting(&arg(256, b"")), TooLong);
    assert_eq!(reference_greeting(&[b"EHLO".as_slice(), &[b' '; 600], b"a\r\n"].concat()), Truncated);
    assert_eq!(reference_hash(b""), hash_helo_arg(&KEY, b""), "siphasher and helo-common agree on the empty name");
}
