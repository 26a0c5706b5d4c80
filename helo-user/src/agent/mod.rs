//! The agent: what its jobs, the admin socket, reloads and the fleet share (configuration,
//! classifier, kernel handles, the blocklist, the session registry), the narrower
//! [`SessionContext`] every session gets, both built once at start, and how it starts.
//!
//! - [`start`] composes it: ports and paths first, then the kernel, the blocklist, the jobs;
//! - [`Running::serve`] accepts SMTP until the caller's shutdown future completes;
//! - `jobs.rs`: what runs beside the sessions (drop events, metrics, expiry, reconcile, admin);
//! - `drops.rs`: what a drop the kernel reports means to the agent (answer and end the session,
//!   count it for `top`, record a ladder listing);
//! - `start_undo.rs`: a failed start leaves the box as it found it.

mod drops;
#[cfg(test)]
pub(crate) mod in_process;
mod jobs;
mod start;
mod start_undo;

use std::sync::{Arc, Mutex, RwLock};

pub use start::{start, Running};

use crate::{
    blocklist::Blocklist,
    classify::{Classifier, LiveClassifier},
    config::Config,
    kernel::Kernel,
    load::Load,
    logging::client_lines::ClientLines,
    metrics::Metrics,
    recent::RecentHits,
    registry::Registry,
    session::SessionContext,
};

pub struct Agent {
    /// The configuration the agent started with. What a reload changes (the classifier, the allow
    /// lists) lives in [`Agent::classifier`]; [`crate::reload`] keeps the last applied file.
    pub config: Config,
    pub classifier: Arc<LiveClassifier>,
    pub kernel: Arc<Mutex<dyn Kernel>>,
    pub blocklist: Arc<Blocklist>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub recent: Arc<RecentHits>,
    /// How to re-read the configuration on SIGHUP or `helo reload`.
    pub reloader: crate::reload::Reloader,
    /// The budget of log lines about what clients sent.
    pub client_lines: Arc<ClientLines>,
    /// `reply-footer`, swapped by a reload.
    pub reply_footer: Arc<RwLock<Option<String>>>,
    /// What the sessions reach: shares the handles above.
    pub sessions: Arc<SessionContext>,
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
        let classifier = Arc::new(LiveClassifier::new(classifier));
        let blocklist = Arc::new(blocklist);
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(metrics);
        let client_lines = Arc::new(ClientLines::new(config.log_client_lines_per_minute));
        let reply_footer = Arc::new(RwLock::new(config.reply_footer.clone()));
        let sessions = Arc::new(SessionContext {
            config: config.clone(),
            classifier: Arc::clone(&classifier),
            kernel: Arc::clone(&kernel),
            blocklist: Arc::clone(&blocklist),
            registry: Arc::clone(&registry),
            metrics: Arc::clone(&metrics),
            load: Load::new(config.max_sessions, config.stress_percent, std::time::Duration::from_secs(config.timeouts.stress_s)),
            client_lines: Arc::clone(&client_lines),
            reply_footer: Arc::clone(&reply_footer),
            backend: Default::default(),
        });
        Self {
            reloader: crate::reload::Reloader::new(reread, config.clone(), operator_allow),
            config,
            classifier,
            kernel,
            blocklist,
            registry,
            metrics,
            recent: Arc::new(RecentHits::default()),
            client_lines,
            reply_footer,
            sessions,
        }
    }
}
