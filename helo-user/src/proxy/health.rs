//! Whether the MTA answers, as a state: its going down and coming back are logged once each, not
//! once per session (every session that finds it down still gets its 421 and a line at info).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The MTA's state as the hand-offs saw it.
#[derive(Debug, Default)]
pub struct BackendHealth {
    down: Mutex<Option<Outage>>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failed: u64,
}

/// What a hand-off's outcome changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The first failure after the MTA answered (or since start).
    WentDown,
    /// The MTA answered again after `failed` hand-offs failed over `lasted`.
    CameBack {
        failed: u64,
        lasted: Duration,
    },
}

impl BackendHealth {
    /// A hand-off could not reach the MTA.
    pub fn failed(&self) -> Change {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match down.as_mut() {
            Some(outage) => {
                outage.failed += 1;
                Change::None
            }
            None => {
                *down = Some(Outage { since: Instant::now(), failed: 1 });
                Change::WentDown
            }
        }
    }

    /// A hand-off reached the MTA (it greeted, or refused with its own words).
    pub fn answered(&self) -> Change {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match down.take() {
            Some(outage) => Change::CameBack { failed: outage.failed, lasted: outage.since.elapsed() },
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_back_are_each_reported_once() {
        let h = BackendHealth::default();
        assert_eq!(h.answered(), Change::None);
        assert_eq!(h.failed(), Change::WentDown);
        assert_eq!(h.failed(), Change::None);
        assert_eq!(h.failed(), Change::None);
        match h.answered() {
            Change::CameBack { failed, .. } => assert_eq!(failed, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.answered(), Change::None);
    }
}
