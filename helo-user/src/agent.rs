//! Everything a session needs, built once at start and shared: configuration, classifier,
//! kernel handles, the blocklist and the session registry.

use std::sync::{Arc, Mutex};

use crate::{
    blocklist::Blocklist, classify::Classifier, config::Config, kernel::KernelFilter, load::Load, metrics::Metrics, recent::RecentHits,
    registry::Registry,
};

pub struct Agent {
    pub config: Config,
    pub classifier: Classifier,
    pub kernel: Arc<Mutex<KernelFilter>>,
    pub blocklist: Arc<Blocklist>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub recent: Arc<RecentHits>,
    /// How full the session slots are: timeouts shrink under load.
    pub load: Arc<Load>,
}
