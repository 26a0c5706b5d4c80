//! Who listed an entry. It decides what happens to the entry later: only the agent's own
//! listings may be dropped when the kernel evicts them, and only this box's entries are published
//! under its fleet name.
//!
//! Stored, exported, published and shown as one lower-case word (`agent`, `operator`, `ladder`)
//! or, for an entry another box published, that box's `--fleet-name`. Any other word reads as a
//! box name, so whatever an older version wrote loads, and is written back, unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Origin {
    /// This agent's classifier, from a greeting it refused.
    Agent,
    /// An operator: `blocklist add` or `import`. Also what an entry stored before origins were
    /// recorded is taken for.
    #[default]
    Operator,
    /// The offender ladder: a source that struck out, in user space or in the kernel.
    Ladder,
    /// Another box of the fleet, by its `--fleet-name`.
    Fleet(String),
}

impl Origin {
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Agent => "agent",
            Origin::Operator => "operator",
            Origin::Ladder => "ladder",
            Origin::Fleet(name) => name,
        }
    }

    /// Whether this agent's classifier made the listing, so that it may be dropped (store too)
    /// when the kernel's LRU map evicts it: everything else is put back.
    pub fn learned_here(&self) -> bool {
        matches!(self, Origin::Agent)
    }

    /// Whether the fleet sees this entry under this box's own name (and this box republishes it
    /// when it joins a new fleet generation). Ladder listings are published as `ladder`.
    pub fn published_as_this_box(&self) -> bool {
        matches!(self, Origin::Agent | Origin::Operator)
    }
}

impl From<String> for Origin {
    fn from(word: String) -> Self {
        match word.as_str() {
            "agent" => Origin::Agent,
            "operator" => Origin::Operator,
            "ladder" => Origin::Ladder,
            _ => Origin::Fleet(word),
        }
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Fleet(name) => name,
            other => other.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Origin {
    /// Padded as asked (`{:<8}`), for tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_it_was_written() {
        for word in ["agent", "operator", "ladder", "edge-a", ""] {
            let origin = Origin::from(word.to_owned());
            assert_eq!(origin.as_str(), word);
            assert_eq!(serde_json::to_string(&origin).unwrap(), format!("{word:?}"));
            assert_eq!(serde_json::from_str::<Origin>(&format!("{word:?}")).unwrap(), origin);
        }
        assert_eq!(Origin::from("edge-a".to_owned()), Origin::Fleet("edge-a".into()));
        assert_eq!(format!("{:<8}|", Origin::Agent), "agent   |");
    }

    #[test]
    fn only_the_agent_learns_and_only_this_box_is_renamed() {
        let all = [Origin::Agent, Origin::Operator, Origin::Ladder, Origin::Fleet("mx2".into())];
        assert_eq!(all.iter().filter(|o| o.learned_here()).count(), 1);
        assert_eq!(all.iter().filter(|o| o.published_as_this_box()).collect::<Vec<_>>(), [&Origin::Agent, &Origin::Operator]);
    }
}
