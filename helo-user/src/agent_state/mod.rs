//! The running agent's shared parts: the [`Agent`] its jobs, the admin socket, reloads, the
//! operator's allow commands and the fleet all reach (the configuration, the live classifier, the
//! kernel, the blocklist, the session registry, metrics, and what is in force after the last
//! reload), and the narrower [`SessionContext`] it builds once for the sessions.
//!
//! It sits below everything that uses it and imports none of them: [`crate::agent`] composes the
//! agent (start-up, jobs) from above, over the loaded program; `in_process.rs` (tests only) builds a
//! whole agent over the in-memory kernel, without root, for the unit tests of the parts above.
//!
//! - [`in_force`]: the configuration and the operator's allow entries in force, and how to read
//!   the file again.

pub mod in_force;
#[cfg(test)]
pub(crate) mod in_process;

use std::sync::{Arc, Mutex, RwLock};

use crate::{
    blocklist::Blocklist,
    classify::{Classifier, LiveClassifier},
    config::Config,
    kernel::Kernel,
    listing::allow::AllowEntry,
    load::Load,
    logging::client_lines::ClientLines,
    metrics::Metrics,
    recent::RecentHits,
    registry::Registry,
    session::SessionContext,
};
use in_force::InForce;

pub struct Agent {
    /// The configuration the agent started with. What a reload changes (the classifier, the allow
    /// lists) lives in [`Agent::classifier`]; [`Agent::in_force`] keeps the last applied file.
    pub config: Config,
    pub classifier: Arc<LiveClassifier>,
    pub kernel: Arc<Mutex<dyn Kernel>>,
    pub blocklist: Arc<Blocklist>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub recent: Arc<RecentHits>,
    /// What is in force since the last reload, and how to read the configuration again.
    pub in_force: InForce,
    /// The budget of log lines about what clients sent.
    pub client_lines: Arc<ClientLines>,
    /// `reply-footer`, swapped by a reload.
    pub reply_footer: Arc<RwLock<Option<String>>>,
    /// What the sessions reach: shares the handles above.
    pub sessions: Arc<SessionContext>,
}

impl Agent {
    /// An agent over `kernel` and `blocklist`, with no session yet. `reread` reads the
    /// configuration again for a reload; `operator_allow` are the allow entries kept in the store.
    /// [`crate::agent::start`] builds one over the loaded XDP program; over
    /// [`crate::kernel::InMemoryKernel`] one runs without root.
    pub fn new(
        config: Config,
        classifier: Classifier,
        kernel: Arc<Mutex<dyn Kernel>>,
        blocklist: Blocklist,
        metrics: Metrics,
        reread: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
        operator_allow: Vec<AllowEntry>,
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
            in_force: InForce::new(reread, config.clone(), operator_allow),
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
