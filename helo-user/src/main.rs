//! `helo`: the agent's command line. Parsing and exit codes live here; the work is in the
//! library.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use helo_user::{
    admin, admin_cli,
    agent::{Agent, LiveClassifier},
    blocklist::Blocklist,
    classify,
    cli::{Cli, Command},
    config::{Config, KernelDropReply},
    kernel::{events, pin, KernelFilter, LoadOptions},
    metrics::{self, Metrics},
    periodic,
    recent::RecentHits,
    registry::Registry,
    server,
    store::Store,
};

/// Configuration mistakes exit with 2, like clap's own flag errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = helo_user::logging::init(cli.log_format, cli.log_level.as_deref()) {
        return config_error(e);
    }
    match cli.command {
        Command::Run(args) => match args.clone().config() {
            Ok(config) => match run(config, args) {
                Ok(()) => ExitCode::SUCCESS,
                // Through the logger, so that under systemd it is stored at error priority.
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => config_error(e),
        },
        Command::Classify(args) => {
            let classifier = match args.facts.config().and_then(|c| c.classifier()) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            exit_with(classify::jsonl::run_jsonl(&classifier, stdin, stdout).map_err(Into::into))
        }
        Command::Blocklist(args) => exit_with(admin_cli::blocklist(args)),
        Command::Allow(args) => exit_with(admin_cli::allow(args)),
        Command::Stats(args) => exit_with(admin_cli::stats(args)),
        Command::Top(args) => exit_with(helo_user::top::run(&args)),
        Command::Reload(args) => exit_with(admin_cli::reload(args)),
        Command::Detach { pin_dir } => exit_with(pin::remove(&pin_dir).map(|removed| {
            if removed {
                println!("removed the XDP link and the maps pinned under {}", pin_dir.display());
            } else {
                println!("nothing is pinned under {}", pin_dir.display());
            }
        })),
        Command::CheckConfig { file } => match Config::from_file(&file).and_then(|c| c.validate().and(c.classifier()).map(|_| c)) {
            Ok(c) => match toml::to_string_pretty(&c.masked()) {
                Ok(text) => {
                    for key in Config::deprecated_keys_in(&file) {
                        eprintln!("helo: warning: {}: deprecated spelling {key}", file.display());
                    }
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(e.into()),
            },
            Err(e) => config_error(e),
        },
        Command::Generate { dir } => exit_with(helo_user::generate::write_all(&dir).map(|written| {
            for path in written {
                println!("{}", path.display());
            }
        })),
    }
}

fn config_error(e: anyhow::Error) -> ExitCode {
    eprintln!("helo: configuration error: {}", format!("{e:#}").replace('\n', " "));
    ExitCode::from(EXIT_CONFIG)
}

fn exit_with(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: Config, args: helo_user::cli::RunArgs) -> Result<()> {
    // Signals are caught from the first moment: a SIGHUP during start-up is a reload once the agent
    // runs (never the default action, which kills), a SIGTERM a stop.
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        )
    };
    // A relayed session holds two sockets.
    let needed = 2 * config.max_sessions as u64 + 64;
    if let Some(open_files) = helo_user::limits::raise_open_files_limit().filter(|&n| n < needed) {
        tracing::warn!(
            "open-files limit {open_files} is below the {needed} that max-sessions {} can need: raise \
             LimitNOFILE (or ulimit -n), or lower max-sessions",
            config.max_sessions
        );
    }
    // The file's rules are checked now; the operator's allow entries join them once the store is open.
    let classifier = config.classifier()?;
    if let Some(path) = &args.facts.config {
        for key in Config::deprecated_keys_in(path) {
            tracing::warn!("{}: deprecated spelling {key} (read as the new one; `helo check-config` lists them all)", path.display());
        }
    }
    tracing::info!("public suffix list: {}", classifier.suffixes().source());
    let fleet_url = config.fleet_url()?;
    // Everything that can fail for want of a port or a path is taken before the kernel is touched:
    // a start that fails here leaves the box exactly as it was.
    // SMTP ports are bound now but listened on only once the agent is ready.
    let smtp_sockets = config.listen.iter().map(|a| server::reserve(*a, config.session_threads() > 1)).collect::<Result<Vec<_>>>()?;
    let metrics_listener = config.metrics.0.map(metrics::bind).transpose()?;
    let admin_listener = admin::server::bind(&config.admin_socket)?;
    let admin_path = config.admin_socket.clone();
    // From here on a failure undoes what this start made (its admin socket, its pins).
    let mut undo = StartUndo::new(&config);
    let store = Store::open_guarded(&config.state_dir, &config.pin_dir)?;
    let key = store.hash_key()?;
    let operator_allow = store.allow_entries()?;
    let classifier = if operator_allow.is_empty() {
        classifier
    } else {
        tracing::info!("allow list: {} operator entries from the store", operator_allow.len());
        Config { classifier: helo_user::allow::merged(&config.classifier, &operator_allow), ..config.clone() }.classifier()?
    };
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
    let program_id = filter.program_id().unwrap_or(0);
    let ring = filter.take_events().context("the XDP object has no event ring")?;
    let kernel = Arc::new(Mutex::new(filter));
    let blocklist = Arc::new(
        Blocklist::open(Arc::clone(&kernel), store, key, Duration::from_secs(config.helo_ttl_s), Duration::from_secs(config.source_ttl_s))?
            .with_learned_quota(config.learned_per_source_per_hour),
    );
    let metrics =
        Arc::new(Metrics::new(mode_label, if mode_label == "off" { 0 } else { program_id }).watching_interface(config.iface.as_deref()));
    metrics.set_filter_mode(config.mode);
    if fleet_url.is_some() {
        metrics.register_fleet();
    }
    let registry = Arc::new(Registry::default());
    let recent = Arc::new(RecentHits::default());
    let silent = config.kernel_drop_reply == KernelDropReply::Silent;
    let reloader = helo_user::reload::Reloader::new(move || args.clone().config(), config.clone(), operator_allow);
    let load =
        Arc::new(helo_user::load::Load::new(config.max_sessions, config.stress_percent, Duration::from_secs(config.timeouts.stress_s)));
    let client_lines = helo_user::logging::client_lines::ClientLines::new(config.log_client_lines_per_minute);
    let reply_footer = std::sync::RwLock::new(config.reply_footer.clone());
    let agent = Arc::new(Agent {
        load,
        config,
        classifier: LiveClassifier::new(classifier),
        kernel: Arc::clone(&kernel),
        blocklist: Arc::clone(&blocklist),
        registry: Arc::clone(&registry),
        metrics: Arc::clone(&metrics),
        recent: Arc::clone(&recent),
        reloader,
        client_lines,
        reply_footer,
        backend: Default::default(),
    });
    if let Some(url) = &fleet_url {
        let name = agent.config.fleet_name.clone().unwrap_or_else(|| agent.config.hostname().to_owned());
        helo_user::fleet::start(Arc::clone(&agent), url, name)?;
    }
    // Started: nothing below fails the start.
    undo.disarm();
    tokio::spawn({
        let (registry, blocklist, recent) = (Arc::clone(&registry), Arc::clone(&blocklist), Arc::clone(&recent));
        async move {
            if let Err(e) = events::follow(ring, registry, blocklist, recent, silent).await {
                tracing::error!("drop events stopped: {e:#}");
            }
        }
    });
    if let Some(listener) = metrics_listener {
        let (metrics, kernel, blocklist) = (Arc::clone(&metrics), Arc::clone(&kernel), Arc::clone(&blocklist));
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_on(listener, metrics, kernel, blocklist).await {
                tracing::error!("metrics endpoint stopped: {e:#}");
            }
        });
    }
    periodic::every(Duration::from_secs(agent.config.expire_interval_s), Arc::clone(&blocklist), "expiry", |b| {
        b.expire().map(|n| {
            if n > 0 {
                tracing::info!("blocklist: {n} entries expired")
            }
        })
    });
    periodic::every(Duration::from_secs(agent.config.reconcile_interval_s), Arc::clone(&blocklist), "reconcile", |b| {
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
    tokio::spawn(admin::server::serve(admin_listener, Arc::clone(&agent)));
    tokio::spawn({
        let agent = Arc::clone(&agent);
        async move {
            let mut minute = tokio::time::interval(Duration::from_secs(60));
            minute.tick().await;
            loop {
                minute.tick().await;
                agent.client_lines.report();
            }
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let (mut term, mut int, mut hup) = signals;
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        let agent = Arc::clone(&agent);
                        helo_user::service::reloading();
                        let _ = tokio::task::spawn_blocking(move || helo_user::reload::reload_logged(&agent)).await;
                        helo_user::service::reloaded();
                    }
                }
            }
            tracing::info!("signal received: stopping (the pinned filter stays attached; `helo detach` removes it)");
            helo_user::service::stopping();
            let _ = stop_tx.send(true);
        });
    }
    tracing::info!(
        "accepting SMTP on {:?}, handing clean sessions to {}; metrics {}; admin socket {}",
        agent.config.listen,
        agent.config.backend,
        match agent.config.metrics.0 {
            Some(a) => format!("on http://{a}/metrics"),
            None => "off".into(),
        },
        admin_path.display()
    );
    let listeners = smtp_sockets.into_iter().map(|s| s.listen(1024)).collect::<std::io::Result<Vec<_>>>()?;
    // Only now is the start complete: the filter attached, SMTP listened on, the admin socket served.
    let filter_status = match agent.config.iface.as_deref() {
        Some(iface) => format!("XDP on {iface} ({mode_label})"),
        None => "no XDP (user space only)".to_owned(),
    };
    helo_user::service::ready(&format!("{filter_status}, {:?} mode, SMTP on {:?}", agent.config.mode, agent.config.listen));
    let blocklist = Arc::clone(&agent.blocklist);
    let result = server::serve(Arc::clone(&agent), listeners, stop_rx).await;
    agent.client_lines.report();
    // Listings still queued (observe mode does not wait for them) reach the disk before exit.
    tokio::task::block_in_place(|| blocklist.sync());
    let _ = std::fs::remove_file(&admin_path);
    result
}

/// Undoes a start that failed after the kernel was touched: pins this start created are removed
/// (a filter it attached and pinned is detached with them), and the admin socket goes.
struct StartUndo {
    pin_dir: std::path::PathBuf,
    admin_socket: std::path::PathBuf,
    /// Nothing was pinned before: whatever is there now is this start's.
    pins_were_absent: bool,
    armed: bool,
}

impl StartUndo {
    fn new(config: &Config) -> Self {
        let pins_were_absent = std::fs::read_dir(&config.pin_dir).map(|mut d| d.next().is_none()).unwrap_or(true);
        Self { pin_dir: config.pin_dir.clone(), admin_socket: config.admin_socket.clone(), pins_were_absent, armed: true }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for StartUndo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = std::fs::remove_file(&self.admin_socket);
        if self.pins_were_absent {
            match pin::remove(&self.pin_dir) {
                Ok(true) => {
                    tracing::warn!("start failed: removed what it had pinned in {} (no filter is left attached)", self.pin_dir.display())
                }
                Ok(false) => {}
                Err(e) => tracing::error!("start failed, and removing its pins in {} failed too: {e:#}", self.pin_dir.display()),
            }
        } else {
            tracing::warn!(
                "start failed: the pins in {} were there before this start and stay (the filter keeps running on them)",
                self.pin_dir.display()
            );
        }
    }
}
