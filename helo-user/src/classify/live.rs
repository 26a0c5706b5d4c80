//! The classifier in force while the agent runs: the sessions judge with it, a reload swaps it.

use std::sync::{Arc, RwLock};

use super::{Classification, Classifier, GreetingFacts};

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
    pub fn classify(&self, greeting: &GreetingFacts<'_>) -> Classification {
        self.0.read().unwrap_or_else(|e| e.into_inner()).classify(greeting)
    }

    /// Puts `c` in force; returns the one it replaces.
    pub fn replace(&self, c: Classifier) -> Arc<Classifier> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), Arc::new(c))
    }
}
