//! Is a greeting argument a plausible public host name? Syntax (RFC 1035 2.3.1 and RFC 1123 2.1
//! as RFC 5321 2.3.5 uses them) and a place in the DNS tree (the Public Suffix List).
//!
//! The input is the normalised argument (lower case, no trailing dot); address literals and bare
//! IP addresses are dealt with before this is called.

use super::{suffixes::SuffixList, verdict::BogusReason};

/// RFC 1035 2.3.4: 255 octets on the wire, which is 253 characters of text without the root dot.
pub const MAX_NAME_LEN: usize = 253;
/// RFC 1035 2.3.4.
pub const MAX_LABEL_LEN: usize = 63;

/// Checks a name's syntax and that it sits under a known public suffix without being one.
///
/// `allow_underscore`: underscores are not valid in host names (RFC 952/1123) but common in the
/// wild (Windows machine names); Postfix accepts them by default, and so do we unless configured
/// otherwise.
pub fn check_host_name(name: &[u8], allow_underscore: bool, suffixes: &SuffixList) -> Result<(), BogusReason> {
    if name.is_empty() {
        return Err(BogusReason::Empty);
    }
    if !name.is_ascii() {
        // Host names are ASCII letters, digits and hyphens (RFC 1123 2.1); an IDN is written as
        // its A-labels (`xn--...`, RFC 5890), which pass the checks below unchanged.
        return Err(BogusReason::NonAscii);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BogusReason::NameTooLong);
    }
    let valid_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.' || (allow_underscore && *b == b'_');
    if !name.iter().all(valid_char) {
        return Err(BogusReason::InvalidChar);
    }
    let mut labels = 0usize;
    let mut last_label: &[u8] = &[];
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(BogusReason::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(BogusReason::LabelTooLong);
        }
        if label[0] == b'-' || label[label.len() - 1] == b'-' {
            return Err(BogusReason::HyphenAtLabelEdge);
        }
        labels += 1;
        last_label = label;
    }
    if labels == 1 {
        return Err(BogusReason::SingleLabel);
    }
    // RFC 1123 2.1: a valid host name never has an all-numeric top-level label, which is what
    // tells it apart from a dotted-decimal address.
    if last_label.iter().all(u8::is_ascii_digit) {
        return Err(BogusReason::NumericTld);
    }
    check_public_suffix(name, suffixes)
}

/// The name must end in a suffix that the Public Suffix List knows (so `x.local`, `x.lan`,
/// `rad.internal` fail) and must be more than an ICANN suffix itself (so `co.uk` and `com` fail).
///
/// A name that is exactly a *private* PSL entry (e.g. a cloud provider's per-host wildcard such as
/// `*.compute.amazonaws.com`) is accepted: such entries are real hosts' names under an ICANN
/// suffix, and those hosts do send mail.
fn check_public_suffix(name: &[u8], suffixes: &SuffixList) -> Result<(), BogusReason> {
    let Some((typ, len)) = suffixes.suffix(name) else {
        return Err(BogusReason::NotUnderPublicSuffix);
    };
    match typ {
        None => Err(BogusReason::NotUnderPublicSuffix),
        Some(psl::Type::Icann) if len == name.len() => Err(BogusReason::PublicSuffixOnly),
        Some(_) => Ok(()),
    }
}
