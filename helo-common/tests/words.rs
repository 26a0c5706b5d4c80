//! The eight-bytes-per-step fast path against the byte scanner and the `siphasher` crate: where it
//! answers, it must answer exactly what the scanner does.

use helo_common::{
    scan_greeting,
    words::{arg_ends, lower_word, scan_words, starts_like_greeting, Words},
    HashKey, Scan, PAYLOAD_WINDOW,
};
use proptest::prelude::*;
use std::hash::Hasher;

const KEY: HashKey = HashKey { k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908 };

fn scanner(payload: &[u8]) -> Scan {
    let mut window = [0u8; PAYLOAD_WINDOW];
    let n = payload.len().min(PAYLOAD_WINDOW);
    window[..n].copy_from_slice(&payload[..n]);
    scan_greeting(&window, n, &KEY)
}

/// The fast path over a slice, reading words the way the kernel does (never past the window).
fn fast(payload: &[u8]) -> Words {
    if payload.len() < 8 {
        return scan_words(0, payload.len(), &KEY, |_| None);
    }
    let first = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let window = payload.len().min(PAYLOAD_WINDOW);
    scan_words(first, payload.len(), &KEY, |off| {
        assert!(off + 8 <= window, "read past the window: {off}");
        Some(u64::from_le_bytes(payload[off..off + 8].try_into().unwrap()))
    })
}

fn siphash(bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_key(&KEY.to_bytes());
    h.write(bytes);
    h.finish()
}

fn agree(payload: &[u8]) -> bool {
    match fast(payload) {
        Words::Done(scan) => {
            assert_eq!(scan, scanner(payload), "payload {:?}", String::from_utf8_lossy(payload));
            true
        }
        Words::Slow => false,
    }
}

#[test]
fn swar_pieces_match_their_bytewise_meaning() {
    for b in 0..=255u8 {
        for pos in 0..8 {
            let mut bytes = [b'a'; 8];
            bytes[pos] = b;
            let w = u64::from_le_bytes(bytes);
            let lowered = lower_word(w).to_le_bytes();
            assert_eq!(lowered[pos], b.to_ascii_lowercase(), "byte {b:#x}");
            let ends = arg_ends(w);
            let first = (ends.trailing_zeros() / 8) as usize;
            let want = if matches!(b, b' ' | b'\r' | b'\n') { pos } else { 8 };
            assert_eq!(first.min(8), want, "byte {b:#x} at {pos}");
        }
    }
}

#[test]
fn the_prefix_check_never_rejects_a_greeting() {
    for verb in [b"HELO", b"ehlo", b"HeLo", b"eHlO"] {
        for after in [b' ', b'\t', b'\r', b'\n'] {
            let mut p = verb.to_vec();
            p.extend_from_slice(&[after, b'x', b'y', b'z']);
            assert!(starts_like_greeting(u64::from_le_bytes(p[..8].try_into().unwrap())));
        }
    }
    for p in [b"HELLO a\r\n".as_slice(), b"MAIL FROM:<a>", b"EHLOx y\r\n", b" EHLO a\r\n", b"HEL0 aa\r\n"] {
        assert!(!starts_like_greeting(u64::from_le_bytes(p[..8].try_into().unwrap())));
        assert_eq!(scanner(p), Scan::NotGreeting);
    }
}

#[test]
fn common_greetings_take_the_fast_path_and_hash_like_siphasher() {
    for (payload, name) in [
        (b"EHLO mail.example.com\r\n".as_slice(), b"mail.example.com".as_slice()),
        (b"HELO MAIL.Example.COM.\r\n", b"mail.example.com"),
        (b"ehlo ab\n", b"ab"),
        (b"EHLO \r\nQUIT", b""),
        (b"EHLO .\r\n", b""),
        (b"EHLO ..\r\n", b"."),
        (b"EHLO abcdefg.\r\n", b"abcdefg"),
        (b"EHLO abcdefgh.\r\n", b"abcdefgh"),
        (b"EHLO abcdefghijklmno.\r\n", b"abcdefghijklmno"),
        (b"EHLO [1.2.3.4] extra\r\n", b"[1.2.3.4]"),
        (b"HELO\r\nxyz", b""),
    ] {
        match fast(payload) {
            Words::Done(Scan::Greeting { hash, .. }) => assert_eq!(hash, siphash(name), "{payload:?}"),
            other => panic!("{payload:?}: {other:?}"),
        }
        assert!(agree(payload));
    }
}

#[test]
fn other_shapes_go_to_the_slow_path() {
    for p in [b"EHLO\tmail\r\n".as_slice(), b"EHLO  mail\r\n", b"EHLO \tmail\r\n", b"EHLO\r"] {
        assert_eq!(fast(p), Words::Slow, "{p:?}");
    }
}

#[test]
fn every_argument_length_around_the_limits_and_every_dot() {
    for len in 0..300usize {
        for dot in [None, Some(0), Some(len.saturating_sub(1)), Some(len.saturating_sub(2))] {
            let mut name: Vec<u8> = (0..len).map(|i| b"AbCdEfGhIj"[i % 10]).collect();
            if let Some(d) = dot.filter(|&d| d < len) {
                name[d] = b'.';
            }
            for end in [b"\r\n".as_slice(), b"", b" x", b"\n"] {
                let payload = [b"EHLO ".as_slice(), &name, end].concat();
                if payload.len() >= 8 {
                    assert!(agree(&payload), "len {len} end {end:?} went slow");
                }
            }
        }
    }
}

#[test]
fn long_payloads_reach_the_window_edge() {
    for pad in 240..PAYLOAD_WINDOW + 8 {
        let mut p = b"EHLO ".to_vec();
        p.extend(std::iter::repeat_n(b'q', pad));
        agree(&p);
        p.extend_from_slice(b"\r\n");
        agree(&p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn fast_path_agrees_with_the_scanner(
        verb in prop::sample::select(vec!["HELO", "EHLO", "helo", "eHlo", "HELL", "MAIL"]),
        sep in prop::sample::select(vec![" ", "\t", "  ", "\r\n", "\n", "x", ""]),
        arg in prop::collection::vec(prop::sample::select(b"aZ.-[]:09 \t\r\n\0\xc3\xff".to_vec()), 0..300),
    ) {
        let payload = [verb.as_bytes(), sep.as_bytes(), &arg].concat();
        agree(&payload);
    }

    #[test]
    fn fast_path_agrees_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 8..64)) {
        let mut p = b"EHLO ".to_vec();
        p.extend_from_slice(&bytes);
        agree(&p);
        agree(&bytes);
    }
}

/// The kernel stores the state into map memory field by field ([`WordScan::store_to`]) and steps
/// from there: a field it forgot would change the hash.
#[test]
fn a_state_stored_field_by_field_steps_like_the_original() {
    use helo_common::words::{WordScan, MAX_STEPS};
    for payload in
        [b"EHLO mail.example.com\r\n".as_slice(), b"HELO rad.internal.\r\n", &[b"EHLO ".as_slice(), &[b'q'; 300], b"\r\n"].concat()]
    {
        let first = u64::from_le_bytes(payload[..8].try_into().unwrap());
        let word = |off: usize| Some(u64::from_le_bytes(payload[off..off + 8].try_into().unwrap()));
        let begun = WordScan::begin(first, payload.len(), &KEY).unwrap_or_else(|_| panic!("fast path for {payload:?}"));
        // Garbage first, so that a field left unwritten shows.
        let mut slot = std::mem::MaybeUninit::<WordScan>::uninit();
        // SAFETY: the slot is ours, sized and aligned for a WordScan; any bytes are overwritten.
        let mut stored = unsafe {
            std::ptr::write_bytes(slot.as_mut_ptr() as *mut u8, 0xa5, std::mem::size_of::<WordScan>());
            begun.store_to(slot.as_mut_ptr());
            slot.assume_init()
        };
        let result = (0..MAX_STEPS).find_map(|_| stored.step(word)).expect("decided within MAX_STEPS");
        assert_eq!(result, fast(payload), "payload {:?}", String::from_utf8_lossy(payload));
    }
}
