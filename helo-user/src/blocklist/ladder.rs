//! The offender ladder, as the blocklist keeps it: strikes the agent gives in user space, and the
//! listings the kernel made itself, recorded like any other entry (store, fleet, `blocklist list`
//! with origin `ladder`).

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result};

use super::{Blocklist, Committed};
use crate::listing::{clock::mono_now_ns, reason, Origin, Target};

impl Blocklist {
    /// One strike against `ip` for a greeting the agent refused with `reply`. When it strikes out,
    /// the source is listed with that reply for the ladder's TTL.
    pub fn strike(&self, ip: IpAddr, reply: &str) -> Result<Option<Committed>> {
        let ip = ip.to_canonical();
        let ttl_ns = self.tables.kernel.lock().unwrap().strike(ip, mono_now_ns())?;
        let Some(ttl_ns) = ttl_ns else { return Ok(None) };
        tracing::info!("{ip}: listed by the offender ladder for {}s", ttl_ns / 1_000_000_000);
        let entry = self.new_entry(Target::addr(ip), reason::LADDER, reply, Some(Duration::from_nanos(ttl_ns)), Origin::Ladder);
        self.list_now(entry).map(Some)
    }

    /// Records a listing the kernel made when it dropped one greeting too many from `ip`
    /// (refused with `reply`): into the store, with the kernel's expiry.
    pub fn adopt_ladder_listing(&self, ip: IpAddr, reply: &str) -> Result<Committed> {
        let ip = ip.to_canonical();
        let kernel_entry = self.tables.kernel.lock().unwrap().source_entry(ip).context("the kernel's ladder entry is gone")?;
        let left_ns = kernel_entry.expires_mono_ns.saturating_sub(mono_now_ns()).max(1_000_000_000);
        tracing::info!("{ip}: listed by the offender ladder in the kernel for {}s", left_ns / 1_000_000_000);
        let entry = self.new_entry(Target::addr(ip), reason::LADDER, reply, Some(Duration::from_nanos(left_ns)), Origin::Ladder);
        self.list_now(entry)
    }
}
