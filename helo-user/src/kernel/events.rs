//! The drop-event ring: for every greeting the kernel dropped, end the accepted socket of that
//! flow at once (after writing the entry's reply, unless told to stay silent), so a dropped flow
//! holds no socket and the sender still learns why.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use helo_common::maps::{event_kind, DropEvent};
use tokio::io::unix::AsyncFd;

use crate::{
    blocklist::Blocklist,
    recent::RecentHits,
    registry::{Kill, Registry},
    smtp::reply,
};

fn client_addr(ev: &DropEvent) -> SocketAddr {
    let ip = Ipv6Addr::from(ev.flow.saddr);
    let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
    SocketAddr::new(ip, u16::from_be(ev.flow.sport_be))
}

/// Reads events until the ring's fd fails. `silent`: close without writing the reply.
pub async fn follow(
    ring: RingBuf<MapData>,
    registry: Arc<Registry>,
    blocklist: Arc<Blocklist>,
    recent: Arc<RecentHits>,
    silent: bool,
) -> Result<()> {
    // SAFETY: the ring owns its fd and keeps it open, unchanged, until it is dropped with the
    // AsyncFd.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("registering the event ring: {e}"))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < core::mem::size_of::<DropEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a DropEvent (repr(C), any bit pattern valid); the item is at
            // least that long.
            let ev: DropEvent = unsafe { core::ptr::read_unaligned(item.as_ptr() as *const DropEvent) };
            let client = client_addr(&ev);
            // For a greeting, one index lookup gives both what `top` shows and what the sender reads.
            let helo = (ev.kind == event_kind::HELO).then(|| blocklist.helo_listed(ev.hash));
            recent.record(match &helo {
                Some(Some((name, _))) => ("helo", name.clone()),
                Some(None) => ("helo", format!("hash {:016x}", ev.hash)),
                None => ("source", client.ip().to_string()),
            });
            if ev.listed_source != 0 {
                // This drop was the strike that put the source on the offender ladder: the kernel
                // listed it; the store (and the fleet) learn it here, with the words it was
                // refused with.
                let words = match &helo {
                    Some(Some((_, reply))) => reply.clone(),
                    _ => reply::KERNEL_DROP_DEFAULT.to_owned(),
                };
                if let Err(e) = blocklist.adopt_ladder_listing(client.ip(), &words) {
                    tracing::warn!("{}: could not record the kernel's ladder listing: {e:#}", client.ip());
                }
            }
            if ev.observed != 0 {
                continue;
            }
            let reply = (!silent).then(|| {
                let listed = match helo {
                    Some(found) => found.map(|(_, reply)| reply),
                    None => blocklist.source_refusal(client.ip()),
                };
                listed.unwrap_or_else(|| reply::KERNEL_DROP_DEFAULT.to_owned())
            });
            if registry.kill(client, Kill { reply }) {
                tracing::debug!("kernel dropped a segment of {client}; its session is closed");
            }
        }
        guard.clear_ready();
    }
}
