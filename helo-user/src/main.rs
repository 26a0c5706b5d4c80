//! `helo`: the agent's command line. Parsing, exit codes and what belongs to the process (signals,
//! the service manager) live here; the work is in the library ([`agent::start`] for `run`).

use std::{process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use clap::Parser;
use helo_user::{
    admin_cli, agent,
    agent_state::Agent,
    classify,
    cli::{Cli, Command, RunArgs},
    config::Config,
    kernel::pin,
    reload, service,
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
        Command::CheckConfig { file } => {
            match Config::from_file(&file).and_then(|c| c.validate().and(c.require_xdp_choice()).and(c.classifier()).map(|_| c)) {
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
            }
        }
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

/// `helo run`: the agent, stopped by SIGTERM or SIGINT, reloaded by SIGHUP, with systemd told
/// each step.
#[tokio::main]
async fn run(config: Config, args: RunArgs) -> Result<()> {
    // Signals are caught from the first moment: a SIGHUP during start-up is a reload once the agent
    // runs (never the default action, which kills), a SIGTERM a stop.
    let signals = Signals::install()?;
    if let Some(path) = &args.facts.config {
        for key in Config::deprecated_keys_in(path) {
            tracing::warn!("{}: deprecated spelling {key} (read as the new one; `helo check-config` lists them all)", path.display());
        }
    }
    let running = agent::start(config, move || args.clone().config()).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signals.follow(Arc::clone(running.agent()), stop_tx));
    // Only now is the start complete: the filter attached, SMTP listened on, the admin socket served.
    service::ready(running.status());
    running
        .serve(async move {
            let _ = stop_rx.await;
        })
        .await
}

/// The signals `helo run` answers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Reloads on each SIGHUP; on SIGTERM or SIGINT tells systemd and fires `stop`.
    async fn follow(mut self, agent: Arc<Agent>, stop: tokio::sync::oneshot::Sender<()>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let agent = Arc::clone(&agent);
                    service::reloading();
                    let _ = tokio::task::spawn_blocking(move || reload::reload_logged(&agent)).await;
                    service::reloaded();
                }
            }
        }
        tracing::info!("signal received: stopping (the pinned filter stays attached; `helo detach` removes it)");
        service::stopping();
        let _ = stop.send(());
    }
}
