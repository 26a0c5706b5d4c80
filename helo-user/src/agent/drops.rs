//! What the agent does with a drop the kernel reported ([`crate::kernel::events`]): it ends the
//! accepted socket of that flow at once (after writing the entry's reply, unless told to stay
//! silent), so a dropped flow holds no socket and the sender still learns why; counts the hit for
//! `top`; and records in the store a source the kernel put on the offender ladder.

use std::sync::Arc;

use crate::{
    blocklist::Blocklist,
    kernel::events::{Dropped, KernelDrop},
    recent::RecentHits,
    registry::{EndSession, Registry},
    smtp::reply,
};

/// The agent's handles a drop touches.
pub(crate) struct DropPolicy {
    pub registry: Arc<Registry>,
    pub blocklist: Arc<Blocklist>,
    pub recent: Arc<RecentHits>,
    /// Close without writing the reply (`kernel-drop-reply = "silent"`).
    pub silent: bool,
}

impl DropPolicy {
    pub fn on_drop(&self, drop: KernelDrop) {
        let client = drop.client;
        // For a greeting, one index lookup gives both what `top` shows and what the sender reads.
        let helo = match drop.dropped {
            Dropped::Greeting { hash } => Some((hash, self.blocklist.helo_listed(hash))),
            Dropped::Source => None,
        };
        self.recent.record(match &helo {
            Some((_, Some((name, _)))) => ("helo", name.clone()),
            Some((hash, None)) => ("helo", format!("hash {hash:016x}")),
            None => ("source", client.ip().to_string()),
        });
        if drop.listed_source {
            // This drop was the strike that put the source on the offender ladder: the kernel
            // listed it; the store (and the fleet) learn it here, with the words it was
            // refused with.
            let words = match &helo {
                Some((_, Some((_, reply)))) => reply.clone(),
                _ => reply::KERNEL_DROP_DEFAULT.to_owned(),
            };
            if let Err(e) = self.blocklist.adopt_ladder_listing(client.ip(), &words) {
                tracing::warn!("{}: could not record the kernel's ladder listing: {e:#}", client.ip());
            }
        }
        if drop.observed {
            return;
        }
        let reply = (!self.silent).then(|| {
            let listed = match helo {
                Some((_, found)) => found.map(|(_, reply)| reply),
                None => self.blocklist.source_refusal(client.ip()),
            };
            listed.unwrap_or_else(|| reply::KERNEL_DROP_DEFAULT.to_owned())
        });
        if self.registry.end_session(client, EndSession { reply, server: drop.server }) {
            tracing::debug!("kernel dropped a segment of {client}; its session is closed");
        }
    }
}

#[cfg(test)]
mod tests;
