//! Between a session and the classifier: builds the classifier's input from what the session saw,
//! and turns a rejection into its consequences (the kernel listing, by scope).
//!
//! The kernel listing happens before the reply is written: by the time the sender reads
//! `550 ... Bogus HELO`, its next attempt with that greeting is already dropped in the kernel.
//! The store follows within milliseconds, in a group commit.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use anyhow::Result;

use super::SessionContext;
use crate::{
    blocklist::Committed,
    classify::{Classification, GreetingFacts, Rejection, Scope, Verb},
    metrics::{ObservationLabel, RuleLabel},
    modes::FilterMode,
    proxy::{health::Change, relay::RelayEnd, HandOffEnd},
    session_id::SessionId,
};

/// Lists what was rejected: the greeting for everyone (`helo` scope, within the client's quota of
/// new listings) or this client (`client`). A name longer than the kernel judges is not listed:
/// no listing could ever match it, and the sender is refused here each time anyway.
fn list(cx: &SessionContext, rejection: &Rejection, arg: &[u8], client: IpAddr) -> Result<Option<Committed>> {
    let rule = rejection.rule.as_str();
    match rejection.scope {
        Scope::Helo if arg.len() > helo_common::greeting::MAX_ARG_LEN => Ok(None),
        Scope::Helo => cx.blocklist.list_greeting_from(client, arg, rule, &rejection.reply).map(Some),
        Scope::Client => cx.blocklist.list_source(client, rule, &rejection.reply).map(Some),
    }
}

/// What a refused session sends, and when: the reply, held until the listing it caused is on disk.
/// (The classifier's [`Rejection`] is what it found; a blocklist hit refuses with no `Rejection`.)
pub struct ReplyAfterCommit {
    reply: String,
    committed: Option<Committed>,
}

impl ReplyAfterCommit {
    /// The reply, once the listing is durable: a sender never reads a rejection the agent could
    /// forget in a crash. The wait is a group commit's fsync, shared with every listing queued
    /// meanwhile, and holds no thread.
    pub async fn durable(self) -> String {
        if let Some(c) = self.committed {
            c.wait().await;
        }
        self.reply
    }

    /// [`ReplyAfterCommit::durable`] for the relay's synchronous judge; tokio moves other sessions off
    /// this worker while it waits.
    fn durable_blocking(self) -> String {
        if let Some(c) = self.committed {
            off_the_runtime(|| c.wait_blocking());
        }
        self.reply
    }
}

/// Runs `f`, which may block: on a work-stealing runtime tokio first moves this worker's other
/// tasks elsewhere. A session thread (one thread, its own runtime: see [`crate::server`]) has
/// nowhere to move them, so there the thread's other sessions wait; both callers block only
/// while an operator's bulk change or a commit holds the store, rarely and briefly.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn consequences(cx: &SessionContext, id: SessionId, rejection: &Rejection, arg: &[u8], client: IpAddr) -> ReplyAfterCommit {
    tracing::info!(
        session = %id,
        event = "reject",
        client = %client,
        helo = cx.client_lines.quote(arg),
        rule = %rejection.rule,
        scope = rejection.scope.as_str(),
        mode = observe_note(cx)
    );
    // Listing is a kernel map update and a queue push (the store write is grouped on its own
    // thread). Only while an operator change holds the blocklist (an import, say) can it wait;
    // then tokio moves other sessions off this worker thread rather than stall them.
    let listed =
        if cx.blocklist.operator_busy() { off_the_runtime(|| list(cx, rejection, arg, client)) } else { list(cx, rejection, arg, client) };
    let committed = match listed {
        Ok(c) => c,
        Err(e) => {
            // The reply still goes out; only the kernel shortcut for the next attempt is lost.
            tracing::error!("{client}: could not list the rejection (store or kernel): {e:#}");
            None
        }
    };
    ReplyAfterCommit { reply: rejection.reply.to_string(), committed }
}

/// Runs the classifier and counts what it found.
fn classify(cx: &SessionContext, input: &GreetingFacts<'_>) -> Classification {
    let started = Instant::now();
    let classification = cx.classifier.classify(input);
    let m = &cx.metrics;
    m.classify_seconds.observe(started.elapsed().as_secs_f64());
    let rule = classification.verdict.rule().map(|r| r.as_str()).unwrap_or("accept");
    m.verdicts.get_or_create(&RuleLabel { rule: rule.to_owned() }).inc();
    for kind in classification.observations.iter() {
        tracing::debug!("{}: observation {}", input.client_ip, kind.as_str());
        m.observations.get_or_create(&ObservationLabel { kind: kind.as_str().to_owned() }).inc();
    }
    classification
}

/// Whether the client is exempt from the blocklist and the classifier (`allow.cidrs`), or from the
/// kernel's HELO map at least (`relay_cidrs`, which the classifier exempts from
/// `helo_matches_rcpt` only and judges otherwise): the kernel lets both past, and so does this.
pub fn exempt(cx: &SessionContext, client: IpAddr) -> bool {
    let client = client.to_canonical();
    cx.classifier.current().exempt_networks().any(|n| n.contains(&client))
}

/// The reply of the blocklist entry listing this client, counted; in observe mode it is only
/// counted and logged.
pub fn listed_source(cx: &SessionContext, id: SessionId, client: IpAddr) -> Option<String> {
    let reply = cx.blocklist.source_refusal(client)?;
    cx.metrics.verdicts.get_or_create(&RuleLabel { rule: "listed_source".to_owned() }).inc();
    tracing::info!(session = %id, event = "reject", client = %client, rule = "listed_source", mode = observe_note(cx));
    Some(reply)
}

/// `mode=observe` on a decision line when the refusal was only observed (passed on).
fn observe_note(cx: &SessionContext) -> Option<&'static str> {
    (cx.config.mode == FilterMode::Observe).then_some("observe")
}

/// Judges a greeting: the blocklist first (a listed name is refused with its entry's reply,
/// whatever path its bytes took past the kernel) unless the client is `exempt`, then the
/// classifier. `Some` when refused.
pub fn greeting(cx: &SessionContext, id: SessionId, arg: &[u8], client: IpAddr, exempt: bool) -> Option<ReplyAfterCommit> {
    if let Some(reply) = (!exempt).then(|| cx.blocklist.helo_refusal(arg)).flatten() {
        cx.metrics.verdicts.get_or_create(&RuleLabel { rule: "listed_helo".to_owned() }).inc();
        tracing::info!(
            session = %id,
            event = "reject",
            client = %client,
            helo = cx.client_lines.quote(arg),
            rule = "listed_helo",
            mode = observe_note(cx)
        );
        let committed = strike(cx, client, &reply);
        return Some(ReplyAfterCommit { reply, committed });
    }
    let classification = classify(cx, &GreetingFacts::new(Verb::Ehlo, arg, client));
    let rejection = classification.verdict.rejection()?;
    let mut refusal = consequences(cx, id, rejection, arg, client);
    if rejection.scope == Scope::Helo && !exempt {
        if let Some(listed) = strike(cx, client, &refusal.reply) {
            refusal.committed.get_or_insert(listed);
        }
    }
    Some(refusal)
}

/// A strike on the offender ladder for a greeting refused in user space (the kernel strikes the
/// ones it drops itself). Enforce mode only; `Some` when this strike listed the source.
fn strike(cx: &SessionContext, client: IpAddr, reply: &str) -> Option<Committed> {
    if cx.config.mode != FilterMode::Enforce {
        return None;
    }
    match cx.blocklist.strike(client, reply) {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!("{client}: could not record a strike: {e:#}");
            None
        }
    }
}

/// See [`crate::kernel::KernelMaps::release_flow`].
pub fn release_flow(cx: &SessionContext, client: SocketAddr, server: SocketAddr) {
    if let Err(e) = cx.kernel.lock().unwrap().release_flow(client, server) {
        tracing::debug!("{client}: could not release the flow: {e:#}");
    }
}

pub fn observe_pregreet(cx: &SessionContext) {
    cx.metrics.observations.get_or_create(&ObservationLabel { kind: "pregreet".into() }).inc();
}

pub fn record_hand_off(cx: &SessionContext, id: SessionId, end: HandOffEnd) {
    let change = match end {
        HandOffEnd::BackendDown(why) => {
            // The session's line stays at info: the outage itself is one warning, below.
            tracing::info!(session = %id, event = "hand-off", result = "failed", backend = %cx.config.backend, reason = %why);
            cx.metrics.backend_errors.inc();
            let change = cx.backend.failed();
            if change == Change::WentDown {
                cx.metrics.backend_up.set(0);
                tracing::warn!(
                    event = "backend-down",
                    backend = %cx.config.backend,
                    reason = %why,
                    "the MTA does not answer: clients get 421 until it does (logged again when it is back)"
                );
            }
            change
        }
        HandOffEnd::BackendRefused(reply) => {
            tracing::info!(session = %id, event = "hand-off", result = "refused", reply = ?reply, "the MTA refused the client");
            cx.metrics.backend_refusals.inc();
            cx.backend.answered()
        }
        HandOffEnd::Relayed(end) => {
            tracing::info!(session = %id, event = "hand-off", result = "relayed", end = ?end);
            cx.metrics.hand_offs.inc();
            if end == RelayEnd::TimedOut {
                cx.metrics.relay_timeouts.inc();
            }
            cx.backend.answered()
        }
    };
    if let Change::CameBack { failed, lasted } = change {
        cx.metrics.backend_up.set(1);
        tracing::warn!(
            event = "backend-up",
            backend = %cx.config.backend,
            failed_hand_offs = failed,
            down_s = lasted.as_secs(),
            "the MTA answers again"
        );
    }
}

/// Judges commands during the relay: each RCPT against the greeting, and any further greeting.
pub struct RelayJudge<'a> {
    cx: &'a SessionContext,
    id: SessionId,
    arg: Vec<u8>,
    client: IpAddr,
    exempt: bool,
}

impl<'a> RelayJudge<'a> {
    pub fn new(cx: &'a SessionContext, id: SessionId, arg: Vec<u8>, client: IpAddr, exempt: bool) -> Self {
        Self { cx, id, arg, client, exempt }
    }

    /// In observe mode a rejection is only logged and counted: the session goes on.
    fn enforce(&self, refusal: ReplyAfterCommit) -> Option<String> {
        (self.cx.config.mode == FilterMode::Enforce).then(|| self.cx.refusal_text(&refusal.durable_blocking()))
    }
}

impl crate::proxy::relay::Judge for RelayJudge<'_> {
    fn rcpt(&mut self, address: &str) -> Option<String> {
        let rcpt = [address];
        let input = GreetingFacts::new(Verb::Ehlo, &self.arg, self.client).with_rcpt(&rcpt);
        let classification = classify(self.cx, &input);
        let rejection = classification.verdict.rejection()?;
        let refusal = consequences(self.cx, self.id, rejection, &self.arg, self.client);
        self.enforce(refusal)
    }

    fn greeting(&mut self, arg: &[u8]) -> Option<String> {
        self.arg = arg.to_vec();
        let refusal = greeting(self.cx, self.id, arg, self.client, self.exempt)?;
        self.enforce(refusal)
    }
}
