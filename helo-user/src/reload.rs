//! SIGHUP and `helo reload`: re-read the configuration and apply, all at once, what can change
//! while the agent runs, or keep the old configuration and say why.
//!
//! Applied at run time: the classifier (rules, reply texts, server IPs and domains, relay networks),
//! the reply footer, the Public Suffix List (read again, whether its path changed or not), the
//! default times to live of new listings (`helo-ttl-s`, `source-ttl-s`) and the allow lists, including the kernel's allow trie (networks added first, then the ones
//! dropped removed; on a kernel error the additions are undone and the old rules stay), and
//! greeting names newly allowed are taken off the blocklist so the kernel stops dropping them.
//! The operator's allow entries (`helo allow add`) are merged with the file's each time; their own
//! changes go through [`apply`] too, without reading the file again.
//! Everything else (interface, listeners, backend, mode, the ladder, paths, limits, fleet) is read at
//! start: a change is logged as waiting for a restart, and the rest is applied.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result};
use ipnet::IpNet;

use crate::{
    agent_state::{in_force::Applied, Agent},
    config::Config,
    listing::allow::newly_allowed_names,
};

/// What a reload did, for the log and the admin command's answer.
#[derive(Debug, Default)]
pub struct Outcome {
    pub allow_added: usize,
    pub allow_removed: usize,
    pub unlisted: usize,
    /// Where the Public Suffix List now in force came from.
    pub suffixes: String,
    /// Keys that changed but are only read at start.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "configuration reloaded: classifier replaced (public suffix list: {}); kernel allow list +{} -{} networks; {} newly \
             allowed names unlisted",
            self.suffixes, self.allow_added, self.allow_removed, self.unlisted
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; changed but applied only at the next restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

fn networks(c: &crate::classify::Classifier) -> BTreeSet<IpNet> {
    c.exempt_networks().collect()
}

/// Top-level keys (as in the file) whose values differ, except the ones a reload applies.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    const LIVE: [&str; 7] = ["classifier", "server-ip", "domain", "reply-footer", "public-suffix-list", "helo-ttl-s", "source-ttl-s"];
    let table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => Default::default(),
    };
    let (a, b) = (table(old), table(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| !LIVE.contains(&k.as_str()) && a.get(*k) != b.get(*k)).cloned().collect()
}

/// Re-reads the configuration and applies it; on any error nothing changes.
pub fn reload(agent: &Agent) -> Result<Outcome> {
    let mut applied = agent.in_force.lock();
    let mut new = agent.in_force.reread().context("reading the configuration")?;
    let needs_restart = restart_only_changes(&applied.config, &new);
    // The banner keeps the hostname the agent started with; so must the classifier.
    new.hostname = applied.config.hostname.clone();
    let operator = applied.operator.clone();
    let mut outcome = apply(agent, &mut applied, Applied { config: new, operator })?;
    outcome.needs_restart = needs_restart;
    Ok(outcome)
}

/// Puts `next` in force: classifier, kernel allow trie, reply footer, default TTLs, and newly
/// allowed names off the blocklist. On an error nothing changes and `applied` stays.
pub fn apply(agent: &Agent, applied: &mut Applied, next: Applied) -> Result<Outcome> {
    let rules = next.classifier_config();
    let classifier = Config { classifier: rules.clone(), ..next.config.clone() }.classifier()?;
    let suffixes = classifier.suffixes().source();
    let (old_nets, new_nets) = (networks(&agent.classifier.current()), networks(&classifier));
    let add: Vec<IpNet> = new_nets.difference(&old_nets).copied().collect();
    let del: Vec<IpNet> = old_nets.difference(&new_nets).copied().collect();
    {
        let mut kernel = agent.kernel.lock().unwrap_or_else(|e| e.into_inner());
        for (i, net) in add.iter().enumerate() {
            if let Err(e) = kernel.allow(net.addr(), net.prefix_len()) {
                for undo in &add[..i] {
                    let _ = kernel.disallow(undo.addr(), undo.prefix_len());
                }
                return Err(e).context(format!("adding {net} to the kernel's allow list"));
            }
        }
        for net in &del {
            // Only a network the trie no longer holds can fail here: nothing to undo.
            if let Err(e) = kernel.disallow(net.addr(), net.prefix_len()) {
                tracing::warn!("reload: removing {net} from the kernel's allow list: {e:#}");
            }
        }
    }
    let newly_allowed = newly_allowed_names(&applied.classifier_config(), &rules);
    agent.classifier.replace(classifier);
    *agent.reply_footer.write().unwrap_or_else(|e| e.into_inner()) = next.config.reply_footer.clone();
    agent.blocklist.set_default_ttls(Duration::from_secs(next.config.helo_ttl_s), Duration::from_secs(next.config.source_ttl_s));
    let unlisted = if newly_allowed.is_empty() {
        0
    } else {
        match agent.blocklist.remove(&newly_allowed) {
            Ok(removed) => removed.len(),
            Err(e) => {
                tracing::warn!("reload: taking newly allowed names off the blocklist: {e:#}");
                0
            }
        }
    };
    *applied = next;
    Ok(Outcome { allow_added: add.len(), allow_removed: del.len(), unlisted, suffixes, needs_restart: Vec::new() })
}

/// [`reload`] with its outcome logged: the signal handler's and the admin command's entry point.
pub fn reload_logged(agent: &Agent) -> Result<Outcome> {
    match reload(agent) {
        Ok(outcome) => {
            tracing::info!("{outcome}");
            if !outcome.needs_restart.is_empty() {
                tracing::warn!("reload: {} changed; restart the agent to apply", outcome.needs_restart.join(", "));
            }
            Ok(outcome)
        }
        Err(e) => {
            tracing::error!("reload refused, the old configuration stays in force: {e:#}");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_read_at_start_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.server_ip.push("192.0.2.1".parse().unwrap());
        new.classifier.allow.names.push("ok.example".into());
        assert!(restart_only_changes(&old, &new).is_empty());
        new.helo_ttl_s = 5;
        new.reply_footer = Some("see https://isp.example/".into());
        assert!(restart_only_changes(&old, &new).is_empty());
        new.backend = "127.0.0.1:1".parse().unwrap();
        new.max_sessions = 7;
        assert_eq!(restart_only_changes(&old, &new), vec!["backend".to_string(), "max-sessions".to_string()]);
    }
}
