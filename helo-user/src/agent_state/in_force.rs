//! What is in force on the running agent: the configuration last read (the file, with the command
//! line's flags over it) and the operator's allow entries, held under one lock so that reloads and
//! `allow add|del` happen one at a time; and how to read the configuration again. The reload
//! itself ([`crate::reload`]) and the allow commands ([`crate::allow::live`]) change it.

use std::sync::Mutex;

use anyhow::Result;

use crate::{
    config::Config,
    listing::allow::{merged, AllowEntry},
};

type Source = Box<dyn Fn() -> Result<Config> + Send + Sync>;

/// What is in force ([`Applied`]), and how to read the configuration again.
pub struct InForce {
    source: Source,
    applied: Mutex<Applied>,
}

/// What is in force: the configuration last read, and the operator's allow entries.
#[derive(Clone)]
pub struct Applied {
    pub config: Config,
    pub operator: Vec<AllowEntry>,
}

impl Applied {
    /// The classifier configuration with the operator's allow entries merged in.
    pub fn classifier_config(&self) -> crate::classify::ClassifierConfig {
        merged(&self.config.classifier, &self.operator)
    }
}

impl InForce {
    /// `source` reads the configuration again (the file with the command line's flags over it);
    /// `config` and `operator` are what the agent started with.
    pub fn new(source: impl Fn() -> Result<Config> + Send + Sync + 'static, config: Config, operator: Vec<AllowEntry>) -> Self {
        Self { source: Box::new(source), applied: Mutex::new(Applied { config, operator }) }
    }

    /// The configuration read again: the file, with the command line's flags over it.
    pub fn reread(&self) -> Result<Config> {
        (self.source)()
    }

    /// The state in force, locked: changes to the allow list hold it so they and reloads happen one
    /// at a time.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}
