//! How full the session slots are, so that timeouts can shrink under load as postscreen's do
//! (`postscreen_command_time_limit = ${stress?10}${stress:300}s`): when idle and slow clients hold
//! most of the slots, each gets less time, and the rest of the senders are still served.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

#[derive(Debug)]
pub struct Load {
    active: AtomicUsize,
    /// Under stress from this many active sessions on.
    stress_from: usize,
    /// The command timeout under stress.
    pub stress_timeout: Duration,
}

/// Counts one session for as long as it lives.
pub struct Active<'a>(&'a Load);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    /// Stress starts when `stress_percent` of `max` sessions are active.
    pub fn new(max: usize, stress_percent: u8, stress_timeout: Duration) -> Self {
        let stress_from = (max * usize::from(stress_percent.min(100))).div_ceil(100).max(1);
        Self { active: AtomicUsize::new(0), stress_from, stress_timeout }
    }

    pub fn enter(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self)
    }

    pub fn stressed(&self) -> bool {
        self.active.load(Ordering::Relaxed) >= self.stress_from
    }

    /// `normal`, or the stress timeout if that is shorter and the slots are running out.
    pub fn timeout(&self, normal: Duration) -> Duration {
        if self.stressed() {
            normal.min(self.stress_timeout)
        } else {
            normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_shrink_once_the_slots_run_low() {
        let load = Load::new(10, 80, Duration::from_secs(10));
        let normal = Duration::from_secs(300);
        let mut held: Vec<_> = (0..7).map(|_| load.enter()).collect();
        assert_eq!(load.timeout(normal), normal);
        held.push(load.enter());
        assert_eq!(load.timeout(normal), Duration::from_secs(10));
        assert_eq!(load.timeout(Duration::from_secs(3)), Duration::from_secs(3));
        held.clear();
        assert!(!load.stressed());
    }
}
