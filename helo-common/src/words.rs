//! The greeting read eight bytes at a time: the XDP program's fast path.
//!
//! Most greetings are `HELO name\r\n` or `EHLO name\r\n`: the verb, one space, the argument. For
//! those, [`scan_words`] reads the payload as little-endian 64-bit words straight from the packet,
//! finds the argument's end with a SWAR search for space/CR/LF, lower-cases eight bytes in a few
//! instructions and feeds whole words to SipHash-2-4. Anything else (a tab or several blanks after
//! the verb, a payload shorter than 8 bytes) is left to the byte-at-a-time [`GreetingScanner`]:
//! [`Words::Slow`]. Where the fast path answers, its answer is exactly the scanner's: the tests
//! check that on every input they generate, and the kernel test on real frames.
//!
//! [`starts_like_greeting`] is the check the kernel makes before any flow lookup: a payload whose
//! first bytes already rule out a greeting is passed at once.
//!
//! [`GreetingScanner`]: crate::GreetingScanner

use crate::{
    greeting::{MAX_ARG_LEN, PAYLOAD_WINDOW},
    hash::{HashKey, SipHasher24},
    Scan,
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `w` that is zero (exact for the lowest such byte, which is all
/// that is used here: a borrow can only mark bytes above a zero byte).
#[inline(always)]
const fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// The high bit of the bytes that end an argument: space, CR, LF (lowest one exact).
#[inline(always)]
pub const fn arg_ends(w: u64) -> u64 {
    zero_bytes(w ^ (ONES * b' ' as u64)) | zero_bytes(w ^ (ONES * b'\r' as u64)) | zero_bytes(w ^ (ONES * b'\n' as u64))
}

/// ASCII lower-casing of eight bytes at once (`u8::to_ascii_lowercase` on each; bytes of 0x80
/// and above are left alone).
#[inline(always)]
pub const fn lower_word(w: u64) -> u64 {
    let low7 = w & !HIGHS;
    // High bit set where the byte (its low 7 bits) is >= 'A', and where it is > 'Z'. No carry
    // crosses a byte: 0x7f + 0x3f < 0x100.
    let ge_a = low7.wrapping_add(ONES * (0x80 - b'A' as u64));
    let gt_z = low7.wrapping_add(ONES * (0x80 - b'Z' as u64 - 1));
    let upper = ge_a & !gt_z & !w & HIGHS;
    w | (upper >> 2)
}

const HELO: u32 = u32::from_le_bytes(*b"helo");
const EHLO: u32 = u32::from_le_bytes(*b"ehlo");

/// Whether a payload whose first eight bytes are `first` (little-endian) may start with a
/// greeting: `HELO`/`EHLO` in any case, then a blank, CR or LF. `false` means the scanner would
/// say [`Scan::NotGreeting`] on the same bytes.
#[inline(always)]
pub const fn starts_like_greeting(first: u64) -> bool {
    // `b | 0x20` equals a lower-case letter only for that letter and its upper case.
    let verb = (first as u32) | 0x2020_2020;
    (verb == HELO || verb == EHLO) && matches!((first >> 32) as u8, b' ' | b'\t' | b'\r' | b'\n')
}

/// The fast path's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Words {
    /// What [`crate::scan_greeting`] says on the same payload.
    Done(Scan),
    /// Not a shape the fast path reads (or a word could not be read): ask the scanner.
    Slow,
}

/// Offset of the argument on the fast path: the verb and one space.
pub const FAST_ARG_START: usize = 5;

/// Most steps [`WordScan::step`] can take: one per argument word, and one to conclude.
pub const MAX_STEPS: usize = (MAX_ARG_LEN + 1) / 8 + 1;

/// The fast path's state between words. The kernel keeps it in map memory and takes one step per
/// `bpf_loop` iteration (so the verifier checks one step, not every word); [`scan_words`] loops
/// over the same steps in user space.
#[derive(Clone, Copy)]
pub struct WordScan {
    hasher: SipHasher24,
    /// The last word read, lower-cased, not yet hashed (its last byte may be a dot to drop).
    held: u64,
    has_held: u32,
    /// Argument bytes read so far.
    start: u32,
    /// Argument bytes worth reading: those in the window, and at most one more than the longest
    /// argument (to tell "too long" from "ends right there").
    limit: u32,
    /// Payload bytes in the window.
    window: u32,
}

impl WordScan {
    /// The first decisions, from the payload's first eight bytes `first` and its length: either
    /// the answer, or the state to step through the argument with.
    #[inline(always)]
    pub fn begin(first: u64, len: usize, key: &HashKey) -> Result<Self, Words> {
        if len < 8 {
            return Err(Words::Slow);
        }
        if !starts_like_greeting(first) {
            return Err(Words::Done(Scan::NotGreeting));
        }
        let after_verb = (first >> 32) as u8;
        if after_verb == b'\r' || after_verb == b'\n' {
            let hash = SipHasher24::new(key).finish_words(0, 0);
            return Err(Words::Done(Scan::Greeting { hash, arg_start: 4, arg_len: 0 }));
        }
        let arg_first = (first >> 40) as u8;
        if after_verb != b' ' || arg_first == b' ' || arg_first == b'\t' {
            return Err(Words::Slow);
        }
        let window = if len < PAYLOAD_WINDOW { len } else { PAYLOAD_WINDOW };
        let available = window - FAST_ARG_START;
        let limit = if available < MAX_ARG_LEN + 1 { available } else { MAX_ARG_LEN + 1 };
        Ok(Self { hasher: SipHasher24::new(key), held: 0, has_held: 0, start: 0, limit: limit as u32, window: window as u32 })
    }

    /// Writes this state to `dst` field by field (see [`SipHasher24::store_to`] for why: the
    /// kernel keeps it in map memory, where a plain store of its zero fields became a byte-loop
    /// `memset`).
    ///
    /// # Safety
    /// `dst` is valid for writes of a `WordScan` and aligned for it.
    #[inline(always)]
    pub unsafe fn store_to(self, dst: *mut Self) {
        use core::ptr::{addr_of_mut, write_volatile};
        // SAFETY: the caller's contract; each field pointer is derived from `dst` without
        // creating a reference.
        unsafe {
            self.hasher.store_to(addr_of_mut!((*dst).hasher));
            write_volatile(addr_of_mut!((*dst).held), self.held);
            write_volatile(addr_of_mut!((*dst).has_held), self.has_held);
            write_volatile(addr_of_mut!((*dst).start), self.start);
            write_volatile(addr_of_mut!((*dst).limit), self.limit);
            write_volatile(addr_of_mut!((*dst).window), self.window);
        }
    }

    /// Reads the next argument word through `word(off)` (the eight payload bytes at `off`,
    /// little-endian; `off + 8 <= window` always holds). `None` asks for another step.
    #[inline(always)]
    pub fn step(&mut self, word: impl FnOnce(usize) -> Option<u64>) -> Option<Words> {
        let (start, limit) = (self.start as usize, self.limit as usize);
        if start >= limit {
            return Some(Words::Done(if limit > MAX_ARG_LEN { Scan::ArgTooLong } else { Scan::Truncated }));
        }
        let remaining = limit - start;
        let w = if remaining >= 8 {
            word(FAST_ARG_START + start)
        } else {
            // The last few bytes of the window: read the window's last word and shift them down
            // (the bytes above become zero, which the search below never matches).
            word(self.window as usize - 8).map(|w| w >> (8 * (8 - remaining)))
        };
        let Some(w) = w else {
            return Some(Words::Slow);
        };
        let ends = arg_ends(w);
        let lowest = ends & ends.wrapping_neg();
        let end_at = byte_index(lowest);
        if lowest == 0 || end_at >= remaining {
            if self.has_held != 0 {
                self.hasher.write_word(self.held);
            }
            self.held = lower_word(w);
            self.has_held = 1;
            self.start += 8;
            return None;
        }
        let arg_len = start + end_at;
        let held = if self.has_held != 0 { Some(self.held) } else { None };
        let hash = finish(self.hasher, held, lower_word(w), end_at, arg_len);
        Some(Words::Done(Scan::Greeting { hash, arg_start: FAST_ARG_START as u16, arg_len: arg_len as u16 }))
    }
}

/// The greeting at the start of a payload of `len` bytes whose first eight bytes are `first`,
/// with `word(off)` giving the eight payload bytes at `off` (little-endian; `off + 8 <=
/// min(len, PAYLOAD_WINDOW)` always holds), or `None` if it cannot: the kernel's steps, in a loop.
///
/// The argument is hashed as the scanner hashes it (lower-cased, one trailing dot dropped), one
/// word behind the read: the word before the argument's end is held back until the end shows
/// whether its last byte is that dot.
pub fn scan_words(first: u64, len: usize, key: &HashKey, mut word: impl FnMut(usize) -> Option<u64>) -> Words {
    let mut scan = match WordScan::begin(first, len, key) {
        Ok(scan) => scan,
        Err(words) => return words,
    };
    for _ in 0..MAX_STEPS {
        if let Some(words) = scan.step(&mut word) {
            return words;
        }
    }
    unreachable!("the argument is decided within MAX_STEPS words")
}

/// The hash of an argument of `arg_len` bytes whose last word `last` (lower-cased) holds its
/// final `end_at` bytes (0..8), with the word before it `held` if there is one.
#[inline(always)]
fn finish(mut hasher: SipHasher24, held: Option<u64>, last: u64, end_at: usize, arg_len: usize) -> u64 {
    let (tail, len) = if end_at == 0 {
        match held {
            // The argument ended with the held word: its last byte may be the dot to drop.
            Some(h) if h >> 56 == b'.' as u64 => (h & (u64::MAX >> 8), arg_len - 1),
            Some(h) => {
                hasher.write_word(h);
                (0, arg_len)
            }
            None => (0, 0),
        }
    } else {
        if let Some(h) = held {
            hasher.write_word(h);
        }
        let bytes = last & low_bytes(end_at);
        if bytes >> (8 * (end_at - 1)) == b'.' as u64 {
            (bytes & low_bytes(end_at - 1), arg_len - 1)
        } else {
            (bytes, arg_len)
        }
    };
    hasher.finish_words(tail, len as u32)
}

/// Which byte `lowest` marks, when it is the high bit of one byte (`0x80 << 8k`, as `arg_ends`
/// leaves it once isolated): `k`, in 0..8. One multiply moves the constant's byte `7 - k`, which
/// is `k`, to the top. `trailing_zeros() / 8` says the same, but BPF has no instruction for it,
/// and LLVM turns it into a multiply and a table lookup in read-only map memory.
#[inline(always)]
const fn byte_index(lowest: u64) -> usize {
    ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// A mask of the `n` low bytes (`n` in 0..8).
#[inline(always)]
const fn low_bytes(n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        u64::MAX >> (8 * (8 - n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_index_is_the_marked_byte() {
        for k in 0..8 {
            let lowest = 0x80u64 << (8 * k);
            assert_eq!(byte_index(lowest), k);
            assert_eq!(byte_index(lowest), (lowest.trailing_zeros() / 8) as usize);
        }
    }
}
