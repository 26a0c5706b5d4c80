//! One listed name or address, as it is stored (the store's JSON value), exported (`blocklist
//! export`, one per line), published (the fleet's `helo:entry:` keys) and shown. The field names
//! and words are that format: an entry written by any earlier version must still read.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize, Serializer};

use super::{clock, Kind, Origin, Target};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Entry {
    /// What is listed; stored as the two fields `kind` and `name`.
    pub target: Target,
    /// Why: a rule id (`bogus_helo`, …) or the operator's text (see [`super::reason`]).
    pub reason: String,
    /// The reply a sender reads when the kernel drops it.
    pub reply: String,
    pub added_unix_s: u64,
    /// 0: never expires.
    pub expires_unix_s: u64,
    pub origin: Origin,
}

/// The format itself: what is read, field for field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    kind: Kind,
    /// The escaped greeting name (see [`super::name`]), or the address or network.
    name: String,
    reason: String,
    reply: String,
    added_unix_s: u64,
    expires_unix_s: u64,
    /// Absent in entries written before origins were recorded: those were all an operator's.
    #[serde(default)]
    origin: Origin,
}

impl TryFrom<Stored> for Entry {
    type Error = anyhow::Error;

    fn try_from(s: Stored) -> Result<Self> {
        Ok(Entry {
            target: Target::parse(s.kind, s.name)?,
            reason: s.reason,
            reply: s.reply,
            added_unix_s: s.added_unix_s,
            expires_unix_s: s.expires_unix_s,
            origin: s.origin,
        })
    }
}

/// What is written, in the order earlier versions wrote it.
#[derive(Serialize)]
struct StoredRef<'a> {
    kind: Kind,
    name: &'a str,
    reason: &'a str,
    reply: &'a str,
    added_unix_s: u64,
    expires_unix_s: u64,
    origin: &'a Origin,
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredRef {
            kind: self.kind(),
            name: self.name(),
            reason: &self.reason,
            reply: &self.reply,
            added_unix_s: self.added_unix_s,
            expires_unix_s: self.expires_unix_s,
            origin: &self.origin,
        }
        .serialize(serializer)
    }
}

impl Entry {
    /// An entry added now, expiring after `ttl` (zero: never).
    pub fn new(target: Target, reason: &str, reply: &str, ttl: Duration, origin: Origin) -> Self {
        let now = clock::unix_now();
        Entry {
            target,
            reason: reason.to_owned(),
            reply: reply.to_owned(),
            added_unix_s: now,
            expires_unix_s: clock::expiry_after(now, ttl.as_secs()),
            origin,
        }
    }

    pub fn kind(&self) -> Kind {
        self.target.kind()
    }

    /// As stored: see [`Target::name`].
    pub fn name(&self) -> &str {
        self.target.name()
    }

    /// The store's key: `kind/name`.
    pub fn key(&self) -> String {
        self.target.key()
    }

    pub fn expired(&self, now_unix_s: u64) -> bool {
        self.expires_unix_s != 0 && self.expires_unix_s <= now_unix_s
    }

    /// Checks what a hand-written (imported) entry could get wrong that reading it did not.
    pub fn validate(&self) -> Result<()> {
        self.target.validate()?;
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
            target: Target::greeting(name.into()),
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
        assert_eq!((e.kind(), e.name(), &e.origin), (Kind::Helo, "localhost", &Origin::Operator));
        // An unknown field is still refused (a typo in a hand-written import), and so is a source
        // that is not an address or a network.
        assert!(serde_json::from_str::<Entry>(&oldest.replace("\"reason\"", "\"reasn\"")).is_err());
        assert!(serde_json::from_str::<Entry>(&written[1].replace("198.18.99.0/24", "198.18.99.7/24")).is_err());
    }

    #[test]
    fn an_eight_bit_name_is_stored_as_its_escape() {
        assert!(entry("caf\\xe9.example").validate().is_ok());
        assert!(entry("caf\\xE9.example").validate().is_err(), "not the canonical escape");
        assert!(entry("caf\\x41.example").validate().is_err(), "an escaped printable byte is not canonical");
        assert!(entry("a\\x20b").validate().is_err(), "a space cannot be in a greeting argument");
    }

    #[test]
    fn validation_catches_hand_written_mistakes() {
        assert!(entry("localhost").validate().is_ok());
        assert!(entry("LocalHost").validate().is_err());
        assert!(entry("x y").validate().is_err());
        let mut e = Entry { target: Target::parse(Kind::Source, "198.18.0.1".into()).unwrap(), ..entry("x") };
        assert!(e.validate().is_ok());
        e.reply = "250 ok".into();
        assert!(e.validate().is_err());
    }

    #[test]
    fn a_zero_ttl_never_expires() {
        let forever = Entry::new(Target::greeting("x".into()), "operator", "550 no", Duration::ZERO, Origin::Operator);
        assert_eq!(forever.expires_unix_s, 0);
        assert!(!forever.expired(u64::MAX));
        let hour = Entry::new(Target::greeting("x".into()), "operator", "550 no", Duration::from_secs(3600), Origin::Operator);
        assert_eq!(hour.expires_unix_s, hour.added_unix_s + 3600);
        assert!(!hour.expired(hour.added_unix_s) && hour.expired(hour.expires_unix_s));
    }
}
