//! Session ids: one per accepted connection, in every log line about it and sent to the MTA in
//! the PROXY v2 header (`PP2_TYPE_UNIQUE_ID`), so the agent's log and the MTA's can be joined.
//!
//! A random base chosen at start plus a counter: unique within a run, and unlikely to repeat
//! across restarts, without a syscall per session.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

static NEXT: OnceLock<AtomicU64> = OnceLock::new();

impl SessionId {
    pub fn next() -> Self {
        let next = NEXT.get_or_init(|| AtomicU64::new(rand::random::<u64>() & !0xffff_ffff));
        Self(next.fetch_add(1, Ordering::Relaxed))
    }

    /// 16 hex digits, as logged and as sent to the MTA.
    pub fn text(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_sixteen_hex_digits() {
        let (a, b) = (SessionId::next(), SessionId::next());
        assert_ne!(a, b);
        assert_eq!(a.text().len(), 16);
        assert!(a.text().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
