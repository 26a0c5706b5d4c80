//! The allow list's terms: what an operator's allow entry is, as stored, and how `allow list`
//! shows one. Here, below both the store and `allow/` (which reads operators' spellings, merges
//! with the config file and keeps the classifier and the kernel in step), so that the store does
//! not import the feature that uses it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AllowKind {
    /// A greeting name, accepted from any client.
    Name,
    /// A client address or network, whose greetings are all accepted.
    Net,
}

impl AllowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowKind::Name => "name",
            AllowKind::Net => "net",
        }
    }
}

/// One operator allow entry, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub kind: AllowKind,
    /// The normalised greeting name, or the network in canonical CIDR form (`198.18.30.2/32`).
    pub value: String,
    pub added_unix_s: u64,
}

/// Where an allow entry comes from, as `allow list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowOrigin {
    /// The config file's `[classifier.allow]`.
    Config,
    /// `allow add`, kept in the store.
    Operator,
}

impl AllowOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowOrigin::Config => "config",
            AllowOrigin::Operator => "operator",
        }
    }
}

/// An entry as `allow list` shows it: where it comes from, and when an operator added it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    pub kind: AllowKind,
    pub value: String,
    pub origin: AllowOrigin,
    /// 0 for the file's entries.
    pub added_unix_s: u64,
}
