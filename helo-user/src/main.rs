//! `helo-user`: the agent's command line. Parsing and exit codes live here; the work is in the
//! library.

use std::{process::ExitCode, sync::{Arc, Mutex}};

use anyhow::{Context, Result};
use clap::Parser;
use helo_user::{
    agent::Agent,
    blocklist::Blocklist,
    classify,
    cli::{Cli, Command},
    config::{Config, KernelDropReply},
    kernel::{events, KernelFilter, LoadOptions},
    registry::Registry,
    server, state,
};

/// Configuration mistakes exit with 2, like clap's own flag errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = match args.config() {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            exit_with(run(config))
        }
        Command::Classify(args) => {
            let config = match args.facts.config() {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            let classifier = match config.classifier() {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            exit_with(classify::jsonl::run_jsonl(&classifier, stdin, stdout).map_err(Into::into))
        }
    }
}

fn config_error(e: anyhow::Error) -> ExitCode {
    eprintln!("helo-user: configuration error: {e:#}");
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
    let classifier = config.classifier()?;
    let key = state::load_or_create_key(&config.state_dir)?;
    let mut filter = KernelFilter::load(LoadOptions { helo_capacity: config.helo_capacity, ..Default::default() })?;
    filter.configure(key, config.mode, &config.ports)?;
    for net in classifier.exempt_networks() {
        filter.maps.allow(net.addr(), net.prefix_len())?;
    }
    let iface = config.iface.clone().expect("validated");
    let mode = filter.attach(&iface, config.xdp_mode)?;
    log::info!(
        "XDP program {} attached to {iface} in {} mode; filtering ports {:?} ({:?} mode)",
        filter.program_id().unwrap_or(0),
        mode.as_str(),
        config.ports,
        config.mode
    );
    let ring = filter.take_events().context("the XDP object has no event ring")?;
    let kernel = Arc::new(Mutex::new(filter));
    let blocklist = Arc::new(Blocklist::new(
        Arc::clone(&kernel),
        key,
        std::time::Duration::from_secs(config.helo_ttl_s),
        std::time::Duration::from_secs(config.source_ttl_s),
    ));
    let registry = Arc::new(Registry::default());
    let listeners = config.listen.iter().map(|a| server::bind(*a)).collect::<Result<Vec<_>>>()?;
    let silent = config.kernel_drop_reply == KernelDropReply::Silent;
    tokio::spawn({
        let (registry, blocklist) = (Arc::clone(&registry), Arc::clone(&blocklist));
        async move {
            if let Err(e) = events::follow(ring, registry, blocklist, silent).await {
                log::error!("drop events stopped: {e:#}");
            }
        }
    });
    let agent = Arc::new(Agent { config, classifier, kernel, blocklist, registry });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        log::info!("signal received: stopping");
        let _ = stop_tx.send(true);
    });
    log::info!("accepting SMTP on {:?}, handing clean sessions to {}", agent.config.listen, agent.config.backend);
    server::serve(agent, listeners, stop_rx).await
}

