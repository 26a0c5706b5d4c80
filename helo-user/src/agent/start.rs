//! Starting the agent and running it until the caller says stop: [`start`] takes ports and paths,
//! loads, configures and attaches the XDP program and builds the [`Agent`]; [`Running::serve`]
//! accepts SMTP until the `shutdown` future the caller passes completes.
//!
//! The caller (the `helo run` command) owns what belongs to the process: signals, and what the
//! service manager is told. Anything can drive a [`Running`] agent the same way.

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use helo_common::HashKey;
use tokio::net::TcpListener;

use super::{jobs, start_undo::StartUndo};
use crate::{
    admin,
    agent_state::Agent,
    blocklist::Blocklist,
    classify::Classifier,
    config::Config,
    kernel::{pin, Kernel, KernelFilter, LoadOptions},
    metrics::{self, Metrics},
    server,
    store::Store,
};

/// A started agent: filtering, its background jobs running, SMTP listened on but not yet accepted.
pub struct Running {
    agent: Arc<Agent>,
    listeners: Vec<TcpListener>,
    status: String,
    /// The kernel's drop events, read once sessions are served.
    drops: server::Beside,
}

/// Starts the agent for `config`. `reread` reads the configuration again for a reload (the file
/// with the command line's flags over it).
///
/// Everything that can fail for want of a port or a path is taken before the kernel is touched,
/// and a start that fails after that undoes what it made: a failed start leaves the box as it was.
pub async fn start(config: Config, reread: impl Fn() -> Result<Config> + Send + Sync + 'static) -> Result<Running> {
    // A relayed session holds two sockets.
    let needed = 2 * config.max_sessions as u64 + 64;
    if let Some(open_files) = crate::limits::raise_open_files_limit().filter(|&n| n < needed) {
        tracing::warn!(
            "open-files limit {open_files} is below the {needed} that max-sessions {} can need: raise \
             LimitNOFILE (or ulimit -n), or lower max-sessions",
            config.max_sessions
        );
    }
    let classifier = config.classifier()?;
    tracing::info!("public suffix list: {}", classifier.suffixes().source());
    let fleet_url = config.fleet_url()?;
    // SMTP ports are bound now but listened on only once the agent is ready.
    let smtp_sockets = config.listen.iter().map(|a| server::reserve(*a, config.session_threads() > 1)).collect::<Result<Vec<_>>>()?;
    let metrics_listener = config.metrics.0.map(metrics::bind).transpose()?;
    let admin_listener = admin::server::bind(&config.admin_socket)?;
    // From here on a failure undoes what this start made (its admin socket, its pins).
    let mut undo = StartUndo::new(&config);
    let store = Store::open_guarded(&config.state_dir, &config.pin_dir)?;
    let key = store.hash_key()?;
    // The file's rules were checked above; the operator's allow entries (`helo allow add`) join them.
    let operator_allow = store.allow_entries()?;
    let classifier = if operator_allow.is_empty() {
        classifier
    } else {
        tracing::info!("allow list: {} operator entries from the store", operator_allow.len());
        Config { classifier: crate::listing::allow::merged(&config.classifier, &operator_allow), ..config.clone() }.classifier()?
    };
    let (mut filter, mode_label) = filter_for(&config, key, &classifier)?;
    let program_id = filter.program_id().unwrap_or(0);
    let ring = filter.take_events().context("the XDP object has no event ring")?;
    let kernel: Arc<Mutex<dyn Kernel>> = Arc::new(Mutex::new(filter));
    let blocklist =
        Blocklist::open(Arc::clone(&kernel), store, key, Duration::from_secs(config.helo_ttl_s), Duration::from_secs(config.source_ttl_s))?
            .with_learned_quota(config.learned_per_source_per_hour);
    let metrics = Metrics::new(mode_label, if mode_label == "off" { 0 } else { program_id }).watching_interface(config.iface.as_deref());
    metrics.set_filter_mode(config.mode);
    if fleet_url.is_some() {
        metrics.register_fleet();
    }
    let agent = Arc::new(Agent::new(config, classifier, kernel, blocklist, metrics, reread, operator_allow));
    if let Some(url) = &fleet_url {
        let name = agent.config.fleet_name.clone().unwrap_or_else(|| agent.config.hostname().to_owned());
        crate::fleet::start(Arc::clone(&agent), url, name)?;
    }
    // Started: nothing below fails the start.
    undo.disarm();
    let drops = jobs::drop_follower(&agent, ring);
    jobs::spawn_all(&agent, metrics_listener, admin_listener);
    tracing::info!(
        "accepting SMTP on {:?}, handing clean sessions to {}; metrics {}; admin socket {}",
        agent.config.listen,
        agent.config.backend,
        match agent.config.metrics.0 {
            Some(a) => format!("on http://{a}/metrics"),
            None => "off".into(),
        },
        agent.config.admin_socket.display()
    );
    let listeners = smtp_sockets.into_iter().map(|s| s.listen(1024)).collect::<std::io::Result<Vec<_>>>()?;
    let filter_status = match agent.config.iface.as_deref() {
        Some(iface) => format!("XDP on {iface} ({mode_label})"),
        None => "no XDP (user space only)".to_owned(),
    };
    let status = format!("{filter_status}, {:?} mode, SMTP on {:?}", agent.config.mode, agent.config.listen);
    Ok(Running { agent, listeners, status, drops })
}

/// The XDP program loaded, configured for `config` and attached to its interface (or not, with
/// `--no-xdp`); the label says how it is attached (`native`, `skb`, `off`).
fn filter_for(config: &Config, key: HashKey, classifier: &Classifier) -> Result<(KernelFilter, &'static str)> {
    let mut filter = KernelFilter::load(LoadOptions {
        helo_capacity: config.helo_capacity,
        pin_dir: Some(config.pin_dir.clone()),
        ..Default::default()
    })?;
    if pin::pins_outlive_process(&config.pin_dir) == Some(false) {
        tracing::warn!(
            "the bpf filesystem holding {} is private to this process's mount namespace (as under \
             `ip netns exec`, which remounts /sys): the pins, and the filter, vanish when the agent exits. \
             Run the agent in the host's mount namespace (`nsenter --net=/run/netns/NAME` keeps it), or \
             mount a shared bpffs",
            config.pin_dir.display()
        );
    }
    filter.configure(key, config.mode, &config.ports)?;
    filter.configure_ladder(config.ladder.kernel())?;
    // The allow trie is pinned: made equal to the configuration, not added to.
    let stale_allowed = filter.maps.set_allow(classifier.exempt_networks())?;
    if stale_allowed > 0 {
        tracing::info!("allow list: {stale_allowed} networks no longer configured were removed from the kernel");
    }
    let mode_label = match config.iface.as_deref() {
        Some(iface) => {
            let mode = filter.attach(iface, config.xdp_mode)?;
            tracing::info!(
                "XDP program {} attached to {iface} in {} mode; filtering ports {:?} ({:?} mode)",
                filter.program_id().unwrap_or(0),
                mode.as_str(),
                config.ports,
                config.mode
            );
            mode.as_str()
        }
        None => {
            if pin::pinned_link_mode(&config.pin_dir).is_some() {
                tracing::warn!(
                    "--no-xdp, but an XDP link is still pinned in {}: it keeps filtering with these maps \
                     (`helo detach` removes it)",
                    config.pin_dir.display()
                );
            }
            tracing::warn!("--no-xdp: nothing is dropped in the kernel; every sender is judged in user space");
            "off"
        }
    };
    Ok((filter, mode_label))
}

impl Running {
    /// The agent, for what the caller does while it runs (a reload on SIGHUP).
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// One line on what runs: the filter and where, the mode, the SMTP addresses (for `systemctl
    /// status`).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Accepts SMTP until `shutdown` completes, then drains the sessions (see [`server::serve`]);
    /// listings still queued reach the disk and the admin socket is removed before it returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Running { agent, listeners, drops, .. } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let result = server::serve(Arc::clone(&agent.sessions), listeners, stop_rx, Some(drops)).await;
        agent.client_lines.report();
        // Listings still queued (observe mode does not wait for them) reach the disk before exit.
        let blocklist = Arc::clone(&agent.blocklist);
        tokio::task::block_in_place(|| blocklist.sync());
        let admin_path: PathBuf = agent.config.admin_socket.clone();
        let _ = std::fs::remove_file(&admin_path);
        result
    }
}
