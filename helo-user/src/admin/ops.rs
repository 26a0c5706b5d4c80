//! The operations behind `helo blocklist …`, on the live blocklist (agent running: store and
//! kernel together) or offline (agent stopped: the store and the maps still pinned, if any).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::protocol::{Request, Response};
use crate::{
    blocklist::{offline::Offline, Blocklist, Listed},
    listing::{self, Entry, Kind, Origin},
    smtp::reply::KERNEL_DROP_DEFAULT,
    store::FleetChange,
};

pub enum Target<'a> {
    Live(&'a Blocklist),
    Offline(&'a mut Offline),
}

fn entry_for(
    kind: Kind,
    name: &str,
    ttl_s: Option<u64>,
    reason: Option<String>,
    reply: Option<String>,
    default_ttl: Duration,
) -> Result<Entry> {
    let name = match kind {
        Kind::Helo => listing::name::from_operator(name)?,
        Kind::Source => match name.parse::<ipnet::IpNet>() {
            // A /32 or /128 is one address, kept in the cheaper exact map.
            Ok(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_canonical().to_string(),
            Ok(net) if net != net.trunc() => bail!("{name} has host bits set; did you mean {}?", net.trunc()),
            Ok(net) => net.to_string(),
            Err(_) => name
                .parse::<std::net::IpAddr>()
                .with_context(|| format!("{name:?} is not an address or a CIDR"))?
                .to_canonical()
                .to_string(),
        },
    };
    let ttl = ttl_s.map(Duration::from_secs).unwrap_or(default_ttl);
    let e = Entry::new(
        kind,
        name,
        reason.as_deref().unwrap_or(listing::reason::OPERATOR),
        reply.as_deref().unwrap_or(KERNEL_DROP_DEFAULT),
        ttl,
        Origin::Operator,
    );
    e.validate()?;
    Ok(e)
}

/// The default time to live for an entry of `kind` when the agent is not there to say.
const OFFLINE_TTL: [Duration; 2] = [Duration::from_secs(7 * 24 * 3600), Duration::from_secs(24 * 3600)];

pub fn handle(target: Target<'_>, req: Request) -> Result<Response> {
    let ok = |count: usize, target: &Target<'_>| Response {
        ok: true,
        count: Some(count),
        note: match target {
            Target::Offline(o) => Some(o.note()),
            Target::Live(_) => None,
        },
        ..Default::default()
    };
    match (req, target) {
        (Request::List, Target::Live(b)) => Ok(Response { ok: true, entries: Some(b.list()?), ..Default::default() }),
        (Request::List, Target::Offline(o)) => Ok(Response {
            ok: true,
            entries: Some(o.store.entries()?.into_iter().map(|entry| Listed { entry, hits: 0, last_hit_unix_s: 0 }).collect()),
            ..Default::default()
        }),
        (Request::Add { kind, name, ttl_s, reason, reply }, mut target) => {
            let default_ttl = match (&target, kind) {
                (Target::Live(b), kind) => b.default_ttl(kind),
                (Target::Offline(_), Kind::Helo) => OFFLINE_TTL[0],
                (Target::Offline(_), Kind::Source) => OFFLINE_TTL[1],
            };
            let e = entry_for(kind, &name, ttl_s, reason, reply, default_ttl)?;
            match &mut target {
                Target::Live(b) => b.add_all(&[e])?,
                Target::Offline(o) => o.add_all(&[e])?,
            }
            Ok(ok(1, &target))
        }
        (Request::Del { kind, name, fleet }, mut target) => {
            let probe = entry_for(kind, &name, Some(0), None, None, Duration::ZERO)?;
            let keys = [probe.key()];
            let store = match &target {
                Target::Live(b) => b.store(),
                Target::Offline(o) => &o.store,
            };
            if fleet {
                // Queued even if not listed here: another box may have it.
                store.queue(&FleetChange::Del { kind, name: probe.name.clone() })?;
                if let Target::Live(b) = &target {
                    b.outbox_ready.notify_one();
                }
            }
            let n = match &mut target {
                Target::Live(b) => b.remove(&keys)?.len(),
                Target::Offline(o) => o.remove(&probe)?,
            };
            if n == 0 && !fleet {
                bail!("{} is not listed", probe.key());
            }
            Ok(ok(n, &target))
        }
        (Request::Get { kind, name }, target) => {
            let probe = entry_for(kind, &name, Some(0), None, None, Duration::ZERO)?;
            let found = match target {
                Target::Live(b) => b.get(kind, &probe.name)?,
                Target::Offline(o) => o.store.get(&probe.key())?.map(|entry| Listed { entry, hits: 0, last_hit_unix_s: 0 }),
            };
            Ok(Response { ok: true, entries: Some(found.into_iter().collect()), ..Default::default() })
        }
        (Request::Flush, mut target) => {
            let n = match &mut target {
                Target::Live(b) => b.flush()?,
                Target::Offline(o) => o.flush()?,
            };
            Ok(ok(n, &target))
        }
        (Request::Import { entries }, mut target) => {
            // All or nothing: every entry is checked before any is written.
            for (i, e) in entries.iter().enumerate() {
                e.validate().map_err(|err| anyhow::anyhow!("entry {}: {err:#}", i + 1))?;
            }
            match &mut target {
                Target::Live(b) => b.add_all(&entries)?,
                Target::Offline(o) => o.add_all(&entries)?,
            }
            Ok(ok(entries.len(), &target))
        }
        (Request::Stats, Target::Offline(_)) => bail!("stats need a running agent"),
        (Request::Reload, Target::Offline(_)) => bail!("no agent is running: nothing to reload"),
        (Request::AllowList | Request::AllowAdd { .. } | Request::AllowDel { .. }, Target::Offline(_)) => {
            unreachable!("answered by allow::offline")
        }
        (Request::Stats | Request::Reload | Request::AllowList | Request::AllowAdd { .. } | Request::AllowDel { .. }, Target::Live(_)) => {
            unreachable!("answered by the server")
        }
    }
}
