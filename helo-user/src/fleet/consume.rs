//! The consumer's decisions, apart from the Redis connection: where to start following the stream,
//! what a received message or stored entry does to this box's blocklist, and where the box stopped.
//! [`super::sync`] reads Redis and hands what it read here; `consume/tests.rs` drives the same
//! functions in process, over the in-memory kernel.

use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;

use super::wire::Message;
use crate::{
    agent_state::Agent,
    classify::{GreetingFacts, ObservationKind, Verb},
    listing::{Entry, Match, Target},
    metrics::FleetSkipLabel,
    store::FleetChange,
};

/// The store's meta key for the last stream ID this box applied.
pub const LAST_ID: &str = "fleet_last_id";
/// The store's meta key for the fleet generation this box synced with (see `sync::EPOCH_KEY`).
pub const EPOCH: &str = "fleet_epoch";

/// A stream message as read: its ID and its (field, value) pairs.
pub type StreamMessage = (String, Vec<(String, Vec<u8>)>);

/// Where the consumer picks up after connecting.
#[derive(Debug, PartialEq, Eq)]
pub enum StartAt {
    /// A generation this box has not synced with (first join, or Redis lost its data): publish
    /// this box's own entries again, load the current list, follow from the stream's head.
    Join,
    /// Load the current list and follow from the head: this box has no position, or the stream
    /// was trimmed past it and no longer holds what it missed.
    Reload,
    /// Follow on from the stream ID this box stopped at.
    Resume(String),
}

/// Decides [`StartAt`] from the generation and position this box kept (`synced_epoch`,
/// `saved_id`), the fleet's generation now (`epoch`) and the oldest ID the stream still holds.
pub fn start_at(synced_epoch: Option<&str>, epoch: &str, saved_id: Option<&str>, oldest: Option<&str>) -> StartAt {
    if synced_epoch != Some(epoch) {
        return StartAt::Join;
    }
    match saved_id {
        Some(s) if oldest.is_some_and(|f| id_key(f) > id_key(s)) => StartAt::Reload,
        Some(s) => StartAt::Resume(s.to_owned()),
        None => StartAt::Reload,
    }
}

/// Queues this box's own entries (its agent's and its operator's) for publishing, as a box joining
/// a generation does so that the fleet has them.
pub fn republish_own(agent: &Agent) -> Result<usize> {
    let store = agent.blocklist.store();
    let own: Vec<Entry> = store.entries()?.into_iter().filter(|e| e.origin.published_as_this_box()).collect();
    for e in &own {
        store.queue(&FleetChange::Add { entry: e.clone() })?;
    }
    agent.blocklist.outbox_ready.notify_one();
    Ok(own.len())
}

/// Stream IDs compare as (ms, seq).
pub fn id_key(id: &str) -> (u64, u64) {
    let mut it = id.splitn(2, '-');
    (it.next().and_then(|s| s.parse().ok()).unwrap_or(0), it.next().and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn skipped(agent: &Agent, why: &str) {
    agent.metrics.fleet_skipped.get_or_create(&FleetSkipLabel { kind: why.into() }).inc();
}

/// Whether this box's own allow list covers the entry: then another box's block is not applied.
fn allowed_here(agent: &Agent, target: &Target) -> bool {
    match target.matches() {
        Match::Addr(ip) => agent.classifier.current().exempt_networks().any(|n| n.contains(&ip)),
        // A listed network is refused here if any of it is allowed here.
        Match::Net(net) => agent.classifier.current().exempt_networks().any(|n| n.contains(&net) || net.contains(&n)),
        Match::Greeting => {
            let probe = GreetingFacts::new(Verb::Ehlo, target.name().as_bytes(), IpAddr::from([0, 0, 0, 0]));
            agent.classifier.classify(&probe).observations.iter().any(|o| o == ObservationKind::OperatorAllow)
        }
    }
}

/// Applies another box's change: an add is an upsert (a duplicate changes nothing), a removal
/// of what is not listed here is no error.
fn apply(agent: &Agent, msg: &Message) -> Result<()> {
    match msg {
        Message::Add(e) => {
            if allowed_here(agent, &e.target) {
                tracing::info!("fleet: {} lists {}, but it is allowed here", e.origin, e.target);
                skipped(agent, "allowed");
                return Ok(());
            }
            agent.blocklist.apply_remote(e)
        }
        Message::Del { kind, name, .. } => agent.blocklist.remove(&[format!("{}/{name}", kind.as_str())]).map(|_| ()),
    }
}

/// One stream message: parsed, checked, and applied unless it is this box's own echo. A bad one is
/// logged and counted, never fatal: the consumer goes on with the next.
pub fn handle(agent: &Agent, me: &str, fields: &[(String, Vec<u8>)]) {
    match Message::from_fields(fields) {
        Ok(msg) if msg.origin().as_str() == me => {}
        Ok(msg) => match apply(agent, &msg) {
            Ok(()) => {
                agent.metrics.fleet_received.inc();
            }
            Err(e) => tracing::error!("fleet: applying {msg:?}: {e:#}"),
        },
        Err(e) => {
            tracing::warn!("fleet: skipping a bad stream entry: {e:#}");
            skipped(agent, "malformed");
        }
    }
}

/// Applies a batch read from the stream in order and keeps the position after it in the store, so
/// a restarted agent resumes there. Returns the new position (`last` when the batch is empty).
pub fn apply_batch(agent: &Agent, me: &str, messages: &[StreamMessage], last: &str) -> Result<String> {
    let Some((newest, _)) = messages.last() else {
        agent.metrics.fleet_lag_seconds.set(0.0);
        return Ok(last.to_owned());
    };
    for (_, fields) in messages {
        handle(agent, me, fields);
    }
    agent.metrics.fleet_lag_seconds.set(now_ms().saturating_sub(id_key(newest).0) as f64 / 1000.0);
    agent.blocklist.store().set_meta(LAST_ID, newest)?;
    Ok(newest.clone())
}

/// One entry from the fleet's current state (a `helo:entry:*` key's JSON) while loading it:
/// `true` when it was applied.
pub fn load_entry(agent: &Agent, me: &str, json: &str) -> bool {
    match serde_json::from_str::<Entry>(json) {
        Ok(e) if e.origin.as_str() == me => false,
        Ok(e) => match apply(agent, &Message::Add(e)) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("fleet: a stored entry was refused: {err:#}");
                false
            }
        },
        Err(_) => {
            skipped(agent, "malformed");
            false
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
