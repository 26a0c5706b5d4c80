//! A log-line budget for lines an attacker can cause (a greeting they chose, a flood of bad
//! requests): at most `burst` lines per `per`, then silence; the lines held back are counted for a
//! summary. Lock-free; cheap enough to ask on every event.
//!
//! ```
//! use helo_user::ratelimit::RateLimit;
//! static OVERLONG: RateLimit = RateLimit::new(10, 60);
//! if OVERLONG.allow() {
//!     tracing::info!("overlong greeting from 203.0.113.9");
//! }
//! let held_back = OVERLONG.take_suppressed();
//! ```

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

pub struct RateLimit {
    burst: u64,
    per_s: u64,
    /// The window's start (Unix seconds) in the high 40 bits, lines let through in the low 24.
    window: AtomicU64,
    suppressed: AtomicU64,
}

const COUNT_BITS: u32 = 24;

impl RateLimit {
    /// At most `burst` lines every `per_s` seconds.
    pub const fn new(burst: u64, per_s: u64) -> Self {
        Self { burst, per_s, window: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether this line may be logged; a line refused is counted.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.allow_at(now)
    }

    /// The lines held back since the last call.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }

    /// At most this many lines a window.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn allow_at(&self, now_s: u64) -> bool {
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (start, count) = (cur >> COUNT_BITS, cur & ((1 << COUNT_BITS) - 1));
            let next = if now_s >= start + self.per_s.max(1) {
                (now_s << COUNT_BITS) | 1
            } else if count < self.burst {
                cur + 1
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn lets_a_burst_through_per_window_and_counts_the_rest() {
        let r = RateLimit::new(2, 10);
        assert!(r.allow_at(1000));
        assert!(r.allow_at(1001));
        assert!(!r.allow_at(1002));
        assert!(!r.allow_at(1009));
        assert!(r.allow_at(1010));
        assert_eq!(r.take_suppressed(), 2);
        assert!(r.allow_at(1011));
        assert!(!r.allow_at(1011));
        assert_eq!(r.take_suppressed(), 1);
        assert_eq!(r.take_suppressed(), 0);
    }
}
