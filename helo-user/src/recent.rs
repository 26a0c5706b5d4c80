//! Recent kernel hits per listed entry, from the drop events: what `helo top` shows as the
//! top blocked names and sources. Counts are kept per second for the last minute, so the top list
//! follows what is being dropped now rather than what was dropped most since the start.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

const WINDOW_S: u64 = 60;

/// `(kind, name)` of an entry, as the blocklist shows it.
pub type EntryId = (&'static str, String);

#[derive(Default)]
pub struct RecentHits {
    /// One map per second, newest last: second → (entry → hits).
    seconds: Mutex<VecDeque<(u64, HashMap<EntryId, u64>)>>,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RecentHits {
    pub fn record(&self, id: EntryId) {
        let now = now_s();
        let mut q = self.seconds.lock().unwrap();
        if q.back().map(|(s, _)| *s) != Some(now) {
            q.push_back((now, HashMap::new()));
        }
        while q.front().is_some_and(|(s, _)| *s + WINDOW_S <= now) {
            q.pop_front();
        }
        *q.back_mut().unwrap().1.entry(id).or_default() += 1;
    }

    /// The `n` entries with the most drop reports in the last minute.
    pub fn top(&self, n: usize) -> Vec<(String, String, u64)> {
        let now = now_s();
        let q = self.seconds.lock().unwrap();
        let mut sum: HashMap<&EntryId, u64> = HashMap::new();
        for (s, m) in q.iter().filter(|(s, _)| *s + WINDOW_S > now) {
            let _ = s;
            for (id, hits) in m {
                *sum.entry(id).or_default() += hits;
            }
        }
        let mut v: Vec<_> = sum.into_iter().map(|((k, name), h)| (k.to_string(), name.clone(), h)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_hits() {
        let r = RecentHits::default();
        for _ in 0..3 {
            r.record(("helo", "a".into()));
        }
        r.record(("source", "198.18.0.1".into()));
        let top = r.top(10);
        assert_eq!(top[0], ("helo".into(), "a".into(), 3));
        assert_eq!(top.len(), 2);
        assert_eq!(r.top(1).len(), 1);
    }
}
