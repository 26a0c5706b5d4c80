//! What runs beside the sessions once the agent has started: the kernel's drop events (on the
//! first session thread), the metrics endpoint, the periodic blocklist jobs, the admin socket and the client-lines report.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::net::{TcpListener, UnixListener};

use super::drops::DropPolicy;
use crate::{admin, agent_state::Agent, config::KernelDropReply, kernel::events, metrics, periodic, server};

/// The reader of the kernel's drop events, for the server to run beside the sessions it wakes
/// (see [`server::serve`]); until then the events wait in the ring.
pub(super) fn drop_follower(agent: &Agent, ring: RingBuf<MapData>) -> server::Beside {
    let drops = DropPolicy {
        registry: Arc::clone(&agent.registry),
        blocklist: Arc::clone(&agent.blocklist),
        recent: Arc::clone(&agent.recent),
        silent: agent.config.kernel_drop_reply == KernelDropReply::Silent,
    };
    Box::pin(async move {
        if let Err(e) = events::follow(ring, |drop| drops.on_drop(drop)).await {
            tracing::error!("drop events stopped: {e:#}");
        }
    })
}

/// Spawns every other background task of a started agent; each runs until the process exits.
pub(super) fn spawn_all(agent: &Arc<Agent>, metrics_listener: Option<TcpListener>, admin_listener: UnixListener) {
    if let Some(listener) = metrics_listener {
        let (metrics, kernel, blocklist) = (Arc::clone(&agent.metrics), Arc::clone(&agent.kernel), Arc::clone(&agent.blocklist));
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_on(listener, metrics, kernel, blocklist).await {
                tracing::error!("metrics endpoint stopped: {e:#}");
            }
        });
    }
    blocklist_jobs(agent);
    tokio::spawn(admin::server::serve(admin_listener, Arc::clone(agent)));
    tokio::spawn({
        let agent = Arc::clone(agent);
        async move {
            let mut minute = tokio::time::interval(Duration::from_secs(60));
            minute.tick().await;
            loop {
                minute.tick().await;
                agent.client_lines.report();
            }
        }
    });
}

/// Expiry and reconcile, each on its own interval (see [`periodic`]).
fn blocklist_jobs(agent: &Agent) {
    periodic::every(Duration::from_secs(agent.config.expire_interval_s), Arc::clone(&agent.blocklist), "expiry", |b| {
        b.expire().map(|n| {
            if n > 0 {
                tracing::info!("blocklist: {n} entries expired")
            }
        })
    });
    periodic::every(Duration::from_secs(agent.config.reconcile_interval_s), Arc::clone(&agent.blocklist), "reconcile", |b| {
        b.reconcile().map(|(evicted, restored, ghosts)| {
            if evicted + restored > 0 {
                tracing::warn!(
                    "blocklist: the kernel's full maps evicted {evicted} agent listings (dropped) and {restored} operator \
                     or fleet entries (put back); raise helo-capacity?"
                )
            }
            if ghosts > 0 {
                tracing::warn!("blocklist: {ghosts} kernel entries the store did not hold were removed")
            }
        })
    });
}
