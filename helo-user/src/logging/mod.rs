//! Where the agent's log lines go and how they look: `tracing` events, written to stderr as text
//! (the default, one line per event, no Rust module paths) or JSON (`--log-format json`), with
//! journald priorities when stderr is the journal (see [`journal`]).
//!
//! Levels, as operators read them:
//! - `error`: the agent failed at part of its job (a store or kernel write, the drop-event reader);
//! - `warn`: it goes on, degraded, or something needs an operator (a backend down, a full map);
//! - `info` (the default): start, stop, reloads, and one line per decision, with a fixed
//!   vocabulary: `session=<id> connect|reject|kernel-drop|hand-off|close ...`;
//! - `debug`: details behind those decisions.
//!
//! What a client sends never raises a line above `info`, and the client's own bytes are quoted in
//! a bounded number of lines a minute ([`client_lines`]).
//!
//! `--log-level` (or, without it, `RUST_LOG`) takes `tracing` filter directives: `debug`, or
//! `info,helo_user::fleet=debug`.

pub mod batch;
pub mod client_lines;
pub mod journal;
pub mod text;

use anyhow::{Context, Result};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: `LEVEL session=<id> word key=value ...`.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Installs the process's logger: `level` (else `RUST_LOG`, else `info`) in `format`, with
/// syslog priority prefixes when stderr is the journal. Lines of crates that log through `log`
/// (aya, redis) come through too.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<()> {
    let directives = match level {
        Some(l) => l.to_owned(),
        None => std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "info".to_owned()),
    };
    let filter = EnvFilter::try_new(&directives).with_context(|| format!("log level {directives:?}"))?;
    let journal = journal::stderr_is_journal();
    let layer = fmt::layer().with_writer(batch::Stderr).with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    // journald stamps each line itself: the text format leaves its own timestamp out there.
    match format {
        LogFormat::Text => {
            registry.with(layer.event_format(journal::Prefixed::new(text::MailOpsText { timestamps: !journal }, journal))).try_init()
        }
        LogFormat::Json => {
            let json = fmt::format().json().flatten_event(true).with_target(false).with_current_span(false).with_span_list(false);
            registry.with(layer.event_format(journal::Prefixed::new(json, journal)).fmt_fields(fmt::format::JsonFields::new())).try_init()
        }
    }
    .context("installing the logger")
}
