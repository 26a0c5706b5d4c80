//! The scanner, the normaliser and the hash, checked from the outside.

use helo_common::{greeting::MAX_ARG_LEN, hash_helo_arg, normalised_arg, scan_greeting, HashKey, Scan, SipHasher24, PAYLOAD_WINDOW};
use proptest::prelude::*;
use std::hash::Hasher;

const KEY: HashKey = HashKey { k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908 };

fn scan(payload: &[u8]) -> Scan {
    let mut window = [0u8; PAYLOAD_WINDOW];
    let n = payload.len().min(PAYLOAD_WINDOW);
    window[..n].copy_from_slice(&payload[..n]);
    scan_greeting(&window, n, &KEY)
}

fn reference_siphash(key: &HashKey, bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_key(&key.to_bytes());
    h.write(bytes);
    h.finish()
}

fn greeting_hash(payload: &[u8]) -> u64 {
    match scan(payload) {
        Scan::Greeting { hash, .. } => hash,
        other => panic!("{payload:?}: expected a greeting, got {other:?}"),
    }
}

#[test]
fn siphash_matches_the_paper_vectors() {
    // The SipHash paper's test vectors use key 00..0f and messages 00, 00 01, 00 01 02, ...
    // First and 64th outputs (from the reference implementation's vectors.h).
    let mut h = SipHasher24::new(&KEY);
    assert_eq!(h.finish(), 0x726f_db47_dd0e_0e31);
    h = SipHasher24::new(&KEY);
    let msg: Vec<u8> = (0u8..63).collect();
    h.write(&msg);
    assert_eq!(h.finish(), 0x958a_324c_eb06_4572);
}

#[test]
fn siphash_agrees_with_the_siphasher_crate_for_every_length() {
    let keys = [KEY, HashKey { k0: 0, k1: 0 }, HashKey { k0: u64::MAX, k1: 0x1234_5678_9abc_def0 }];
    for key in keys {
        for len in 0..=300usize {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut ours = SipHasher24::new(&key);
            ours.write(&msg);
            assert_eq!(ours.finish(), reference_siphash(&key, &msg), "len {len}");
        }
    }
}

#[test]
fn key_bytes_round_trip() {
    let b: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
    assert_eq!(HashKey::from_bytes(b).to_bytes(), b);
}

#[test]
fn normaliser_lowercases_and_strips_one_trailing_dot() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"Mail.Example.COM", b"mail.example.com"),
        (b"mail.example.com.", b"mail.example.com"),
        (b"mail.example.com..", b"mail.example.com."),
        (b"[1.2.3.4]", b"[1.2.3.4]"),
        (b"1.2.3.4", b"1.2.3.4"),
        (b"[IPv6:2001:DB8::1]", b"[ipv6:2001:db8::1]"),
        (b".", b""),
        (b"", b""),
        (b"\xC3\x89T\xC3\x89", b"\xc3\x89t\xc3\x89"),
    ];
    for (raw, want) in cases {
        let got: Vec<u8> = normalised_arg(raw).collect();
        assert_eq!(&got, want, "{raw:?}");
        // The hash is the hash of the normalised form, however the scanner or the agent got there.
        assert_eq!(hash_helo_arg(&KEY, raw), reference_siphash(&KEY, want), "{raw:?}");
        assert_eq!(helo_common::hash_normalised(&KEY, want), hash_helo_arg(&KEY, raw), "{raw:?}");
    }
}

#[test]
fn brackets_change_the_name() {
    assert_ne!(hash_helo_arg(&KEY, b"[1.2.3.4]"), hash_helo_arg(&KEY, b"1.2.3.4"));
}

#[test]
fn the_key_changes_every_hash() {
    let other = HashKey { k0: KEY.k0 ^ 1, k1: KEY.k1 };
    assert_ne!(hash_helo_arg(&KEY, b"example.com"), hash_helo_arg(&other, b"example.com"));
}

#[test]
fn scanner_finds_greetings() {
    let h = hash_helo_arg(&KEY, b"mail.example.com");
    for p in [
        &b"HELO mail.example.com\r\n"[..],
        b"EHLO mail.example.com\r\n",
        b"helo mail.example.com\r\n",
        b"eHlO MAIL.example.com.\r\n",
        b"EHLO \t  mail.example.com\r\n",
        b"EHLO\tmail.example.com\n",
        b"EHLO mail.example.com extra words\r\n",
        b"EHLO mail.example.com\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
        b"EHLO mail.example.com\rjunk",
    ] {
        assert_eq!(greeting_hash(p), h, "{p:?}");
    }
}

#[test]
fn scanner_reports_the_raw_argument_position() {
    assert_eq!(scan(b"EHLO  Abc.\r\n"), Scan::Greeting { hash: hash_helo_arg(&KEY, b"abc"), arg_start: 6, arg_len: 4 });
}

#[test]
fn empty_arguments_are_greetings() {
    let empty = hash_helo_arg(&KEY, b"");
    for p in [&b"HELO\r\n"[..], b"HELO \r\n", b"EHLO\t\t\n", b"EHLO \r"] {
        assert_eq!(greeting_hash(p), empty, "{p:?}");
    }
}

#[test]
fn tab_inside_the_argument_is_part_of_it() {
    // Only space, CR and LF end the argument.
    assert_eq!(greeting_hash(b"EHLO a\tb\r\n"), hash_helo_arg(&KEY, b"a\tb"));
}

#[test]
fn other_payloads_are_not_greetings() {
    for p in [
        &b"MAIL FROM:<a@b>\r\n"[..],
        b"HELLO x\r\n",
        b"HELOx\r\n",
        b"EHL0 x\r\n",
        b" HELO x\r\n",
        b"\0\0\0\0",
        b"HXLO",
        b"\x16\x03\x01\x02\x00", // a TLS ClientHello
    ] {
        assert_eq!(scan(p), Scan::NotGreeting, "{p:?}");
    }
}

#[test]
fn payloads_that_end_early_are_truncated() {
    for p in [&b""[..], b"H", b"EH", b"HEL", b"EHLO", b"HELO ", b"HELO \t", b"HELO mail.example.com"] {
        assert_eq!(scan(p), Scan::Truncated, "{p:?}");
    }
}

#[test]
fn argument_length_limit() {
    for len in [0usize, 1, 254, 255] {
        let arg = vec![b'a'; len];
        let p = [b"EHLO ".as_slice(), &arg, b"\r\n"].concat();
        assert_eq!(greeting_hash(&p), hash_helo_arg(&KEY, &arg), "len {len}");
    }
    let p = [b"EHLO ".as_slice(), &[b'a'; MAX_ARG_LEN + 1], b"\r\n"].concat();
    assert_eq!(scan(&p), Scan::ArgTooLong);
    // 256 bytes without a terminator is already too long.
    let p = [b"EHLO ".as_slice(), &[b'a'; MAX_ARG_LEN + 1]].concat();
    assert_eq!(scan(&p), Scan::ArgTooLong);
}

#[test]
fn blanks_that_fill_the_window_are_truncated() {
    let p = [b"EHLO".as_slice(), &[b' '; PAYLOAD_WINDOW], b"x\r\n"].concat();
    assert_eq!(scan(&p), Scan::Truncated);
}

#[test]
fn nul_and_non_ascii_bytes_are_argument_bytes() {
    assert_eq!(greeting_hash(b"EHLO a\0b\r\n"), hash_helo_arg(&KEY, b"a\0b"));
    assert_eq!(greeting_hash(b"EHLO \xff\xfe\r\n"), hash_helo_arg(&KEY, b"\xff\xfe"));
}

proptest! {
    #[test]
    fn case_and_one_trailing_dot_do_not_change_the_hash(
        name in "[a-zA-Z0-9._-]{0,64}",
        verb in prop::sample::select(vec!["HELO", "EHLO", "helo", "ehlo", "HeLo"]),
    ) {
        let lower = name.to_ascii_lowercase();
        let upper = name.to_ascii_uppercase();
        let h = hash_helo_arg(&KEY, lower.as_bytes());
        prop_assert_eq!(hash_helo_arg(&KEY, upper.as_bytes()), h);
        if !name.ends_with('.') {
            prop_assert_eq!(hash_helo_arg(&KEY, format!("{name}.").as_bytes()), h);
        }
        if !name.is_empty() {
            let p = format!("{verb} {upper}\r\n");
            prop_assert_eq!(greeting_hash(p.as_bytes()), h);
        }
    }

    #[test]
    fn scanner_never_panics_and_agrees_with_the_slice_hash(payload in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Scan::Greeting { hash, arg_start, arg_len } = scan(&payload) {
            let raw = &payload[arg_start as usize..arg_start as usize + arg_len as usize];
            prop_assert_eq!(hash, hash_helo_arg(&KEY, raw));
        }
    }
}

mod flow_state {
    use helo_common::maps::{flow_state::*, FlowState};

    #[test]
    fn a_syn_replaces_only_a_stale_flow() {
        let t = 1_000_000;
        let fresh = FlowState::new(5001, t);
        assert!(!fresh.syn_replaces(5001, t + 100), "a retransmitted SYN changes nothing");
        assert!(!fresh.syn_replaces(9001, t + SYN_STALE_TICKS - 1), "a handshake in progress is not re-keyed");
        assert!(fresh.syn_replaces(9001, t + SYN_STALE_TICKS), "a handshake that never finished goes stale");
        let established = FlowState { state: fresh.state | ESTABLISHED, ..fresh };
        assert!(!established.syn_replaces(9001, t + SYN_STALE_TICKS + 60), "an established flow is not re-keyed");
        assert!(established.syn_replaces(9001, t + ESTABLISHED_STALE_TICKS), "a port reused long after");
        // The flags do not disturb the time, and the time wraps in its 30 bits.
        let both = FlowState { state: fresh.state | ESTABLISHED | REPORTED, ..fresh };
        assert!(both.established() && both.reported());
        assert_eq!(both.age(t + 7), 7);
        let near_wrap = FlowState::new(1, (u32::MAX >> TIME_SHIFT) - 1);
        assert_eq!(near_wrap.age(3), 5);
        // An entry user space wrote without a time (tests) is as old as the boot clock.
        assert!(FlowState { first_payload_seq: 1, state: 0 }.syn_replaces(2, t));
    }
}
