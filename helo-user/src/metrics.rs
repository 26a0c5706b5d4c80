//! Prometheus metrics, through the `prometheus-client` crate, served at `/metrics`.
//!
//! Agent-side metrics are updated where things happen. The kernel's per-CPU counters and the
//! blocklist sizes are read at scrape time, so a scrape always shows the kernel's current totals.

use std::{net::SocketAddr, sync::{Arc, Mutex}};

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{blocklist::Blocklist, kernel::KernelFilter};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdpLabels {
    pub mode: String,
    pub program_id: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    kernel_packets: Family<OutcomeLabel, Counter>,
    kernel_seen: Mutex<[u64; helo_common::maps::counter::COUNT as usize]>,
    events_lost: Counter,
    pub sessions: Counter,
    pub sessions_active: Gauge,
    pub verdicts: Family<RuleLabel, Counter>,
    pub observations: Family<KindLabel, Counter>,
    pub hand_offs: Counter,
    pub backend_errors: Counter,
    blocklist_entries: Family<KindLabel, Gauge>,
    blocklist_added: Counter,
    blocklist_expired: Counter,
    blocklist_removed: Counter,
    blocklist_evicted: Counter,
    blocklist_hits: Family<KindLabel, Counter>,
    blocklist_changes_seen: Mutex<crate::blocklist::ChangeCounts>,
    pub classify_seconds: Histogram,
    pub session_seconds: Histogram,
    pub fleet_connected: Gauge,
    pub fleet_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub fleet_sent: Counter,
    pub fleet_received: Counter,
    pub fleet_queued: Gauge,
    pub fleet_skipped: Family<KindLabel, Counter>,
    blocklist_reconciled: Family<DirectionLabel, Counter>,
    store_errors: Counter,
    blocklist_learned_limited: Counter,
}

impl Metrics {
    pub fn new(xdp_mode: &str, program_id: u32) -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("helo")),
            kernel_packets: Family::default(),
            kernel_seen: Mutex::new([0; helo_common::maps::counter::COUNT as usize]),
            events_lost: Counter::default(),
            sessions: Counter::default(),
            sessions_active: Gauge::default(),
            verdicts: Family::default(),
            observations: Family::default(),
            hand_offs: Counter::default(),
            backend_errors: Counter::default(),
            blocklist_entries: Family::default(),
            blocklist_added: Counter::default(),
            blocklist_expired: Counter::default(),
            blocklist_removed: Counter::default(),
            blocklist_evicted: Counter::default(),
            blocklist_hits: Family::default(),
            blocklist_changes_seen: Mutex::new(Default::default()),
            classify_seconds: Histogram::new(exponential_buckets(1e-7, 4.0, 10)),
            session_seconds: Histogram::new(exponential_buckets(0.01, 4.0, 10)),
            fleet_connected: Gauge::default(),
            fleet_lag_seconds: Gauge::default(),
            fleet_sent: Counter::default(),
            fleet_received: Counter::default(),
            fleet_queued: Gauge::default(),
            fleet_skipped: Family::default(),
            blocklist_reconciled: Family::default(),
            store_errors: Counter::default(),
            blocklist_learned_limited: Counter::default(),
        };
        {
            let mut r = m.registry.lock().unwrap();
            r.register("kernel_packets", "Packets the XDP program decided on, by outcome (summed over CPUs)", m.kernel_packets.clone());
            r.register("kernel_events_lost", "Drop events the ring buffer had no room for", m.events_lost.clone());
            r.register("sessions", "SMTP sessions accepted", m.sessions.clone());
            r.register("sessions_active", "SMTP sessions open now", m.sessions_active.clone());
            r.register("verdicts", "Classifier verdicts by rule (accept for clean greetings)", m.verdicts.clone());
            r.register("observations", "Classifier observations by kind", m.observations.clone());
            r.register("hand_offs", "Sessions handed to the MTA", m.hand_offs.clone());
            r.register("backend_errors", "Hand-offs that failed to reach the MTA", m.backend_errors.clone());
            r.register("blocklist_entries", "Blocklist entries by kind", m.blocklist_entries.clone());
            r.register("blocklist_added", "Blocklist entries added", m.blocklist_added.clone());
            r.register("blocklist_expired", "Blocklist entries removed because their time to live ran out", m.blocklist_expired.clone());
            r.register("blocklist_removed", "Blocklist entries removed by an operator", m.blocklist_removed.clone());
            r.register("blocklist_evicted", "Blocklist entries the kernel's full LRU maps evicted", m.blocklist_evicted.clone());
            r.register("blocklist_hits", "Packets that matched a listed greeting or source in the kernel (dropped, observed or allow-listed)", m.blocklist_hits.clone());
            r.register_with_unit("classify_duration", "Time to classify one greeting", Unit::Seconds, m.classify_seconds.clone());
            r.register_with_unit("session_duration", "Session length, accept to close", Unit::Seconds, m.session_seconds.clone());
            r.register("fleet_connected", "1 while the fleet's Redis is reachable and followed", m.fleet_connected.clone());
            r.register_with_unit("fleet_lag", "How far behind the fleet stream this box's last applied entry was", Unit::Seconds, m.fleet_lag_seconds.clone());
            r.register("fleet_sent", "Local changes published to the fleet", m.fleet_sent.clone());
            r.register("fleet_received", "Other boxes' changes applied here", m.fleet_received.clone());
            r.register("fleet_queued", "Local changes waiting for Redis", m.fleet_queued.clone());
            r.register("fleet_skipped", "Fleet entries not applied, by why (malformed, allowed)", m.fleet_skipped.clone());
            r.register(
                "blocklist_reconciled",
                "Differences between the store and the kernel fixed at start and by the reconcile: to_kernel (a store entry put back), from_kernel (a kernel entry the store does not hold, removed)",
                m.blocklist_reconciled.clone(),
            );
            r.register("store_errors", "Listing transactions the store could not commit (their kernel entries withdrawn, retried)", m.store_errors.clone());
            r.register("blocklist_learned_limited", "Rejections not listed because their source had used its hourly quota of new listings", m.blocklist_learned_limited.clone());
            r.register(
                "xdp",
                "How the XDP program is attached",
                Info::new(XdpLabels { mode: xdp_mode.to_owned(), program_id: program_id.to_string() }),
            );
        }
        m
    }

    /// Verdicts so far by rule id, `accept` included, for `stats` and `top`.
    pub fn verdict_counts(&self) -> std::collections::BTreeMap<String, u64> {
        crate::classify::RuleId::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(["accept"])
            .map(|rule| (rule.to_owned(), self.verdicts.get_or_create(&RuleLabel { rule: rule.to_owned() }).get()))
            .collect()
    }

    /// Brings the scrape-time values up to date and encodes everything.
    pub fn render(&self, kernel: &Mutex<KernelFilter>, blocklist: &Blocklist) -> Result<String> {
        let now = kernel.lock().unwrap().maps.counters()?;
        {
            let mut seen = self.kernel_seen.lock().unwrap();
            for (i, (name, total)) in now.named().enumerate() {
                let delta = total.saturating_sub(seen[i]);
                let hit_kind = match name {
                    "drop_helo" | "observe_helo" => Some("helo"),
                    "drop_source" | "observe_source" => Some("source"),
                    _ => None,
                };
                if let Some(kind) = hit_kind {
                    self.blocklist_hits.get_or_create(&KindLabel { kind: kind.to_owned() }).inc_by(delta);
                }
                if name == "events_lost" {
                    self.events_lost.inc_by(delta);
                } else {
                    self.kernel_packets.get_or_create(&OutcomeLabel { outcome: name.to_owned() }).inc_by(delta);
                }
                seen[i] = total;
            }
        }
        let (helo, source) = blocklist.counts();
        self.blocklist_entries.get_or_create(&KindLabel { kind: "helo".into() }).set(helo as i64);
        self.blocklist_entries.get_or_create(&KindLabel { kind: "source".into() }).set(source as i64);
        {
            let c = blocklist.changes();
            let mut seen = self.blocklist_changes_seen.lock().unwrap();
            self.blocklist_added.inc_by(c.added - seen.added);
            self.blocklist_expired.inc_by(c.expired - seen.expired);
            self.blocklist_removed.inc_by(c.removed - seen.removed);
            self.blocklist_evicted.inc_by(c.evicted - seen.evicted);
            let direction = |d: &str| self.blocklist_reconciled.get_or_create(&DirectionLabel { direction: d.to_owned() });
            direction("to_kernel").inc_by(c.reconciled_to_kernel - seen.reconciled_to_kernel);
            direction("from_kernel").inc_by(c.reconciled_from_kernel - seen.reconciled_from_kernel);
            self.store_errors.inc_by(c.store_errors - seen.store_errors);
            self.blocklist_learned_limited.inc_by(c.learned_limited - seen.learned_limited);
            *seen = c;
        }
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().unwrap()).context("encoding metrics")?;
        Ok(out)
    }
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, kernel: Arc<Mutex<KernelFilter>>, blocklist: Arc<Blocklist>) -> Result<()> {
    use axum::{http::{header, StatusCode}, routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, kernel, blocklist) = (Arc::clone(&metrics), Arc::clone(&kernel), Arc::clone(&blocklist));
            async move {
                match metrics.render(&kernel, &blocklist) {
                    Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("{e:#}")),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics on {addr}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
