//! The Public Suffix List the name check uses. The list compiled into the binary goes stale in a
//! long-running agent (a name under a suffix added later reads as bogus), so the system's copy
//! (Debian's `publicsuffix` package, kept current by the distribution) is read when present, and
//! re-read on every reload; a configured file (`public-suffix-list`) wins over both.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use publicsuffix::Psl;

/// Where Debian's `publicsuffix` package installs the list.
pub const SYSTEM_LIST: &str = "/usr/share/publicsuffix/public_suffix_list.dat";

/// How a name ends, by the list: the kind of its public suffix (`None`: no rule but the implicit
/// `*`) and the suffix's length in bytes.
pub type SuffixMatch = (Option<psl::Type>, usize);

#[derive(Default)]
pub enum SuffixList {
    /// The list compiled into the binary (the `psl` crate).
    #[default]
    Builtin,
    /// A list read at start or reload.
    File { path: PathBuf, list: publicsuffix::List },
}

impl SuffixList {
    /// `configured` if given (it must read and parse), else the system's list if it is there
    /// (and parses), else the compiled-in one.
    pub fn load(configured: Option<&Path>) -> Result<Self> {
        if let Some(path) = configured {
            return Self::read(path).with_context(|| format!("public-suffix-list {}", path.display()));
        }
        match Self::read(Path::new(SYSTEM_LIST)) {
            Ok(list) => Ok(list),
            Err(e) if Path::new(SYSTEM_LIST).exists() => {
                tracing::warn!("{SYSTEM_LIST}: {e:#}; using the Public Suffix List compiled in");
                Ok(Self::Builtin)
            }
            Err(_) => Ok(Self::Builtin),
        }
    }

    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let list: publicsuffix::List = text.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(!list.is_empty(), "no rules (between the ===BEGIN ICANN DOMAINS=== and ===END=== lines)");
        Ok(Self::File { path: path.to_owned(), list })
    }

    /// Where the list came from, for the log.
    pub fn source(&self) -> String {
        match self {
            Self::Builtin => "compiled in".to_owned(),
            Self::File { path, .. } => path.display().to_string(),
        }
    }

    /// The public suffix `name` ends in, if any rule matches it.
    pub fn suffix(&self, name: &[u8]) -> Option<SuffixMatch> {
        match self {
            Self::Builtin => psl::suffix(name).map(|s| (s.typ(), s.as_bytes().len())),
            Self::File { list, .. } => list.suffix(name).map(|s| (s.typ().map(from_file_type), s.as_bytes().len())),
        }
    }
}

/// The two crates share `psl-types`, but not necessarily one version of it.
fn from_file_type(t: publicsuffix::Type) -> psl::Type {
    match t {
        publicsuffix::Type::Icann => psl::Type::Icann,
        publicsuffix::Type::Private => psl::Type::Private,
    }
}

/// The source, not the rules (thousands of them).
impl std::fmt::Debug for SuffixList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SuffixList({})", self.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_list_knows_its_own_suffixes_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psl.dat");
        std::fs::write(&path, "// ===BEGIN ICANN DOMAINS===\norg\nhelotest\n// ===END ICANN DOMAINS===\n").unwrap();
        let list = SuffixList::load(Some(&path)).unwrap();
        assert_eq!(list.suffix(b"mx.example.helotest"), Some((Some(psl::Type::Icann), 8)));
        assert_eq!(list.suffix(b"mx.example.com").map(|s| s.0), Some(None));
        assert_eq!(SuffixList::Builtin.suffix(b"mx.example.com").map(|s| s.0), Some(Some(psl::Type::Icann)));
        assert!(SuffixList::load(Some(&dir.path().join("missing"))).is_err());
        std::fs::write(&path, "org\n").unwrap();
        assert!(SuffixList::load(Some(&path)).is_err(), "a file without the ICANN section has no rules");
    }
}
