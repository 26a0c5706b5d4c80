//! One JSON request per line, one JSON response per line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    allow::{AllowKind, Allowed},
    blocklist::{ChangeCounts, EntryHits},
    listing::{Entry, Kind},
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    List,
    Add {
        kind: Kind,
        name: String,
        ttl_s: Option<u64>,
        reason: Option<String>,
        reply: Option<String>,
    },
    Del {
        kind: Kind,
        name: String,
        /// Also publish the removal to the fleet.
        #[serde(default)]
        fleet: bool,
    },
    /// One entry, if listed (in the store and, on a live agent, in the kernel).
    Get {
        kind: Kind,
        name: String,
    },
    Flush,
    Import {
        entries: Vec<Entry>,
    },
    Stats,
    /// Re-read the configuration, as SIGHUP does.
    Reload,
    /// The allow list: the config file's entries and the operator's.
    AllowList,
    /// Allow a client address or network, or a greeting name (`kind` guessed when absent).
    AllowAdd {
        value: String,
        kind: Option<AllowKind>,
    },
    /// Remove an operator allow entry (the file's cannot be removed this way).
    AllowDel {
        value: String,
        kind: Option<AllowKind>,
    },
}

/// A request line longer than this is refused and its connection closed, so a runaway or hostile
/// client cannot grow the agent's memory.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// An import (one request carrying every entry, so that it applies all or nothing) may be longer:
/// about 100,000 entries fit.
pub const MAX_IMPORT_BYTES: usize = 16 << 20;

/// How an import request line begins (serde writes the tag first).
pub const IMPORT_PREFIX: &[u8] = br#"{"op":"import""#;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub kernel: BTreeMap<String, u64>,
    pub sessions_total: u64,
    pub sessions_active: u64,
    pub helo_entries: u64,
    pub source_entries: u64,
    pub changes: ChangeCounts,
    pub xdp_mode: String,
    pub program_id: u32,
    /// Agent verdicts by rule id (`accept` included).
    pub verdicts: BTreeMap<String, u64>,
    pub hand_offs: u64,
    pub backend_errors: u64,
    /// Top entries by kernel drop reports in the last minute: (kind, name, reports). The kernel
    /// reports a dropped connection once (a listed source's SYNs at most once a second).
    pub top: Vec<(String, String, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<EntryHits>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// The allow list (`allow list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Allowed>>,
    /// What was done, for a person (reload, allow add/del).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Something the operator should know about how the request was carried out (an offline
    /// change that could not reach the kernel, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Response {
    pub fn error(e: anyhow::Error) -> Self {
        Self { ok: false, error: Some(format!("{e:#}")), ..Default::default() }
    }
}
