//! The normalised greeting argument, built the way the kernel builds the name it hashes.
//!
//! Normalisation is `helo_common::normalised_arg` (ASCII lower case, one trailing dot removed)
//! and nothing else, so a name the classifier rejects with scope `helo` is byte for byte the name
//! the kernel looks up.

/// Longer than any argument the kernel reads (255 bytes) and than any valid name or literal, so
/// the heap is only touched by hostile input.
const INLINE_CAPACITY: usize = 256;

/// The normalised argument, on the stack unless it is unusually long.
// The size difference between the variants is the point: the common case must not allocate.
#[allow(clippy::large_enum_variant)]
pub enum NormalisedArg {
    Inline { buf: [u8; INLINE_CAPACITY], len: usize },
    Heap(Vec<u8>),
}

impl NormalisedArg {
    pub fn new(raw: &[u8]) -> NormalisedArg {
        if raw.len() <= INLINE_CAPACITY {
            let mut buf = [0u8; INLINE_CAPACITY];
            let mut len = 0;
            for b in helo_common::normalised_arg(raw) {
                buf[len] = b;
                len += 1;
            }
            NormalisedArg::Inline { buf, len }
        } else {
            NormalisedArg::Heap(helo_common::normalised_arg(raw).collect())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            NormalisedArg::Inline { buf, len } => &buf[..*len],
            NormalisedArg::Heap(v) => v,
        }
    }
}

/// A name from config or from the client (rDNS, RCPT domain) in normalised form.
pub fn normalise_owned(name: &str) -> Box<[u8]> {
    helo_common::normalised_arg(name.as_bytes()).collect()
}

/// `a` (already normalised) equals `b` once `b` is normalised. Compares without allocating.
pub fn eq_normalised(a: &[u8], b: &[u8]) -> bool {
    let b = b.strip_suffix(b".").unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

/// `name` (already normalised) is `domain` or a name under it; `domain` is normalised here.
pub fn is_at_or_under(name: &[u8], domain: &[u8]) -> bool {
    let domain = domain.strip_suffix(b".").unwrap_or(domain);
    if domain.is_empty() || name.len() < domain.len() {
        return false;
    }
    let (head, tail) = name.split_at(name.len() - domain.len());
    tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with(b"."))
}
