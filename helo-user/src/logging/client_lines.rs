//! The log-line budget for what clients send. Anyone can connect and send anything: a line that
//! quotes a client's bytes (its greeting, a bad command) or exists only because a client sent junk
//! (an over-long line) must not let it fill the disk, nor choose a level (such lines are `info`
//! at most). At most `log-client-lines-per-minute` such lines a minute; past that, protocol-error
//! lines are held back and decision lines (`reject`) are still written, without the client's bytes.
//! Each minute, and at stop, one line says how many were held back or shortened.

use crate::ratelimit::RateLimit;

/// At most 100 bytes of what a client sent reach a log line.
const QUOTED_MAX: usize = 100;

pub struct ClientLines {
    budget: RateLimit,
}

impl ClientLines {
    pub fn new(per_minute: u64) -> Self {
        Self { budget: RateLimit::new(per_minute, 60) }
    }

    /// Whether one more line about what a client sent may be written.
    pub fn allow(&self) -> bool {
        self.budget.allow()
    }

    /// `bytes` as text for a log line (cut, lossily decoded; the formats escape what is left), or
    /// `None` once the minute's budget is spent.
    pub fn quote(&self, bytes: &[u8]) -> Option<String> {
        self.allow().then(|| String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_MAX)]).into_owned())
    }

    /// Logs how many lines were held back or shortened since the last report, if any.
    pub fn report(&self) {
        let n = self.budget.take_suppressed();
        if n > 0 {
            tracing::info!(
                "{n} log lines about what clients sent were held back or written without the client's bytes \
                 (log-client-lines-per-minute = {})",
                self.budget.burst()
            );
        }
    }
}
