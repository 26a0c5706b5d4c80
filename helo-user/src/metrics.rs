//! Prometheus metrics, through the `prometheus-client` crate, served at `/metrics`.
//!
//! Agent-side metrics are updated where things happen. The kernel's per-CPU counters, the
//! blocklist sizes, whether the filter is still attached and the process's own figures (CPU, memory,
//! open files, read from `/proc/self`) are read at scrape time, so a scrape always shows the
//! current values.
//!
//! Two formats, chosen by the scraper's `Accept` header: OpenMetrics 1.0 (what `prometheus-client`
//! writes, served as `application/openmetrics-text; version=1.0.0`) to a client that asks for it,
//! as Prometheus does, and the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`) to
//! everyone else (curl, `promtool check metrics`, older scrapers). The body always matches its
//! content type: [`openmetrics_to_text`] rewrites what the two formats spell differently.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{
        text::{encode_eof, encode_registry},
        EncodeLabelSet,
    },
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{blocklist::Blocklist, kernel::Kernel, modes::FilterMode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

// Three label sets share the Prometheus label name `kind` but not its values: each has its own
// type, so a family cannot be handed another's values.

/// What the classifier (or the session: `pregreet`) observed, in the `observations` family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObservationLabel {
    pub kind: String,
}

/// Which blocklist (`helo` or `source`), in the `blocklist_entries` and `blocklist_hits` families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    pub kind: String,
}

/// Why the fleet consumer did not apply an entry (`malformed`, `allowed`), in the `fleet_skipped` family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetSkipLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub revision: String,
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
    pub observations: Family<ObservationLabel, Counter>,
    pub hand_offs: Counter,
    pub backend_errors: Counter,
    pub backend_up: Gauge,
    pub backend_refusals: Counter,
    pub relay_timeouts: Counter,
    blocklist_entries: Family<ListLabel, Gauge>,
    helo_table_used: Gauge,
    helo_table_slots: Gauge,
    blocklist_added: Counter,
    blocklist_expired: Counter,
    blocklist_removed: Counter,
    blocklist_evicted: Counter,
    blocklist_hits: Family<ListLabel, Counter>,
    blocklist_changes_seen: Mutex<crate::blocklist::ChangeCounts>,
    pub classify_seconds: Histogram,
    pub session_seconds: Histogram,
    pub fleet_connected: Gauge,
    pub fleet_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub fleet_sent: Counter,
    pub fleet_received: Counter,
    pub fleet_queued: Gauge,
    pub fleet_skipped: Family<FleetSkipLabel, Counter>,
    filter_mode: Family<ModeLabel, Gauge>,
    /// 1 while an XDP link runs this agent's program; registered only when one was attached.
    xdp_attached: Gauge,
    xdp_program_id: u32,
    /// The interface the program was attached to (0: unknown, the kernel's links are walked).
    xdp_ifindex: u32,
    process: Mutex<Registry>,
    process_cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    process_cpu_seen: Mutex<f64>,
    process_resident: Gauge,
    process_virtual: Gauge,
    process_open_fds: Gauge,
    process_max_fds: Gauge,
    process_start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    blocklist_reconciled: Family<DirectionLabel, Counter>,
    store_errors: Counter,
    blocklist_learned_limited: Counter,
}

impl Metrics {
    /// `helo_xdp_attached` asks the interface `iface` which program it runs, which needs no
    /// capability (walking the kernel's links needs CAP_SYS_ADMIN, which the systemd unit withholds).
    pub fn watching_interface(mut self, iface: Option<&str>) -> Self {
        self.xdp_ifindex = iface.and_then(crate::kernel::xdp_query::ifindex).unwrap_or(0);
        self
    }

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
            backend_up: Gauge::default(),
            backend_refusals: Counter::default(),
            relay_timeouts: Counter::default(),
            blocklist_entries: Family::default(),
            helo_table_used: Gauge::default(),
            helo_table_slots: Gauge::default(),
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
            filter_mode: Family::default(),
            xdp_attached: Gauge::default(),
            xdp_program_id: program_id,
            xdp_ifindex: 0,
            process: Mutex::new(Registry::default()),
            process_cpu_seconds: Counter::default(),
            process_cpu_seen: Mutex::new(0.0),
            process_resident: Gauge::default(),
            process_virtual: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_max_fds: Gauge::default(),
            process_start_time: Gauge::default(),
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
            m.backend_up.set(1);
            r.register(
                "backend_up",
                "1 while the MTA answers hand-offs (or none has failed yet), 0 from a failed hand-off until one reaches it",
                m.backend_up.clone(),
            );
            r.register("verdicts", "Classifier verdicts by rule (accept for clean greetings)", m.verdicts.clone());
            r.register("observations", "Classifier observations by kind", m.observations.clone());
            r.register("hand_offs", "Sessions handed to the MTA", m.hand_offs.clone());
            r.register(
                "backend_errors",
                "Hand-offs that failed to reach the MTA (connect failures and timeouts)",
                m.backend_errors.clone(),
            );
            r.register(
                "backend_refusals",
                "Hand-offs the MTA refused at connect (its non-220 banner was relayed to the client)",
                m.backend_refusals.clone(),
            );
            r.register("relay_timeouts", "Relayed sessions ended because a side kept them waiting too long", m.relay_timeouts.clone());
            r.register("blocklist_entries", "Blocklist entries by kind", m.blocklist_entries.clone());
            r.register("kernel_helo_table_used", "Names in the kernel's HELO table", m.helo_table_used.clone());
            r.register(
                "kernel_helo_table_slots",
                "Slots of the kernel's HELO table (it starts to evict at about 96% full)",
                m.helo_table_slots.clone(),
            );
            r.register("blocklist_added", "Blocklist entries added", m.blocklist_added.clone());
            r.register("blocklist_expired", "Blocklist entries removed because their time to live ran out", m.blocklist_expired.clone());
            r.register("blocklist_removed", "Blocklist entries removed by an operator", m.blocklist_removed.clone());
            r.register("blocklist_evicted", "Blocklist entries a full kernel table or map evicted", m.blocklist_evicted.clone());
            r.register(
                "blocklist_hits",
                "Packets that matched a listed greeting or source in the kernel (dropped, observed or allow-listed)",
                m.blocklist_hits.clone(),
            );
            r.register_with_unit("classify_duration", "Time to classify one greeting", Unit::Seconds, m.classify_seconds.clone());
            r.register_with_unit("session_duration", "Session length, accept to close", Unit::Seconds, m.session_seconds.clone());
            r.register(
                "build",
                "The agent's version",
                Info::new(BuildLabels {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    revision: option_env!("HELO_REVISION").unwrap_or("unknown").to_owned(),
                }),
            );
            r.register("filter_mode", "1 for the mode the filter runs in (enforce drops; observe only counts)", m.filter_mode.clone());
            r.register(
                "blocklist_reconciled",
                "Differences between the store and the kernel fixed at start and by the reconcile: to_kernel (a store entry put back), from_kernel (a kernel entry the store does not hold, removed)",
                m.blocklist_reconciled.clone(),
            );
            r.register(
                "store_errors",
                "Listing transactions the store could not commit (their kernel entries withdrawn, retried)",
                m.store_errors.clone(),
            );
            r.register(
                "blocklist_learned_limited",
                "Rejections not listed because their source had used its hourly quota of new listings",
                m.blocklist_learned_limited.clone(),
            );
            r.register(
                "xdp",
                "How the XDP program is attached",
                Info::new(XdpLabels { mode: xdp_mode.to_owned(), program_id: program_id.to_string() }),
            );
            if xdp_mode != "off" {
                r.register(
                    "xdp_attached",
                    "1 while an XDP link runs this agent's program (0: someone detached the filter)",
                    m.xdp_attached.clone(),
                );
            }
        }
        {
            // The names every Prometheus client library uses, without the helo_ prefix, so the
            // usual dashboards and alerts work unchanged.
            let mut r = m.process.lock().unwrap();
            r.register_with_unit("process_cpu", "Total user and system CPU time spent", Unit::Seconds, m.process_cpu_seconds.clone());
            r.register_with_unit("process_resident_memory", "Resident memory size", Unit::Bytes, m.process_resident.clone());
            r.register_with_unit("process_virtual_memory", "Virtual memory size", Unit::Bytes, m.process_virtual.clone());
            r.register("process_open_fds", "Open file descriptors", m.process_open_fds.clone());
            r.register("process_max_fds", "The open-files limit (soft)", m.process_max_fds.clone());
            r.register_with_unit(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Unit::Seconds,
                m.process_start_time.clone(),
            );
        }
        m.set_filter_mode(FilterMode::Enforce);
        // Every known label value exists from the first scrape, at 0: `rate()` and alerts then see
        // a series start at 0 rather than appear with its first event.
        for name in helo_common::maps::counter::NAMES {
            if name != "events_lost" {
                let _ = m.kernel_packets.get_or_create(&OutcomeLabel { outcome: name.to_owned() });
            }
        }
        for kind in ["helo", "source"] {
            let _ = m.blocklist_entries.get_or_create(&ListLabel { kind: kind.into() });
            let _ = m.blocklist_hits.get_or_create(&ListLabel { kind: kind.into() });
        }
        let _ = m.verdict_counts();
        for kind in ["malformed", "allowed"] {
            let _ = m.fleet_skipped.get_or_create(&FleetSkipLabel { kind: kind.into() });
        }
        m
    }

    /// The fleet's series appear only on a box that has a fleet.
    pub fn register_fleet(&self) {
        let mut r = self.registry.lock().unwrap();
        r.register("fleet_connected", "1 while the fleet's Redis is reachable and followed", self.fleet_connected.clone());
        r.register_with_unit(
            "fleet_lag",
            "How far behind the fleet stream this box's last applied entry was",
            Unit::Seconds,
            self.fleet_lag_seconds.clone(),
        );
        r.register("fleet_sent", "Local changes published to the fleet", self.fleet_sent.clone());
        r.register("fleet_received", "Other boxes' changes applied here", self.fleet_received.clone());
        r.register("fleet_queued", "Local changes waiting for Redis", self.fleet_queued.clone());
        r.register("fleet_skipped", "Fleet entries not applied, by why (malformed, allowed)", self.fleet_skipped.clone());
    }

    /// What is registered, in the text format, as last updated (no kernel or `/proc` reads): for
    /// tools and tests that need the metric names.
    pub fn exposition_text(&self) -> String {
        let mut om = String::new();
        let _ = encode_registry(&mut om, &self.registry.lock().unwrap());
        let _ = encode_registry(&mut om, &self.process.lock().unwrap());
        openmetrics_to_text(&om)
    }

    /// `helo_filter_mode{mode}`: 1 for the mode in force, 0 for the other.
    pub fn set_filter_mode(&self, mode: FilterMode) {
        for (m, label) in [(FilterMode::Enforce, "enforce"), (FilterMode::Observe, "observe")] {
            self.filter_mode.get_or_create(&ModeLabel { mode: label.into() }).set((m == mode) as i64);
        }
    }

    fn update_process(&self) {
        let Some(p) = process::read() else { return };
        let mut seen = self.process_cpu_seen.lock().unwrap();
        if p.cpu_seconds > *seen {
            self.process_cpu_seconds.inc_by(p.cpu_seconds - *seen);
            *seen = p.cpu_seconds;
        }
        self.process_resident.set(p.resident_bytes as i64);
        self.process_virtual.set(p.virtual_bytes as i64);
        self.process_open_fds.set(p.open_fds as i64);
        self.process_max_fds.set(p.max_fds as i64);
        self.process_start_time.set(p.start_time_s);
    }

    fn update_xdp_attached(&self) {
        if self.xdp_program_id == 0 {
            return;
        }
        let id = self.xdp_program_id;
        let attached = if self.xdp_ifindex != 0 {
            // What the interface runs: detached, or replaced by another program, reads 0.
            crate::kernel::xdp_query::attached_program_ids(self.xdp_ifindex).is_ok_and(|ids| ids.contains(&id))
        } else {
            aya::programs::loaded_links().filter_map(|l| l.ok()).any(|l| l.program_id() == id)
        };
        self.xdp_attached.set(attached as i64);
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
    pub fn render(&self, kernel: &Mutex<dyn Kernel>, blocklist: &Blocklist) -> Result<String> {
        let (now, fill) = {
            let k = kernel.lock().unwrap();
            (k.counters()?, k.helo_table_fill())
        };
        if let Some((used, slots)) = fill {
            self.helo_table_used.set(used as i64);
            self.helo_table_slots.set(slots as i64);
        }
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
                    self.blocklist_hits.get_or_create(&ListLabel { kind: kind.to_owned() }).inc_by(delta);
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
        self.blocklist_entries.get_or_create(&ListLabel { kind: "helo".into() }).set(helo as i64);
        self.blocklist_entries.get_or_create(&ListLabel { kind: "source".into() }).set(source as i64);
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
        self.update_process();
        self.update_xdp_attached();
        let mut out = String::new();
        encode_registry(&mut out, &self.registry.lock().unwrap()).context("encoding metrics")?;
        encode_registry(&mut out, &self.process.lock().unwrap()).context("encoding metrics")?;
        encode_eof(&mut out).context("encoding metrics")?;
        Ok(out)
    }
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,…;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut fields = part.split(';').map(str::trim);
        let kind = fields.next().unwrap_or("");
        let q = fields.find_map(|f| f.strip_prefix("q=")).and_then(|q| q.parse::<f64>().ok()).unwrap_or(1.0);
        kind.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// Rewrites an OpenMetrics exposition (as `prometheus-client` writes it) in the Prometheus text
/// format 0.0.4: a counter's `# HELP`/`# TYPE` name the `_total` sample, an info becomes a gauge
/// named `_info`, `unknown` becomes `untyped`, and `# UNIT` and `# EOF` go.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut types = std::collections::HashMap::<&str, &str>::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.splitn(2, ' ');
            if let (Some(name), Some(ty)) = (f.next(), f.next()) {
                types.insert(name, ty.trim());
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        let Some(prefix) = meta else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let rest = &line[prefix.len()..];
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, ty) = match types.get(name).copied() {
            Some("counter") if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
            Some("info") => (format!("{name}_info"), "gauge"),
            Some("unknown") => (name.to_owned(), "untyped"),
            Some(ty) => (name.to_owned(), ty),
            None => (name.to_owned(), "untyped"),
        };
        if prefix == "# TYPE " {
            out.push_str(&format!("# TYPE {name} {ty}\n"));
        } else {
            out.push_str(&format!("# HELP {name} {tail}\n"));
        }
    }
    out
}

/// The process's own figures, from `/proc/self` (Linux only, like the agent).
mod process {
    pub struct Figures {
        pub cpu_seconds: f64,
        pub resident_bytes: u64,
        pub virtual_bytes: u64,
        pub open_fds: u64,
        pub max_fds: u64,
        pub start_time_s: f64,
    }

    pub fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let after = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Field n of proc(5) is f[n - 3].
        let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let boot_time: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())?;
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the struct we own.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 0 };
        Some(Figures {
            cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
            resident_bytes: num(24)? * page,
            virtual_bytes: num(23)?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            max_fds,
            start_time_s: boot_time as f64 + num(22)? as f64 / ticks,
        })
    }
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, kernel: Arc<Mutex<dyn Kernel>>, blocklist: Arc<Blocklist>) -> Result<()> {
    let listener = bind(addr)?;
    serve_on(listener, metrics, kernel, blocklist).await
}

/// Binds the metrics listener (before anything else starts, so a taken port fails the start).
pub fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("binding metrics on {addr} (--metrics off serves none)"))?;
    std.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std)?)
}

/// Serves `/metrics` on a bound listener until the task is dropped.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    kernel: Arc<Mutex<dyn Kernel>>,
    blocklist: Arc<Blocklist>,
) -> Result<()> {
    use axum::{
        http::{header, HeaderMap, StatusCode},
        routing::get,
        Router,
    };
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let (metrics, kernel, blocklist) = (Arc::clone(&metrics), Arc::clone(&kernel), Arc::clone(&blocklist));
            async move {
                let om = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(wants_openmetrics);
                match metrics.render(&kernel, &blocklist) {
                    Ok(body) if om => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body),
                    Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], openmetrics_to_text(&body)),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("{e:#}")),
                }
            }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_header_gets_openmetrics() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn text_format_names_counters_and_infos_as_their_samples() {
        let om = "# HELP a_sessions SMTP sessions.\n# TYPE a_sessions counter\na_sessions_total 3\n\
                  # HELP a_lag Lag.\n# TYPE a_lag gauge\n# UNIT a_lag seconds\na_lag_seconds 0.5\n\
                  # HELP a_xdp How.\n# TYPE a_xdp info\na_xdp_info{mode=\"native\"} 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP a_sessions_total SMTP sessions.\n# TYPE a_sessions_total counter\na_sessions_total 3\n\
             # HELP a_lag Lag.\n# TYPE a_lag gauge\na_lag_seconds 0.5\n\
             # HELP a_xdp_info How.\n# TYPE a_xdp_info gauge\na_xdp_info{mode=\"native\"} 1\n"
        );
    }

    #[test]
    fn a_scrape_has_build_process_and_mode_series_and_no_fleet_without_one() {
        let m = Metrics::new("off", 0);
        m.update_process();
        let mut om = String::new();
        encode_registry(&mut om, &m.registry.lock().unwrap()).unwrap();
        encode_registry(&mut om, &m.process.lock().unwrap()).unwrap();
        for want in [
            "helo_build_info{version=",
            "helo_filter_mode{mode=\"enforce\"} 1",
            "helo_filter_mode{mode=\"observe\"} 0",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(om.contains(want), "no {want} in:\n{om}");
        }
        assert!(!om.contains("fleet"), "{om}");
        assert!(!om.contains("xdp_attached"), "{om}");
        m.register_fleet();
        let mut om = String::new();
        encode_registry(&mut om, &m.registry.lock().unwrap()).unwrap();
        assert!(om.contains("helo_fleet_queued"), "{om}");
    }
}
