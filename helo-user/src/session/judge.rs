//! Between a session and the classifier: builds the classifier's input from what the session saw,
//! and turns a rejection into its consequences (the kernel listing, by scope).
//!
//! The kernel listing happens before the reply is written: by the time the sender reads
//! `550 ... Bogus HELO`, its next attempt with that greeting is already dropped in the kernel.

use std::net::IpAddr;

use anyhow::Result;
use helo_common::maps::reason;

use crate::{
    agent::Agent,
    classify::{Greeting, Rejection, RuleId, Scope, Verb},
    kernel::FilterMode,
    proxy::HandOffEnd,
};

fn reason_code(rule: RuleId) -> u32 {
    match rule {
        RuleId::OperatorDeny => reason::OPERATOR_DENY,
        RuleId::BogusHelo => reason::BOGUS_HELO,
        RuleId::HeloIsMyIp => reason::HELO_IS_MY_IP,
        RuleId::HeloMatchesRcpt => reason::HELO_MATCHES_RCPT,
        RuleId::LiteralMismatch => reason::LITERAL_MISMATCH,
        RuleId::Dynamic => reason::OPERATOR,
    }
}

/// Lists what was rejected: the greeting for everyone (`helo` scope) or this client (`client`).
fn list(agent: &Agent, rejection: &Rejection, arg: &[u8], client: IpAddr) -> Result<()> {
    let code = reason_code(rejection.rule);
    match rejection.scope {
        Scope::Helo => agent.blocklist.block_helo(arg, code, &rejection.reply),
        Scope::Client => agent.blocklist.block_source(client, code, &rejection.reply),
    }
}

fn consequences(agent: &Agent, rejection: &Rejection, arg: &[u8], client: IpAddr) -> String {
    log::info!(
        "{client}: greeting {:?} rejected by {} ({} scope){}",
        String::from_utf8_lossy(arg),
        rejection.rule,
        rejection.scope.as_str(),
        if agent.config.mode == FilterMode::Observe { " [observe mode: passed on]" } else { "" }
    );
    if let Err(e) = list(agent, rejection, arg, client) {
        // The reply still goes out; only the kernel shortcut for the next attempt is lost.
        log::error!("{client}: could not list the rejection in the kernel: {e:#}");
    }
    rejection.reply.to_string()
}

/// Classifies a greeting at HELO time. `Some(reply)` when it is rejected.
pub fn greeting(agent: &Agent, arg: &[u8], client: IpAddr) -> Option<String> {
    let classification = agent.classifier.classify(&Greeting::new(Verb::Ehlo, arg, client));
    for kind in classification.observations.iter() {
        log::debug!("{client}: observation {}", kind.as_str());
    }
    let rejection = classification.verdict.rejection()?;
    Some(consequences(agent, rejection, arg, client))
}

pub fn observe_pregreet(_agent: &Agent) {}

pub fn record_hand_off(_agent: &Agent, end: Result<HandOffEnd>) {
    if let Err(e) = end {
        log::debug!("relay ended with an error: {e:#}");
    }
}

/// Judges commands during the relay: each RCPT against the greeting, and any further greeting.
pub struct Relay<'a> {
    agent: &'a Agent,
    arg: Vec<u8>,
    client: IpAddr,
}

impl<'a> Relay<'a> {
    pub fn new(agent: &'a Agent, arg: Vec<u8>, client: IpAddr) -> Self {
        Self { agent, arg, client }
    }

    fn enforce(&self, reply: String) -> Option<String> {
        (self.agent.config.mode == FilterMode::Enforce).then_some(reply)
    }
}

impl crate::proxy::relay::Judge for Relay<'_> {
    fn rcpt(&mut self, address: &str) -> Option<String> {
        let rcpt = [address];
        let input = Greeting::new(Verb::Ehlo, &self.arg, self.client).with_rcpt(&rcpt);
        let classification = self.agent.classifier.classify(&input);
        let rejection = classification.verdict.rejection()?;
        let reply = consequences(self.agent, rejection, &self.arg, self.client);
        self.enforce(reply)
    }

    fn greeting(&mut self, _ehlo: bool, arg: &[u8]) -> Option<String> {
        self.arg = arg.to_vec();
        let reply = greeting(self.agent, arg, self.client)?;
        self.enforce(reply)
    }
}
