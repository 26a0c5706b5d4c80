//! Key layout and message format in Redis.
//!
//! - `helo:stream`: a stream of changes, one message per block or removal, with the fields
//!   `v` (format version, 1), `op` (`add`|`del`), `kind`, `name`, `reason`, `reply`,
//!   `added_unix_s`, `expires_unix_s`, `origin` (the box's `--fleet-name`). Trimmed to about
//!   [`STREAM_MAXLEN`] messages.
//! - `helo:entry:<kind>:<name>`: the current state of each entry (its JSON), expiring with the
//!   entry (`EXAT`), so a new or returning box loads the current list from these keys and then
//!   follows the stream from the ID it read before loading.

use anyhow::{bail, Context, Result};

use crate::listing::{Entry, Kind, Origin, Target};

pub const STREAM: &str = "helo:stream";
pub const ENTRY_PREFIX: &str = "helo:entry:";
pub const STREAM_MAXLEN: usize = 1_000_000;

/// Larger fields are refused: nothing legitimate is this long, and a bad actor with write access
/// to the stream should not be able to make boxes store megabytes.
const MAX_FIELD: usize = 512;

pub fn entry_key(kind: Kind, name: &str) -> String {
    format!("{ENTRY_PREFIX}{}:{name}", kind.as_str())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Add(Entry),
    Del { kind: Kind, name: String, origin: Origin },
}

impl Message {
    pub fn origin(&self) -> &Origin {
        match self {
            Message::Add(e) => &e.origin,
            Message::Del { origin, .. } => origin,
        }
    }

    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Message::Add(e) => vec![
                ("v", "1".into()),
                ("op", "add".into()),
                ("kind", e.kind().as_str().into()),
                ("name", e.name().into()),
                ("reason", e.reason.clone()),
                ("reply", e.reply.clone()),
                ("added_unix_s", e.added_unix_s.to_string()),
                ("expires_unix_s", e.expires_unix_s.to_string()),
                ("origin", e.origin.as_str().into()),
            ],
            Message::Del { kind, name, origin } => vec![
                ("v", "1".into()),
                ("op", "del".into()),
                ("kind", kind.as_str().into()),
                ("name", name.clone()),
                ("origin", origin.as_str().into()),
            ],
        }
    }

    /// Parses and checks a stream message. Anything odd is an error: the caller skips and counts it.
    pub fn from_fields(fields: &[(String, Vec<u8>)]) -> Result<Self> {
        let get = |k: &str| -> Result<String> {
            let v = fields.iter().find(|(f, _)| f == k).map(|(_, v)| v).with_context(|| format!("no field {k}"))?;
            if v.len() > MAX_FIELD {
                bail!("field {k} is {} bytes", v.len());
            }
            String::from_utf8(v.clone()).with_context(|| format!("field {k} is not UTF-8"))
        };
        if get("v")? != "1" {
            bail!("unknown format version");
        }
        let kind = match get("kind")?.as_str() {
            "helo" => Kind::Helo,
            "source" => Kind::Source,
            other => bail!("unknown kind {other:?}"),
        };
        let name = get("name")?;
        let origin = get("origin")?;
        if origin.is_empty() || origin.len() > 64 {
            bail!("bad origin");
        }
        let origin = Origin::from(origin);
        match get("op")?.as_str() {
            "add" => {
                let entry = Entry {
                    target: Target::parse(kind, name)?,
                    reason: get("reason")?,
                    reply: get("reply")?,
                    added_unix_s: get("added_unix_s")?.parse().context("added_unix_s")?,
                    expires_unix_s: get("expires_unix_s")?.parse().context("expires_unix_s")?,
                    origin,
                };
                entry.validate()?;
                Ok(Message::Add(entry))
            }
            "del" => Ok(Message::Del { kind, name, origin }),
            other => bail!("unknown op {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(m: &Message) -> Vec<(String, Vec<u8>)> {
        m.to_fields().into_iter().map(|(k, v)| (k.to_string(), v.into_bytes())).collect()
    }

    #[test]
    fn round_trip_and_refusals() {
        let e = Entry {
            target: Target::greeting("localhost".into()),
            reason: "bogus_helo".into(),
            reply: "550 5.7.1 Bogus HELO".into(),
            added_unix_s: 1,
            expires_unix_s: 0,
            origin: Origin::Fleet("edge-a".into()),
        };
        let m = Message::Add(e.clone());
        assert_eq!(Message::from_fields(&fields(&m)).unwrap(), m);
        let mut f = fields(&m);
        f.retain(|(k, _)| k != "reply");
        assert!(Message::from_fields(&f).is_err());
        let mut f = fields(&m);
        f.iter_mut().find(|(k, _)| k == "name").unwrap().1 = vec![b'a'; 4000];
        assert!(Message::from_fields(&f).is_err());
        let mut f = fields(&m);
        f.iter_mut().find(|(k, _)| k == "kind").unwrap().1 = b"hash".to_vec();
        assert!(Message::from_fields(&f).is_err());
    }
}
