//! The agent's periodic blocklist jobs (expiry, reconcile), each on a blocking thread every
//! interval. A job that fails because the store fails keeps failing every tick until the store
//! recovers: that is one episode, logged when it starts and when it ends, as the listings' own
//! commits are (`store: cannot commit listings` / `store: working again`), not once per tick.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::blocklist::Blocklist;

/// Runs `job` on the blocklist every `every` (first after one interval), off the async threads:
/// it walks the store and the kernel maps.
pub fn every(every: Duration, blocklist: Arc<Blocklist>, what: &'static str, job: fn(&Blocklist) -> Result<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut failing = Episode::default();
        loop {
            tick.tick().await;
            let b = Arc::clone(&blocklist);
            match tokio::task::spawn_blocking(move || job(&b)).await {
                Ok(Ok(())) => {
                    if let Some((failures, lasted)) = failing.worked() {
                        tracing::warn!("blocklist {what}: working again after {failures} failed runs over {}s", lasted.as_secs());
                    }
                }
                Ok(Err(e)) => {
                    if failing.failed() {
                        tracing::error!("blocklist {what} failed: {e:#}; not logged again until it works");
                    } else {
                        tracing::debug!("blocklist {what} failed again: {e:#}");
                    }
                }
                Err(e) => tracing::error!("blocklist {what} panicked: {e}"),
            }
        }
    });
}

/// Consecutive failures of one job, from the first to the next success.
#[derive(Default)]
struct Episode {
    since: Option<Instant>,
    failures: u64,
}

impl Episode {
    /// Records a failure; true if it starts an episode (the one to log).
    fn failed(&mut self) -> bool {
        self.failures += 1;
        self.since.get_or_insert_with(Instant::now);
        self.failures == 1
    }

    /// Records a success; the episode it ends, if any: (failures, how long it lasted).
    fn worked(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        Some((std::mem::take(&mut self.failures), since.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::Episode;

    #[test]
    fn an_episode_is_reported_once_at_its_start_and_once_at_its_end() {
        let mut e = Episode::default();
        assert_eq!(e.worked(), None, "a success outside an episode ends nothing");
        assert!(e.failed());
        assert!(!e.failed());
        assert!(!e.failed());
        assert_eq!(e.worked().map(|(n, _)| n), Some(3));
        assert_eq!(e.worked(), None);
        assert!(e.failed(), "a failure after a success starts a new episode");
    }
}
