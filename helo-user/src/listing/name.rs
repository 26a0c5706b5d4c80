//! Greeting names as text, without losing a byte.
//!
//! The kernel hashes the greeting's argument byte for byte, and a sender may put any byte but a
//! space, CR or LF there (Latin-1, UTF-8, control bytes). The store, the admin protocol and the
//! screen carry text, so a name is kept in an escaped form: printable ASCII stands for itself,
//! a backslash is `\\`, and every other byte is `\xNN` (two lower-case hex digits). The escape is
//! lossless and canonical (one spelling per byte string), so the stored key of a name is unique
//! and the hash of [`bytes()`] is exactly the kernel's. Operators write the same escape in
//! `blocklist del/get/add`.

use anyhow::{bail, Context, Result};
use helo_common::normalised_arg;

/// The escaped text of a byte string.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The bytes an escaped text stands for. A backslash must start `\\` or `\xNN`.
pub fn unescape(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', h, l, tail @ ..] => {
                let hex = std::str::from_utf8(&[*h, *l]).ok().and_then(|s| u8::from_str_radix(s, 16).ok());
                out.push(hex.with_context(|| format!("{text:?}: \\x must be followed by two hex digits"))?);
                rest = tail;
            }
            _ => bail!("{text:?}: a backslash starts \\\\ (a backslash) or \\xNN (a byte)"),
        }
    }
    Ok(out)
}

/// The bytes a stored name stands for. A name stored before the escape existed and holding a
/// stray backslash is taken literally.
pub fn bytes(name: &str) -> Vec<u8> {
    unescape(name).unwrap_or_else(|_| name.as_bytes().to_vec())
}

/// The stored form of a greeting argument as the client sent it: normalised as the kernel does
/// (ASCII lower case, one trailing dot dropped), then escaped.
pub fn from_wire(raw_arg: &[u8]) -> String {
    escape(&normalised_arg(raw_arg).collect::<Vec<_>>())
}

/// The stored form of a name an operator typed (any case, a trailing dot, the escape).
pub fn from_operator(text: &str) -> Result<String> {
    Ok(from_wire(&unescape(text)?))
}

/// Whether `name` is the canonical escape of its bytes.
pub fn is_canonical(name: &str) -> bool {
    unescape(name).is_ok_and(|b| escape(&b) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_survives_the_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert!(is_canonical(&escape(&all)));
        assert_eq!(escape(b"mail.example.com"), "mail.example.com");
        assert_eq!(escape(b"caf\xe9.example"), "caf\\xe9.example");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
    }

    #[test]
    fn operators_spell_names_as_the_kernel_hashes_them() {
        assert_eq!(from_operator("Caf\\xE9.Example.").unwrap(), "caf\\xe9.example");
        assert_eq!(from_wire(b"CAF\xe9.example."), "caf\\xe9.example");
        // Only ASCII is lower-cased, as in the kernel: 0xC9 (Latin-1 'É') stays.
        assert_eq!(from_wire(b"\xc9"), "\\xc9");
        assert!(from_operator("bad\\q").is_err());
        assert!(from_operator("bad\\x4").is_err());
        assert!(!is_canonical("\\x41"), "an escaped printable byte is not the canonical spelling");
        assert_eq!(bytes("legacy\\name"), b"legacy\\name");
    }
}
