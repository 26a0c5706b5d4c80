//! `helo-user`: the agent's command line. Parsing and exit codes live here; the work is in the
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
    agent::Agent,
    blocklist::Blocklist,
    classify,
    cli::{Cli, Command},
    config::{Config, KernelDropReply},
    kernel::{events, pin, KernelFilter, LoadOptions},
    metrics::{self, Metrics},
    recent::RecentHits,
    registry::Registry,
    server,
    store::Store,
};

/// Configuration mistakes exit with 2, like clap's own flag errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match args.config() {
            Ok(config) => exit_with(run(config)),
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
        Command::Stats(args) => exit_with(admin_cli::stats(args)),
        Command::Top(args) => exit_with(helo_user::top::run(&args)),
        Command::Detach { pin_dir } => exit_with(pin::remove(&pin_dir).map(|removed| {
            if removed {
                println!("removed the XDP link and the maps pinned under {}", pin_dir.display());
            } else {
                println!("nothing is pinned under {}", pin_dir.display());
            }
        })),
        Command::CheckConfig { file } => {
            match Config::from_file(&file).and_then(|c| c.validate().and(c.classifier()).map(|_| c)) {
                Ok(c) => match toml::to_string_pretty(&c) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => config_error(e.into()),
                },
                Err(e) => config_error(e),
            }
        }
    }
}

fn config_error(e: anyhow::Error) -> ExitCode {
    eprintln!("helo-user: configuration error: {}", format!("{e:#}").replace('\n', " "));
    ExitCode::from(EXIT_CONFIG)
}

fn exit_with(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helo-user: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: Config) -> Result<()> {
    // A relayed session holds two sockets.
    let needed = 2 * config.max_sessions as u64 + 64;
    if let Some(open_files) = helo_user::limits::raise_open_files_limit().filter(|&n| n < needed) {
        log::warn!(
            "open-files limit {open_files} is below the {needed} that max-sessions {} can need: raise \
             LimitNOFILE (or ulimit -n), or lower max-sessions",
            config.max_sessions
        );
    }
    let classifier = config.classifier()?;
    let store = Store::open_guarded(&config.state_dir, &config.pin_dir)?;
    let key = store.hash_key()?;
    let mut filter = KernelFilter::load(LoadOptions {
        helo_capacity: config.helo_capacity,
        pin_dir: Some(config.pin_dir.clone()),
        ..Default::default()
    })?;
    filter.configure(key, config.mode, &config.ports)?;
    // The allow trie is pinned: made equal to the configuration, not added to.
    let stale_allowed = filter.maps.set_allow(classifier.exempt_networks())?;
    if stale_allowed > 0 {
        log::info!("allow list: {stale_allowed} networks no longer configured were removed from the kernel");
    }
    let mode_label = match config.iface.as_deref() {
        Some(iface) => {
            let mode = filter.attach(iface, config.xdp_mode)?;
            log::info!(
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
                log::warn!(
                    "--no-xdp, but an XDP link is still pinned in {}: it keeps filtering with these maps \
                     (`helo-user detach` removes it)",
                    config.pin_dir.display()
                );
            }
            log::warn!("--no-xdp: nothing is dropped in the kernel; every sender is judged in user space");
            "off"
        }
    };
    let program_id = filter.program_id().unwrap_or(0);
    let ring = filter.take_events().context("the XDP object has no event ring")?;
    let kernel = Arc::new(Mutex::new(filter));
    let blocklist = Arc::new(Blocklist::open(
        Arc::clone(&kernel),
        store,
        key,
        Duration::from_secs(config.helo_ttl_s),
        Duration::from_secs(config.source_ttl_s),
    )?);
    let metrics = Arc::new(Metrics::new(mode_label, program_id));
    let registry = Arc::new(Registry::default());
    let recent = Arc::new(RecentHits::default());
    let listeners = config.listen.iter().map(|a| server::bind(*a)).collect::<Result<Vec<_>>>()?;
    let admin_listener = admin::server::bind(&config.admin_socket)?;
    let silent = config.kernel_drop_reply == KernelDropReply::Silent;
    tokio::spawn({
        let (registry, blocklist, recent) = (Arc::clone(&registry), Arc::clone(&blocklist), Arc::clone(&recent));
        async move {
            if let Err(e) = events::follow(ring, registry, blocklist, recent, silent).await {
                log::error!("drop events stopped: {e:#}");
            }
        }
    });
    tokio::spawn({
        let (metrics, kernel, blocklist, addr) = (Arc::clone(&metrics), Arc::clone(&kernel), Arc::clone(&blocklist), config.metrics);
        async move {
            if let Err(e) = metrics::serve(addr, metrics, kernel, blocklist).await {
                log::error!("metrics endpoint stopped: {e:#}");
            }
        }
    });
    periodically(Duration::from_secs(config.expire_interval_s), Arc::clone(&blocklist), "expiry", |b| {
        b.expire().map(|n| if n > 0 { log::info!("blocklist: {n} entries expired") })
    });
    periodically(Duration::from_secs(config.reconcile_interval_s), Arc::clone(&blocklist), "reconcile", |b| {
        b.reconcile().map(|(evicted, restored, ghosts)| {
            if evicted + restored > 0 {
                log::warn!(
                    "blocklist: the kernel's full maps evicted {evicted} agent listings (dropped) and {restored} operator \
                     or fleet entries (put back); raise helo-capacity?"
                )
            }
            if ghosts > 0 {
                log::warn!("blocklist: {ghosts} kernel entries the store did not hold were removed")
            }
        })
    });
    let admin_path = config.admin_socket.clone();
    let agent = Arc::new(Agent { config, classifier, kernel, blocklist, registry, metrics, recent });
    tokio::spawn(admin::server::serve(admin_listener, Arc::clone(&agent)));
    if let Some(url) = agent.config.fleet.clone() {
        let name = agent.config.fleet_name.clone().unwrap_or_else(|| agent.config.hostname().to_owned());
        helo_user::fleet::start(Arc::clone(&agent), &url, name)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        log::info!("signal received: stopping (the pinned filter stays attached; `helo-user detach` removes it)");
        let _ = stop_tx.send(true);
    });
    log::info!(
        "accepting SMTP on {:?}, handing clean sessions to {}; metrics on http://{}/metrics; admin socket {}",
        agent.config.listen,
        agent.config.backend,
        agent.config.metrics,
        admin_path.display()
    );
    let blocklist = Arc::clone(&agent.blocklist);
    let result = server::serve(agent, listeners, stop_rx).await;
    // Listings still queued (observe mode does not wait for them) reach the disk before exit.
    tokio::task::block_in_place(|| blocklist.sync());
    let _ = std::fs::remove_file(&admin_path);
    result
}

/// Runs `job` on the blocklist every `every` (first after one interval), off the async threads:
/// it walks the store and the kernel maps.
fn periodically(every: Duration, blocklist: Arc<Blocklist>, what: &'static str, job: fn(&Blocklist) -> Result<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let b = Arc::clone(&blocklist);
            match tokio::task::spawn_blocking(move || job(&b)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("blocklist {what} failed: {e:#}"),
                Err(e) => log::error!("blocklist {what} panicked: {e}"),
            }
        }
    });
}
