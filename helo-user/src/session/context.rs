//! What a session reaches, and nothing more: built once by the agent ([`crate::agent_state::Agent::new`])
//! and shared by every session, so a session cannot wander into the agent's reload, admin, fleet
//! or top machinery. The MTA's health and the session-slot load are sessions' own and live only
//! here.

use std::sync::{Arc, Mutex, RwLock};

use crate::{
    blocklist::Blocklist, classify::LiveClassifier, config::Config, kernel::Kernel, load::Load, logging::client_lines::ClientLines,
    metrics::Metrics, proxy::health::BackendHealth, registry::Registry,
};

pub struct SessionContext {
    /// The configuration the agent started with: bounds, timeouts, mode, the MTA.
    pub config: Config,
    /// The classifier in force (a reload swaps it).
    pub classifier: Arc<LiveClassifier>,
    /// To release a flow whose greeting the kernel dropped.
    pub kernel: Arc<Mutex<dyn Kernel>>,
    pub blocklist: Arc<Blocklist>,
    /// Where the kernel's drop events find the session to end.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// How full the session slots are: timeouts shrink under load.
    pub load: Load,
    /// The budget of log lines about what clients sent (the agent reports what it dropped).
    pub client_lines: Arc<ClientLines>,
    /// `reply-footer`, swapped by a reload.
    pub reply_footer: Arc<RwLock<Option<String>>>,
    /// Whether the MTA answers: its going down and coming back are logged as state changes.
    pub backend: BackendHealth,
}

impl SessionContext {
    /// A rejection as the client reads it: `text` with the operator's footer, if any.
    pub fn refusal_text(&self, text: &str) -> String {
        crate::smtp::reply::with_footer(text, self.reply_footer.read().unwrap_or_else(|e| e.into_inner()).as_deref())
    }
}
