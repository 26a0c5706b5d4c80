//! The greeting at the start of a client's first TCP payload: `HELO`/`EHLO`, its argument, and the
//! keyed hash of the normalised argument.
//!
//! Grammar, as both sides read it (the kernel on the wire, the agent on a command line):
//! - the verb `HELO` or `EHLO`, in any case;
//! - then one or more spaces or tabs, or directly CR or LF (an empty argument);
//! - after the blanks, the argument: every byte up to the first space, CR or LF.
//!
//! Normalisation is ASCII lower-casing and the removal of one trailing dot, nothing else:
//! `[1.2.3.4]` and `1.2.3.4` stay different names, and so do `Foo..` (→ `foo.`) and `foo`.
//!
//! Anything after the argument's end (pipelined commands, a second line) is never looked at.

use crate::hash::{HashKey, SipHasher24};

/// The longest argument the kernel reads. A longer one is passed (and counted).
pub const MAX_ARG_LEN: usize = 255;

/// How many payload bytes the kernel copies out of the packet and scans. A power of two, so the
/// kernel can mask indices; large enough for the verb, a run of blanks, 255 argument bytes and the
/// terminator.
pub const PAYLOAD_WINDOW: usize = 512;

/// What the scanner found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A complete greeting: the keyed hash of the normalised argument, and the raw argument's
    /// position in the payload.
    Greeting { hash: u64, arg_start: u16, arg_len: u16 },
    /// The payload does not start with a greeting.
    NotGreeting,
    /// The argument is longer than [`MAX_ARG_LEN`].
    ArgTooLong,
    /// The payload (or the scan window) ends before the argument does.
    Truncated,
}

/// Feeds argument bytes through the normaliser into the hash. One trailing dot is held back until
/// the next byte shows it was not the last.
#[derive(Clone, Copy)]
struct ArgHasher {
    hasher: SipHasher24,
    pending_dot: bool,
}

impl ArgHasher {
    #[inline(always)]
    fn new(key: &HashKey) -> Self {
        Self { hasher: SipHasher24::new(key), pending_dot: false }
    }

    #[inline(always)]
    fn push(&mut self, b: u8) {
        if self.pending_dot {
            self.hasher.write_u8(b'.');
        }
        self.pending_dot = b == b'.';
        if !self.pending_dot {
            self.hasher.write_u8(b.to_ascii_lowercase());
        }
    }

    #[inline(always)]
    fn finish(self) -> u64 {
        self.hasher.finish()
    }
}

#[inline(always)]
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline(always)]
fn ends_arg(b: u8) -> bool {
    b == b' ' || b == b'\r' || b == b'\n'
}

const VERB_HELO: [u8; 4] = *b"helo";
const VERB_EHLO: [u8; 4] = *b"ehlo";

// Scanner phases.
const VERB: u8 = 0;
const AFTER_VERB: u8 = 1;
const BLANKS: u8 = 2;
const ARG: u8 = 3;

/// The greeting scanner's state between bytes. The kernel feeds it one byte per `bpf_loop`
/// iteration (so the verifier checks [`GreetingScanner::step`] once, not once per byte); user
/// space feeds it from a slice in [`scan_greeting`]. Both run this same code.
#[derive(Clone, Copy)]
pub struct GreetingScanner {
    arg: ArgHasher,
    phase: u8,
    maybe_helo: bool,
    maybe_ehlo: bool,
    arg_start: u16,
    arg_len: u16,
}

impl GreetingScanner {
    #[inline(always)]
    pub fn new(key: &HashKey) -> Self {
        Self { arg: ArgHasher::new(key), phase: VERB, maybe_helo: true, maybe_ehlo: true, arg_start: 0, arg_len: 0 }
    }

    #[inline(always)]
    fn greeting(&self) -> Scan {
        Scan::Greeting { hash: self.arg.finish(), arg_start: self.arg_start, arg_len: self.arg_len }
    }

    /// Feeds the payload byte `b` at offset `i` (bytes must come in order, from offset 0).
    /// Returns the result as soon as it is decided; `None` asks for the next byte. When the bytes
    /// run out first, the result is [`Scan::Truncated`].
    #[inline(always)]
    pub fn step(&mut self, i: usize, b: u8) -> Option<Scan> {
        match self.phase {
            VERB => {
                let l = b.to_ascii_lowercase();
                self.maybe_helo &= l == VERB_HELO[i & 3];
                self.maybe_ehlo &= l == VERB_EHLO[i & 3];
                if !self.maybe_helo && !self.maybe_ehlo {
                    return Some(Scan::NotGreeting);
                }
                if i == 3 {
                    self.phase = AFTER_VERB;
                }
                None
            }
            AFTER_VERB | BLANKS => {
                if is_blank(b) {
                    self.phase = BLANKS;
                    None
                } else if b == b'\r' || b == b'\n' {
                    self.arg_start = i as u16;
                    Some(self.greeting())
                } else if self.phase == AFTER_VERB {
                    // `HELOX`: some other word.
                    Some(Scan::NotGreeting)
                } else {
                    self.phase = ARG;
                    self.arg_start = i as u16;
                    self.arg.push(b);
                    self.arg_len = 1;
                    None
                }
            }
            _ => {
                if ends_arg(b) {
                    Some(self.greeting())
                } else if self.arg_len as usize == MAX_ARG_LEN {
                    Some(Scan::ArgTooLong)
                } else {
                    self.arg.push(b);
                    self.arg_len += 1;
                    None
                }
            }
        }
    }
}

/// Scans the first `len` bytes of `window` (the start of a TCP payload) for a greeting: the
/// reference for what the XDP program decides on the same bytes.
pub fn scan_greeting(window: &[u8; PAYLOAD_WINDOW], len: usize, key: &HashKey) -> Scan {
    let mut scanner = GreetingScanner::new(key);
    for (i, &b) in window.iter().enumerate().take(len) {
        if let Some(result) = scanner.step(i, b) {
            return result;
        }
    }
    Scan::Truncated
}

/// The keyed hash of an argument as the client sent it, normalised the way the kernel does.
/// `hash_helo_arg(k, b"Mail.Example.COM.")` equals the hash the kernel computes for
/// `EHLO Mail.Example.COM.\r\n`.
pub fn hash_helo_arg(key: &HashKey, raw_arg: &[u8]) -> u64 {
    let mut arg = ArgHasher::new(key);
    for &b in raw_arg {
        arg.push(b);
    }
    arg.finish()
}

/// The keyed hash of a name that is already normalised (as the agent stores them). Equal to
/// `hash_helo_arg` of any raw spelling that normalises to `name`.
pub fn hash_normalised(key: &HashKey, name: &[u8]) -> u64 {
    let mut h = SipHasher24::new(key);
    h.write(name);
    h.finish()
}

/// The normalised form of an argument: ASCII lower case, one trailing dot removed.
pub fn normalised_arg(raw_arg: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let body = match raw_arg.split_last() {
        Some((b'.', rest)) => rest,
        _ => raw_arg,
    };
    body.iter().map(|b| b.to_ascii_lowercase())
}
