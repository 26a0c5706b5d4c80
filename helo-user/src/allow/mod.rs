//! The operator's run-time allow list (`helo allow add|del|list`): client addresses or networks,
//! and greeting names, that are always accepted and never dropped.
//!
//! Operator entries are kept in the store (see [`crate::store`]: the same crash-safe file, locked
//! by whoever runs, agent or offline command, so the two never write it at once), survive restarts,
//! and are merged, as a union, with the config file's `[classifier.allow]`. The file's entries
//! belong to the file: `allow del` does not take them away (edit the file and reload).
//!
//! - [`crate::listing::allow`]: what an entry is, how an operator's spelling is read, the merge
//!   with the file's (below this module, the store and reloads, which all use them);
//! - this file: every allowed entry with its origin, as `allow list` shows them;
//! - [`live`]: add/del on the running agent (store, classifier and kernel trie together);
//! - [`offline`]: add/del with no agent running (store, and the pinned trie if there is one).

pub mod live;
pub mod offline;

use crate::classify::ClassifierConfig;
pub use crate::listing::allow::{AllowEntry, AllowKind, AllowOrigin, Allowed};

/// Every allowed entry, the file's first, each with its origin. An entry in both is listed twice:
/// deleting the operator's leaves the file's.
pub fn listing(config: &ClassifierConfig, operator: &[AllowEntry]) -> Vec<Allowed> {
    let file = |kind, values: &[String]| -> Vec<Allowed> {
        values
            .iter()
            .map(|v| Allowed {
                kind,
                value: AllowEntry::parse(v, Some(kind), 0).map(|e| e.value).unwrap_or_else(|_| v.clone()),
                origin: AllowOrigin::Config,
                added_unix_s: 0,
            })
            .collect()
    };
    let mut out = file(AllowKind::Net, &config.allow.cidrs);
    out.extend(file(AllowKind::Name, &config.allow.names));
    out.extend(operator.iter().map(|e| Allowed {
        kind: e.kind,
        value: e.value.clone(),
        origin: AllowOrigin::Operator,
        added_unix_s: e.added_unix_s,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::allow::tests::file_and_operator_entries;

    #[test]
    fn the_listing_shows_both_origins_and_the_files_spelling_normalised() {
        let (config, operator) = file_and_operator_entries();
        let shown = listing(&config, &operator);
        assert_eq!(shown.iter().filter(|a| a.origin == AllowOrigin::Config).count(), 2);
        assert_eq!(shown.iter().filter(|a| a.origin == AllowOrigin::Operator).count(), 4);
        assert_eq!(shown[1].value, "box.example", "the file's spelling is shown normalised");
    }
}
