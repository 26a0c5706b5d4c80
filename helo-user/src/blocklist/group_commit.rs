//! Group commit for the agent's own listings.
//!
//! A rejected session puts its entry in the kernel at once (so the sender's next attempt is
//! dropped before it has even read the reply) and queues it here. One thread writes whatever has
//! queued meanwhile in a single store transaction: one fsync for a whole burst of rejections,
//! rather than one per session on the session's own thread. Operator changes first wait for the
//! queue to drain ([`GroupCommit::drain`]), so the store sees every change in the order it was made.
//!
//! Nothing is acknowledged before it is on disk: each queued entry comes with a [`Committed`]
//! that resolves after its transaction's fsync, and the session awaits it (without holding a
//! thread) before the sender reads its reply.
//!
//! A transaction that fails (a full disk) is reported to the [`Outcome`] (which withdraws the
//! entries from the kernel: no listing the store does not know) and its entries are kept: every
//! second, and before any later batch, they are written again, so when the filesystem recovers
//! they reach the store (and the kernel again) without a restart.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{listing::Entry, store::Store};

/// At most this many entries per transaction, so one commit stays short under a flood.
const MAX_BATCH: usize = 4096;
/// How often listings that could not be stored are tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A failure episode ends once the store has worked this long with nothing failing: a nearly full
/// disk takes small transactions and fails bigger ones, and that is one episode, logged once.
const QUIET: Duration = Duration::from_secs(10);
/// At most this many failed listings are kept for a retry; later ones only lose their kernel
/// shortcut (their senders were answered all the same).
const MAX_PENDING: usize = 100_000;

/// What the blocklist does when a transaction ends.
pub trait Outcome: Send + 'static {
    /// `entries` are on disk; `published`: queued for the fleet too; `replayed`: they had failed
    /// before and were withdrawn from the kernel.
    fn committed(&self, entries: &[Entry], published: bool, replayed: bool);
    /// `entries` could not be stored; `first`: the first failure of an episode.
    fn failed(&self, entries: &[Entry], error: &anyhow::Error, first: bool);
    /// The episode is over: the store has worked for [`QUIET`] and nothing is pending.
    fn recovered(&self, failures: u64, lasted: Duration);
}

/// Store failures close together, reported as one.
struct Episode {
    since: Instant,
    last_failure: Instant,
    failures: u64,
}

/// Resolves once an entry is on disk: true, or false if its transaction failed (logged).
pub struct Committed(tokio::sync::oneshot::Receiver<bool>);

impl Committed {
    /// Already resolved: nothing was queued (a listing refused before it reached the store).
    pub fn resolved(ok: bool) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(ok);
        Self(rx)
    }

    pub async fn wait(self) -> bool {
        self.0.await.unwrap_or(false)
    }

    /// For synchronous callers: parks the calling thread until the commit thread answers. Unlike
    /// `blocking_recv` it may run on a runtime's thread (a single-threaded session thread has no
    /// `block_in_place`); the thread's other tasks wait meanwhile.
    pub fn wait_blocking(mut self) -> bool {
        use std::{
            future::Future,
            pin::Pin,
            task::{Context, Poll, Wake, Waker},
        };
        struct Unpark(thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut self.0).poll(&mut cx) {
                Poll::Ready(result) => return result.unwrap_or(false),
                // A spurious unpark only polls again.
                Poll::Pending => thread::park(),
            }
        }
    }
}

enum Job {
    Entry(Entry, tokio::sync::oneshot::Sender<bool>),
    /// Acknowledged once everything queued before it is committed.
    Barrier(mpsc::Sender<()>),
}

pub struct GroupCommit {
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    /// Closing the queue ends the thread (after what it holds is committed or, on a failing store,
    /// retried once); joining it closes the store, so that whoever opens the database next (a
    /// restart in the same process, an offline admin command) finds it free.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    /// Starts the commit thread. `publish` says whether entries are also queued for the fleet
    /// (in the same transaction); `outcome` hears how each transaction ended.
    pub fn start(store: Store, publish: Arc<AtomicBool>, outcome: impl Outcome) -> Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("helo-commit".into())
            .spawn(move || run(store, rx, publish, outcome))
            .context("starting the blocklist commit thread")?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }

    pub fn queue(&self, entry: Entry) -> Committed {
        let (done, committed) = tokio::sync::oneshot::channel();
        // The thread only ends when this sender is dropped; if it died, `committed` says false.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Entry(entry, done));
        }
        Committed(committed)
    }

    /// Returns once every entry queued so far is committed (or failed, which was logged).
    pub fn drain(&self) {
        let (done, wait) = mpsc::channel();
        if self.jobs.as_ref().is_some_and(|jobs| jobs.send(Job::Barrier(done)).is_ok()) {
            let _ = wait.recv();
        }
    }
}

fn run(store: Store, jobs: mpsc::Receiver<Job>, publish: Arc<AtomicBool>, outcome: impl Outcome) {
    // Listings whose transaction failed, oldest first, waiting for the store to work again.
    let mut pending: Vec<Entry> = Vec::new();
    let mut episode: Option<Episode> = None;
    loop {
        if let Some(ep) = &episode {
            if pending.is_empty() && ep.last_failure.elapsed() >= QUIET {
                outcome.recovered(ep.failures, ep.last_failure.duration_since(ep.since));
                episode = None;
            }
        }
        let first = if pending.is_empty() && episode.is_none() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match jobs.recv_timeout(RETRY) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut batch: Vec<Entry> = Vec::new();
        let mut waiting = Vec::new();
        // Later listings of the same key replace earlier ones in the same batch.
        let mut slot: HashMap<String, usize> = HashMap::new();
        let mut barriers = Vec::new();
        let mut next = first;
        while let Some(job) = next.take() {
            match job {
                Job::Entry(e, done) => {
                    waiting.push(done);
                    match slot.get(&e.key()) {
                        Some(&i) => batch[i] = e,
                        None => {
                            slot.insert(e.key(), batch.len());
                            batch.push(e);
                        }
                    }
                }
                Job::Barrier(done) => barriers.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        let publishing = publish.load(Ordering::Relaxed);
        // What failed before goes first, so the store sees listings in the order they were made.
        if !pending.is_empty() && store.put_all_publishing(&pending, publishing).is_ok() {
            outcome.committed(&pending, publishing, true);
            pending.clear();
        }
        if !batch.is_empty() {
            let ok = match store.put_all_publishing(&batch, publishing) {
                Ok(()) => {
                    outcome.committed(&batch, publishing, false);
                    true
                }
                Err(e) => {
                    let now = Instant::now();
                    let ep = episode.get_or_insert(Episode { since: now, last_failure: now, failures: 0 });
                    ep.last_failure = now;
                    ep.failures += 1;
                    outcome.failed(&batch, &e, ep.failures == 1);
                    let room = MAX_PENDING.saturating_sub(pending.len());
                    pending.extend(batch.into_iter().take(room));
                    false
                }
            };
            for done in waiting {
                let _ = done.send(ok);
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::entry::tests::entry;

    /// The relay's synchronous judge waits for a commit on a session thread, inside a
    /// single-threaded runtime, where `blocking_recv` would panic.
    #[test]
    fn a_commit_can_be_waited_for_inside_a_single_threaded_runtime() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let committer = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(20));
            tx.send(true)
        });
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(async move { Committed(rx).wait_blocking() }));
        committer.join().unwrap().unwrap();
    }

    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl Outcome for Counting {
        fn committed(&self, _: &[Entry], published: bool, replayed: bool) {
            assert!(published && !replayed);
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        fn failed(&self, _: &[Entry], e: &anyhow::Error, _: bool) {
            panic!("a transaction failed: {e:#}");
        }

        fn recovered(&self, _: u64, _: Duration) {
            panic!("nothing failed");
        }
    }

    #[test]
    fn every_queued_entry_is_committed_once_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commits = std::sync::atomic::AtomicUsize::new(0);
        let commits = Arc::new(commits);
        let counted = Arc::clone(&commits);
        let group = Arc::new(GroupCommit::start(store.clone(), Arc::new(AtomicBool::new(true)), Counting(counted)).unwrap());
        // Four threads queue 100 entries each (and one name twice over), then wait for them.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let group = Arc::clone(&group);
                thread::spawn(move || {
                    let waits: Vec<Committed> = (0..100).map(|i| group.queue(entry(&format!("n{t}-{i}.example")))).collect();
                    let again = group.queue(entry("shared.example"));
                    waits.into_iter().chain([again]).all(Committed::wait_blocking)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap(), "an entry was reported as not committed");
        }
        let names: std::collections::HashSet<String> = store.entries().unwrap().iter().map(|e| e.name().to_owned()).collect();
        assert_eq!(names.len(), 401);
        // Batched: fewer transactions than entries (at least one per waiting thread's burst).
        let n = commits.load(Ordering::SeqCst);
        assert!((1..=404).contains(&n), "{n} commits");
        println!("404 listings in {n} transactions");
        // Each committed listing is queued for the fleet (the duplicate within a batch only once).
        assert!(store.queued_count().unwrap() >= 401);
        // A drain returns after what was queued before it.
        let last = group.queue(entry("last.example"));
        group.drain();
        assert!(store.get("helo/last.example").unwrap().is_some());
        assert!(last.wait_blocking());
    }
}
