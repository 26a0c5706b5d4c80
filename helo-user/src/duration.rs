//! Durations as operators write them, the same way in the config file and on the command line:
//! `90s`, `15m`, `7d`, `1h 30m` (humantime's syntax, as `blocklist add --ttl` takes), or a plain
//! number in the key's own unit (seconds for the `-s` keys, milliseconds for `-ms`), which is what
//! older config files hold and still works.

use std::{fmt, time::Duration};

use serde::de::{self, Deserializer, Visitor};

/// Reads `text` as a duration in whole units of `unit` (a plain number counts as that many units).
fn parse_in(text: &str, unit: Duration, unit_name: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration (like 90s, 15m, 7d) or a number of {unit_name}: {e}"))?;
    if d.as_nanos() % unit.as_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of {unit_name}"));
    }
    u64::try_from(d.as_nanos() / unit.as_nanos()).map_err(|_| format!("{text:?} is too long"))
}

/// `7d` → 604800; `300` → 300.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    parse_in(text, Duration::from_secs(1), "seconds")
}

/// `2s` → 2000; `500` → 500.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    parse_in(text, Duration::from_millis(1), "milliseconds")
}

struct InUnit(fn(&str) -> Result<u64, String>);

impl Visitor<'_> for InUnit {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration (\"90s\", \"15m\", \"7d\") or a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative: a duration cannot be")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        (self.0)(v).map_err(E::custom)
    }
}

/// For `#[serde(deserialize_with)]` on a `-s` key.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(InUnit(parse_seconds))
}

/// For `#[serde(deserialize_with)]` on a `-ms` key.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(InUnit(parse_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_lines_form_and_plain_numbers_both_read() {
        assert_eq!(parse_seconds("7d"), Ok(604_800));
        assert_eq!(parse_seconds("15m"), Ok(900));
        assert_eq!(parse_seconds("90s"), Ok(90));
        assert_eq!(parse_seconds("1h 30m"), Ok(5400));
        assert_eq!(parse_seconds("604800"), Ok(604_800));
        assert_eq!(parse_seconds("0"), Ok(0));
        assert!(parse_seconds("1500ms").unwrap_err().contains("whole number of seconds"));
        assert!(parse_seconds("soon").unwrap_err().contains("not a duration"));
        assert_eq!(parse_millis("2s"), Ok(2000));
        assert_eq!(parse_millis("250"), Ok(250));
    }

    #[test]
    fn a_file_may_write_either() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "seconds")]
            a: u64,
            #[serde(deserialize_with = "seconds")]
            b: u64,
            #[serde(deserialize_with = "millis")]
            c: u64,
        }
        let t: T = toml::from_str("a = \"7d\"\nb = 300\nc = \"1s\"\n").unwrap();
        assert_eq!((t.a, t.b, t.c), (604_800, 300, 1000));
        let j: T = serde_json::from_str(r#"{"a": 60, "b": "1m", "c": 5}"#).unwrap();
        assert_eq!((j.a, j.b, j.c), (60, 60, 5));
        assert!(toml::from_str::<T>("a = -1\nb = 1\nc = 1\n").is_err());
        let err = toml::from_str::<T>("a = \"soon\"\nb = 1\nc = 1\n").err().unwrap().to_string();
        assert!(err.contains("not a duration"), "{err}");
    }
}
