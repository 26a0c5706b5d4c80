//! A log-line budget for lines an attacker can cause (a greeting they chose, a flood of bad
//! requests): at most `burst` lines per `per`, then silence, with the number held back reported on
//! the next line let through. Lock-free; cheap enough to ask on every event.
//!
//! ```
//! use helo_user::ratelimit::RateLimit;
//! static OVERLONG: RateLimit = RateLimit::new(10, 60);
//! if let Some(suppressed) = OVERLONG.allow() {
//!     tracing::info!("overlong greeting from 203.0.113.9 ({suppressed} more not logged)");
//! }
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

    /// `Some(lines held back since the last one let through)` when this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.allow_at(now)
    }

    fn allow_at(&self, now_s: u64) -> Option<u64> {
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (start, count) = (cur >> COUNT_BITS, cur & ((1 << COUNT_BITS) - 1));
            let next = if now_s >= start + self.per_s.max(1) {
                (now_s << COUNT_BITS) | 1
            } else if count < self.burst {
                cur + 1
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match self.window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
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
        assert_eq!(r.allow_at(1000), Some(0));
        assert_eq!(r.allow_at(1001), Some(0));
        assert_eq!(r.allow_at(1002), None);
        assert_eq!(r.allow_at(1009), None);
        assert_eq!(r.allow_at(1010), Some(2));
        assert_eq!(r.allow_at(1011), Some(0));
        assert_eq!(r.allow_at(1011), None);
    }
}
