//! `allow add|del|list` on the running agent: the entry is stored first (durable before the
//! answer), then put in force through [`reload::apply`], the same path a reload takes, so
//! the classifier and the kernel's allow trie change together. If that fails, the store is put
//! back and nothing changed.

use anyhow::{bail, Result};

use super::{listing, AllowEntry, Allowed};
use crate::{
    agent_state::{in_force::Applied, Agent},
    reload,
};

/// What a change did, for the operator.
pub struct Changed {
    pub message: String,
}

pub fn list(agent: &Agent) -> Vec<Allowed> {
    let applied = agent.in_force.lock();
    listing(&applied.config.classifier, &applied.operator)
}

pub fn add(agent: &Agent, entry: AllowEntry) -> Result<Changed> {
    let mut applied = agent.in_force.lock();
    let store = agent.blocklist.store();
    let before = applied.operator.iter().find(|e| e.key() == entry.key()).cloned();
    store.put_allow(&entry)?;
    let mut next = Applied { config: applied.config.clone(), operator: applied.operator.clone() };
    next.operator.retain(|e| e.key() != entry.key());
    next.operator.push(entry.clone());
    match reload::apply(agent, &mut applied, next) {
        Ok(outcome) => {
            let mut message = format!("allowed {} {}", entry.kind.as_str(), entry.value);
            if outcome.unlisted > 0 {
                message.push_str(&format!("; {} taken off the blocklist", outcome.unlisted));
            }
            if entry.in_config(&applied.config.classifier) {
                message.push_str(" (the config file allows it too)");
            }
            tracing::info!(event = "allow_add", kind = entry.kind.as_str(), value = %entry.value, "allow list: {message}");
            Ok(Changed { message })
        }
        Err(e) => {
            let _ = match before {
                Some(old) => store.put_allow(&old),
                None => store.remove_allow(&entry.key()).map(|_| ()),
            };
            Err(e)
        }
    }
}

pub fn del(agent: &Agent, probe: AllowEntry) -> Result<Changed> {
    let mut applied = agent.in_force.lock();
    let in_config = probe.in_config(&applied.config.classifier);
    let Some(held) = applied.operator.iter().find(|e| e.key() == probe.key()).cloned() else {
        if in_config {
            bail!(
                "{} {} is allowed by the config file's [classifier.allow], not by `allow add`: edit the file and reload",
                probe.kind.as_str(),
                probe.value
            );
        }
        bail!("{} {} is not on the allow list", probe.kind.as_str(), probe.value);
    };
    let store = agent.blocklist.store();
    store.remove_allow(&held.key())?;
    let mut next = Applied { config: applied.config.clone(), operator: applied.operator.clone() };
    next.operator.retain(|e| e.key() != held.key());
    if let Err(e) = reload::apply(agent, &mut applied, next) {
        let _ = store.put_allow(&held);
        return Err(e);
    }
    let mut message = format!("removed {} {} from the allow list", held.kind.as_str(), held.value);
    if in_config {
        message.push_str("; the config file's [classifier.allow] still allows it");
    }
    tracing::info!(event = "allow_del", kind = held.kind.as_str(), value = %held.value, "allow list: {message}");
    Ok(Changed { message })
}
