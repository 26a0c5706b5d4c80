//! The agent: everything a session needs, built once at start and shared (configuration,
//! classifier, kernel handles, the blocklist and the session registry), and how it starts.
//!
//! - [`start`] composes it: ports and paths first, then the kernel, the blocklist, the jobs;
//! - [`Running::serve`] accepts SMTP until the caller's shutdown future completes;
//! - `jobs.rs`: what runs beside the sessions (drop events, metrics, expiry, reconcile, admin);
//! - `start_undo.rs`: a failed start leaves the box as it found it.

#[cfg(test)]
pub(crate) mod in_process;
mod jobs;
mod start;
mod start_undo;

use std::sync::{Arc, Mutex, RwLock};

pub use start::{start, Running};

use crate::{
    blocklist::Blocklist,
    classify::{Classification, Classifier, Greeting},
    config::Config,
    kernel::Kernel,
    load::Load,
    logging::client_lines::ClientLines,
    metrics::Metrics,
    recent::RecentHits,
    registry::Registry,
};

pub struct Agent {
    /// The configuration the agent started with. What a reload changes (the classifier, the allow
    /// lists) lives in [`Agent::classifier`]; [`crate::reload`] keeps the last applied file.
    pub config: Config,
    pub classifier: LiveClassifier,
    pub kernel: Arc<Mutex<dyn Kernel>>,
    pub blocklist: Arc<Blocklist>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub recent: Arc<RecentHits>,
    /// How full the session slots are: timeouts shrink under load.
    pub load: Arc<Load>,
    /// How to re-read the configuration on SIGHUP or `helo reload`.
    pub reloader: crate::reload::Reloader,
    /// The budget of log lines about what clients sent.
    pub client_lines: ClientLines,
    /// `reply-footer`, swapped by a reload.
    pub reply_footer: RwLock<Option<String>>,
    /// Whether the MTA answers: its going down and coming back are logged as state changes.
    pub backend: crate::proxy::health::BackendHealth,
}

impl Agent {
    /// An agent over `kernel` and `blocklist`, with no session yet. `reread` reads the
    /// configuration again for a reload; `operator_allow` are the allow entries kept in the store. [`start`] builds one over the loaded XDP program; over
    /// [`crate::kernel::InMemoryKernel`] one runs without root.
    pub fn new(
        config: Config,
        classifier: Classifier,
        kernel: Arc<Mutex<dyn Kernel>>,
        blocklist: Blocklist,
        metrics: Metrics,
        reread: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
        operator_allow: Vec<crate::allow::AllowEntry>,
    ) -> Self {
        Self {
            load: Arc::new(Load::new(config.max_sessions, config.stress_percent, std::time::Duration::from_secs(config.timeouts.stress_s))),
            client_lines: ClientLines::new(config.log_client_lines_per_minute),
            reply_footer: RwLock::new(config.reply_footer.clone()),
            reloader: crate::reload::Reloader::new(reread, config.clone(), operator_allow),
            config,
            classifier: LiveClassifier::new(classifier),
            kernel,
            blocklist: Arc::new(blocklist),
            registry: Arc::new(Registry::default()),
            metrics: Arc::new(metrics),
            recent: Arc::new(RecentHits::default()),
            backend: Default::default(),
        }
    }

    /// A rejection as the client reads it: `text` with the operator's footer, if any.
    pub fn refusal_text(&self, text: &str) -> String {
        crate::smtp::reply::with_footer(text, self.reply_footer.read().unwrap_or_else(|e| e.into_inner()).as_deref())
    }
}

/// The classifier in force, swapped whole by a reload: a greeting is judged entirely by the old
/// rules or entirely by the new ones.
pub struct LiveClassifier(RwLock<Arc<Classifier>>);

impl LiveClassifier {
    pub fn new(c: Classifier) -> Self {
        Self(RwLock::new(Arc::new(c)))
    }

    /// The classifier in force now, for callers that need more than one call on the same rules.
    pub fn current(&self) -> Arc<Classifier> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// [`Classifier::classify`] on the classifier in force.
    pub fn classify(&self, greeting: &Greeting<'_>) -> Classification {
        self.0.read().unwrap_or_else(|e| e.into_inner()).classify(greeting)
    }

    /// Puts `c` in force; returns the one it replaces.
    pub fn replace(&self, c: Classifier) -> Arc<Classifier> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), Arc::new(c))
    }
}
