//! The operations behind `helo blocklist …`, on the live blocklist (agent running: store and
//! kernel together) or offline (agent stopped: the store and the maps still pinned, if any).

use std::time::Duration;

use anyhow::{bail, Result};

use super::protocol::{Request, Response};
use crate::{
    blocklist::{offline::Offline, Blocklist, EntryHits},
    listing::{self, Entry, Kind, Origin, Target},
    smtp::reply::KERNEL_DROP_DEFAULT,
    store::FleetChange,
};

/// Where an operation applies.
pub enum Where<'a> {
    Live(&'a Blocklist),
    Offline(&'a mut Offline),
}

/// An operator's entry for `target`.
fn entry_for(target: Target, ttl_s: Option<u64>, reason: Option<String>, reply: Option<String>, default_ttl: Duration) -> Result<Entry> {
    let ttl = ttl_s.map(Duration::from_secs).unwrap_or(default_ttl);
    let e = Entry::new(
        target,
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

pub fn handle(at: Where<'_>, req: Request) -> Result<Response> {
    let ok = |count: usize, at: &Where<'_>| Response {
        ok: true,
        count: Some(count),
        note: match at {
            Where::Offline(o) => Some(o.note()),
            Where::Live(_) => None,
        },
        ..Default::default()
    };
    match (req, at) {
        (Request::List, Where::Live(b)) => Ok(Response { ok: true, entries: Some(b.list()?), ..Default::default() }),
        (Request::List, Where::Offline(o)) => Ok(Response {
            ok: true,
            entries: Some(o.store.entries()?.into_iter().map(|entry| EntryHits { entry, hits: 0, last_hit_unix_s: 0 }).collect()),
            ..Default::default()
        }),
        (Request::Add { kind, name, ttl_s, reason, reply }, mut at) => {
            let default_ttl = match (&at, kind) {
                (Where::Live(b), kind) => b.default_ttl(kind),
                (Where::Offline(_), Kind::Helo) => OFFLINE_TTL[0],
                (Where::Offline(_), Kind::Source) => OFFLINE_TTL[1],
            };
            let e = entry_for(Target::from_operator(kind, &name)?, ttl_s, reason, reply, default_ttl)?;
            match &mut at {
                Where::Live(b) => b.add_all(&[e])?,
                Where::Offline(o) => o.add_all(&[e])?,
            }
            Ok(ok(1, &at))
        }
        (Request::Del { kind, name, fleet }, mut at) => {
            let probe = Target::from_operator(kind, &name)?;
            probe.validate()?;
            let keys = [probe.key()];
            let store = match &at {
                Where::Live(b) => b.store(),
                Where::Offline(o) => &o.store,
            };
            if fleet {
                // Queued even if not listed here: another box may have it.
                store.queue(&FleetChange::Del { kind, name: probe.name().to_owned() })?;
                if let Where::Live(b) = &at {
                    b.outbox_ready.notify_one();
                }
            }
            let n = match &mut at {
                Where::Live(b) => b.remove(&keys)?.len(),
                Where::Offline(o) => o.remove(&probe)?,
            };
            if n == 0 && !fleet {
                bail!("{} is not listed", probe.key());
            }
            Ok(ok(n, &at))
        }
        (Request::Get { kind, name }, at) => {
            let probe = Target::from_operator(kind, &name)?;
            probe.validate()?;
            let found = match at {
                Where::Live(b) => b.get(&probe)?,
                Where::Offline(o) => o.store.get(&probe.key())?.map(|entry| EntryHits { entry, hits: 0, last_hit_unix_s: 0 }),
            };
            Ok(Response { ok: true, entries: Some(found.into_iter().collect()), ..Default::default() })
        }
        (Request::Flush, mut at) => {
            let n = match &mut at {
                Where::Live(b) => b.flush()?,
                Where::Offline(o) => o.flush()?,
            };
            Ok(ok(n, &at))
        }
        (Request::Import { entries }, mut at) => {
            // All or nothing: every entry is checked before any is written.
            for (i, e) in entries.iter().enumerate() {
                e.validate().map_err(|err| anyhow::anyhow!("entry {}: {err:#}", i + 1))?;
            }
            match &mut at {
                Where::Live(b) => b.add_all(&entries)?,
                Where::Offline(o) => o.add_all(&entries)?,
            }
            Ok(ok(entries.len(), &at))
        }
        (Request::Stats, Where::Offline(_)) => bail!("stats need a running agent"),
        (Request::Reload, Where::Offline(_)) => bail!("no agent is running: nothing to reload"),
        (Request::AllowList | Request::AllowAdd { .. } | Request::AllowDel { .. }, Where::Offline(_)) => {
            unreachable!("answered by allow::offline")
        }
        (Request::Stats | Request::Reload | Request::AllowList | Request::AllowAdd { .. } | Request::AllowDel { .. }, Where::Live(_)) => {
            unreachable!("answered by the server")
        }
    }
}
