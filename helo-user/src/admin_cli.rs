//! What `helo blocklist …`, `helo allow …` and `helo stats` print: tables for people, JSON for tools.

use std::{io::BufRead, net::IpAddr, time::Duration};

use anyhow::{Context, Result};

use crate::{
    admin::{client::call_with_config, protocol::Request},
    blocklist::EntryHits,
    cli::{AdminArgs, AllowArgs, AllowCommand, BlocklistArgs, BlocklistCommand, KindArg, StatsArgs},
    listing::{clock::unix_now, Entry, Kind},
};

fn kind(arg: Option<KindArg>, name: &str) -> Kind {
    match arg {
        Some(KindArg::Helo) => Kind::Helo,
        Some(KindArg::Source) => Kind::Source,
        None if name.split('/').next().unwrap_or(name).parse::<IpAddr>().is_ok() => Kind::Source,
        None => Kind::Helo,
    }
}

fn when(unix_s: u64) -> String {
    if unix_s == 0 {
        return "-".into();
    }
    let now = unix_now();
    if unix_s > now {
        format!("in {}", humantime::format_duration(Duration::from_secs(unix_s - now)))
    } else {
        format!("{} ago", humantime::format_duration(Duration::from_secs(now - unix_s)))
    }
}

fn print_table(entries: &[EntryHits]) {
    println!(
        "{:<6} {:<40} {:<18} {:<8} {:<14} {:<16} {:>8} {:<14}",
        "KIND", "NAME", "REASON", "ORIGIN", "ADDED", "EXPIRES", "HITS", "LAST HIT"
    );
    for l in entries {
        let e = &l.entry;
        let expires = if e.expires_unix_s == 0 { "never".into() } else { when(e.expires_unix_s) };
        println!(
            "{:<6} {:<40} {:<18} {:<8} {:<14} {:<16} {:>8} {:<14}",
            e.kind().as_str(),
            e.name(),
            e.reason,
            e.origin,
            when(e.added_unix_s),
            expires,
            l.hits,
            when(l.last_hit_unix_s)
        );
    }
}

/// Reads a JSON Lines file of entries; the first bad line is an error naming it, and then nothing
/// is sent.
fn read_entries(path: &std::path::Path) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut entries = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str::<EntryHits>(&line)
            .map(|l| l.entry)
            .or_else(|_| serde_json::from_str::<Entry>(&line))
            .with_context(|| format!("{} line {}: not a blocklist entry", path.display(), i + 1))?;
        entry.validate().with_context(|| format!("{} line {}", path.display(), i + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

fn call_admin(a: &AdminArgs, req: Request) -> Result<crate::admin::protocol::Response> {
    let (socket, state_dir) = a.resolve()?;
    let file = a.config.as_deref().map(crate::config::Config::from_file).transpose()?;
    let resp = call_with_config(&socket, &state_dir, &a.resolve_pin_dir()?, file.as_ref().map(|c| &c.classifier), req)?;
    if let Some(note) = &resp.note {
        eprintln!("{note}");
    }
    Ok(resp)
}

pub fn reload(args: crate::cli::ReloadArgs) -> Result<()> {
    let resp = call_admin(&args.admin, Request::Reload)?;
    println!("{}", resp.message.unwrap_or_else(|| "configuration reloaded".into()));
    Ok(())
}

pub fn blocklist(args: BlocklistArgs) -> Result<()> {
    let a = &args.admin;
    match args.command {
        BlocklistCommand::List { json } => {
            let entries = call_admin(a, Request::List)?.entries.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_table(&entries);
            }
        }
        BlocklistCommand::Export => {
            for l in call_admin(a, Request::List)?.entries.unwrap_or_default() {
                println!("{}", serde_json::to_string(&l.entry)?);
            }
        }
        BlocklistCommand::Add { name, kind: k, ttl, reason, reply } => {
            let kind = kind(k, &name);
            call_admin(a, Request::Add { kind, name: name.clone(), ttl_s: ttl, reason, reply })?;
            println!("added {} {name}", kind.as_str());
        }
        BlocklistCommand::Del { name, kind: k, fleet } => {
            let kind = kind(k, &name);
            call_admin(a, Request::Del { kind, name: name.clone(), fleet })?;
            println!("removed {} {name}{}", kind.as_str(), if fleet { " fleet-wide" } else { "" });
        }
        BlocklistCommand::Get { name, kind: k } => {
            let kind = kind(k, &name);
            let found = call_admin(a, Request::Get { kind, name: name.clone() })?.entries.unwrap_or_default();
            if found.is_empty() {
                anyhow::bail!("{} {name} is not listed", kind.as_str());
            }
            print_table(&found);
        }
        BlocklistCommand::Flush => {
            let n = call_admin(a, Request::Flush)?.count.unwrap_or(0);
            println!("removed {n} entries");
        }
        BlocklistCommand::Import { file } => {
            let entries = read_entries(&file)?;
            let n = call_admin(a, Request::Import { entries })?.count.unwrap_or(0);
            println!("imported {n} entries");
        }
    }
    Ok(())
}

pub fn allow(args: AllowArgs) -> Result<()> {
    let a = &args.admin;
    match args.command {
        AllowCommand::List { json } => {
            let allowed = call_admin(a, Request::AllowList)?.allowed.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&allowed)?);
            } else {
                println!("{:<5} {:<44} {:<9} {:<14}", "KIND", "VALUE", "ORIGIN", "ADDED");
                for e in &allowed {
                    println!("{:<5} {:<44} {:<9} {:<14}", e.kind.as_str(), e.value, e.origin.as_str(), when(e.added_unix_s));
                }
            }
        }
        AllowCommand::Add { value, kind } => {
            let resp = call_admin(a, Request::AllowAdd { value: value.clone(), kind })?;
            println!("{}", resp.message.unwrap_or_else(|| format!("allowed {value}")));
        }
        AllowCommand::Del { value, kind } => {
            let resp = call_admin(a, Request::AllowDel { value: value.clone(), kind })?;
            println!("{}", resp.message.unwrap_or_else(|| format!("removed {value} from the allow list")));
        }
    }
    Ok(())
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let first = call_admin(&args.admin, Request::Stats)?.stats.context("no stats in the answer")?;
    std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
    let second = call_admin(&args.admin, Request::Stats)?.stats.context("no stats in the answer")?;
    println!("XDP program {} ({} mode)", second.program_id, second.xdp_mode);
    println!("sessions: {} total, {} active", second.sessions_total, second.sessions_active);
    println!(
        "blocklist: {} helo, {} source; {} added, {} removed, {} expired",
        second.helo_entries, second.source_entries, second.changes.added, second.changes.removed, second.changes.expired
    );
    println!("{:<24} {:>14} {:>12}", "KERNEL OUTCOME", "TOTAL", "PER SECOND");
    for (name, total) in &second.kernel {
        let before = first.kernel.get(name).copied().unwrap_or(0);
        let rate = total.saturating_sub(before) as f64 / args.interval.max(0.1);
        println!("{name:<24} {total:>14} {rate:>12.1}");
    }
    Ok(())
}
