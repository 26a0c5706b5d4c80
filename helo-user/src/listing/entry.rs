//! One listed name or address, as it is stored (the store's JSON value), exported (`blocklist
//! export`, one per line), published (the fleet's `helo:entry:` keys) and shown. The field names
//! and words are that format: an entry written by any earlier version must still read.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{clock, name, source_target, Origin};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A greeting name, dropped for every sender.
    Helo,
    /// A client address.
    Source,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Helo => "helo",
            Kind::Source => "source",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    /// The normalised greeting name (escaped, byte for byte: see [`name`]), or the address or
    /// network.
    pub name: String,
    /// Why: a rule id (`bogus_helo`, …) or the operator's text (see [`super::reason`]).
    pub reason: String,
    /// The reply a sender reads when the kernel drops it.
    pub reply: String,
    pub added_unix_s: u64,
    /// 0: never expires.
    pub expires_unix_s: u64,
    /// Absent in entries written before origins were recorded: those were all an operator's.
    #[serde(default)]
    pub origin: Origin,
}

impl Entry {
    /// An entry added now, expiring after `ttl` (zero: never).
    pub fn new(kind: Kind, name: String, reason: &str, reply: &str, ttl: Duration, origin: Origin) -> Self {
        let now = clock::unix_now();
        Entry {
            kind,
            name,
            reason: reason.to_owned(),
            reply: reply.to_owned(),
            added_unix_s: now,
            expires_unix_s: clock::expiry_after(now, ttl.as_secs()),
            origin,
        }
    }

    /// The store's key: `kind/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    pub fn expired(&self, now_unix_s: u64) -> bool {
        self.expires_unix_s != 0 && self.expires_unix_s <= now_unix_s
    }

    /// Checks what a hand-written (imported) entry could get wrong.
    pub fn validate(&self) -> Result<()> {
        match self.kind {
            Kind::Helo => {
                // The name is the escaped form of the bytes the kernel hashes.
                let bytes = name::unescape(&self.name)?;
                if !name::is_canonical(&self.name) {
                    bail!("name {:?} is not in its canonical escaped form ({:?})", self.name, name::escape(&bytes));
                }
                if bytes.iter().any(|b| b.is_ascii_uppercase()) {
                    bail!("name {:?} is not normalised (ASCII lower case)", self.name);
                }
                if bytes.len() > helo_common::greeting::MAX_ARG_LEN || bytes.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n')) {
                    bail!("name {:?} cannot be a greeting argument", self.name);
                }
            }
            Kind::Source => {
                source_target(&self.name)?;
            }
        }
        if !self.reply.starts_with(['4', '5']) || self.reply.len() < 4 || self.reply.contains(['\r', '\n']) {
            bail!("reply {:?} is not a one-line 4xx/5xx SMTP reply", self.reply);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(name: &str) -> Entry {
        Entry {
            kind: Kind::Helo,
            name: name.into(),
            reason: "bogus_helo".into(),
            reply: "550 5.7.1 Bogus HELO".into(),
            added_unix_s: 1,
            expires_unix_s: 0,
            origin: Origin::Agent,
        }
    }

    /// Entries as earlier versions wrote them to the store, to `blocklist export` files and to the
    /// fleet's entry keys, byte for byte: they read, and write back unchanged.
    #[test]
    fn entries_written_by_earlier_versions_still_read() {
        let written = [
            r#"{"kind":"helo","name":"rad.internal","reason":"bogus_helo","reply":"550 5.7.1 Bogus HELO","added_unix_s":1764460000,"expires_unix_s":1765064800,"origin":"agent"}"#,
            r#"{"kind":"source","name":"198.18.99.0/24","reason":"operator","reply":"554 5.7.1 Service unavailable","added_unix_s":1,"expires_unix_s":0,"origin":"operator"}"#,
            r#"{"kind":"source","name":"198.18.7.9","reason":"offender_ladder","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":2,"origin":"ladder"}"#,
            r#"{"kind":"helo","name":"caf\\xe9.example","reason":"bogus_helo","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0,"origin":"edge-a"}"#,
        ];
        let origins = [Origin::Agent, Origin::Operator, Origin::Ladder, Origin::Fleet("edge-a".into())];
        for (json, origin) in written.iter().zip(origins) {
            let e: Entry = serde_json::from_str(json).unwrap();
            assert_eq!(e.origin, origin, "{json}");
            assert!(e.validate().is_ok(), "{json}");
            assert_eq!(serde_json::to_string(&e).unwrap(), *json);
        }
        // Before origins were recorded, every entry was an operator's.
        let oldest =
            r#"{"kind":"helo","name":"localhost","reason":"operator","reply":"550 5.7.1 Bogus HELO","added_unix_s":1,"expires_unix_s":0}"#;
        let e: Entry = serde_json::from_str(oldest).unwrap();
        assert_eq!((e.kind, e.name.as_str(), e.origin), (Kind::Helo, "localhost", Origin::Operator));
        // An unknown field is still refused (a typo in a hand-written import).
        assert!(serde_json::from_str::<Entry>(&oldest.replace("\"reason\"", "\"reasn\"")).is_err());
    }

    #[test]
    fn an_eight_bit_name_is_stored_as_its_escape() {
        let mut e = entry("caf\\xe9.example");
        assert!(e.validate().is_ok());
        e.name = "caf\\xE9.example".into();
        assert!(e.validate().is_err(), "not the canonical escape");
        e.name = "caf\\x41.example".into();
        assert!(e.validate().is_err(), "an escaped printable byte is not canonical");
        e.name = "a\\x20b".into();
        assert!(e.validate().is_err(), "a space cannot be in a greeting argument");
    }

    #[test]
    fn validation_catches_hand_written_mistakes() {
        assert!(entry("localhost").validate().is_ok());
        assert!(entry("LocalHost").validate().is_err());
        assert!(entry("x y").validate().is_err());
        let mut e = entry("x");
        e.kind = Kind::Source;
        assert!(e.validate().is_err());
        e.name = "198.18.0.1".into();
        assert!(e.validate().is_ok());
        e.reply = "250 ok".into();
        assert!(e.validate().is_err());
    }

    #[test]
    fn a_zero_ttl_never_expires() {
        let forever = Entry::new(Kind::Helo, "x".into(), "operator", "550 no", Duration::ZERO, Origin::Operator);
        assert_eq!(forever.expires_unix_s, 0);
        assert!(!forever.expired(u64::MAX));
        let hour = Entry::new(Kind::Helo, "x".into(), "operator", "550 no", Duration::from_secs(3600), Origin::Operator);
        assert_eq!(hour.expires_unix_s, hour.added_unix_s + 3600);
        assert!(!hour.expired(hour.added_unix_s) && hour.expired(hour.expires_unix_s));
    }
}
