//! The drop-event ring: the kernel reports every flow whose greeting (or source) it dropped, or
//! would have dropped in observe mode. This reads the ring and turns each record into a typed
//! [`KernelDrop`]; what the agent does about one (answer and end the session, count it for `top`,
//! record a ladder listing) is its policy, above the kernel (`agent/drops.rs`).

use std::net::SocketAddr;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use helo_common::maps::{event_kind, AddrKey, DropEvent};
use tokio::io::unix::AsyncFd;

use super::addr::key_addr;

/// What a flow was dropped for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Its greeting, listed under this keyed hash.
    Greeting { hash: u64 },
    /// Its source address or network, listed.
    Source,
}

/// One drop the kernel reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelDrop {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub dropped: Dropped,
    /// The listed entry's reason code (`helo_common::maps::reason`).
    pub reason: u32,
    /// Passed, not dropped: the program runs in observe mode.
    pub observed: bool,
    /// This drop was the strike that put the source on the offender ladder: the kernel listed
    /// the source itself, and only the agent can tell the store (and the fleet).
    pub listed_source: bool,
}

impl KernelDrop {
    pub fn from_event(ev: &DropEvent) -> Self {
        let endpoint = |addr, port_be: u16| SocketAddr::new(key_addr(&AddrKey { addr }), u16::from_be(port_be));
        Self {
            client: endpoint(ev.flow.saddr(), ev.flow.sport_be),
            server: endpoint(ev.flow.daddr(), ev.flow.dport_be),
            // Anything but a greeting is a source drop, as the agent always read it.
            dropped: if ev.kind == event_kind::HELO { Dropped::Greeting { hash: ev.hash } } else { Dropped::Source },
            reason: ev.reason,
            observed: ev.observed != 0,
            listed_source: ev.listed_source != 0,
        }
    }
}

/// Reads the ring until its fd fails, handing every drop to `on_drop` in the order the kernel
/// wrote them.
pub async fn follow(ring: RingBuf<MapData>, mut on_drop: impl FnMut(KernelDrop)) -> Result<()> {
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
            on_drop(KernelDrop::from_event(&ev));
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use helo_common::maps::{event_kind, AddrKey, DropEvent, FlowKey};

    use super::{Dropped, KernelDrop};

    #[test]
    fn an_ipv4_greeting_drop_reads_as_addresses_ports_and_hash() {
        let ev = DropEvent {
            flow: FlowKey::new(
                AddrKey::from_v4([198, 18, 1, 2]).addr,
                AddrKey::from_v4([198, 18, 0, 25]).addr,
                40000u16.to_be(),
                25u16.to_be(),
            ),
            kind: event_kind::HELO,
            listed_source: 1,
            reason: 2,
            hash: 0xfeed,
            ..Default::default()
        };
        let drop = KernelDrop::from_event(&ev);
        assert_eq!(drop.client, "198.18.1.2:40000".parse().unwrap());
        assert_eq!(drop.server, "198.18.0.25:25".parse().unwrap());
        assert_eq!(drop.dropped, Dropped::Greeting { hash: 0xfeed });
        assert_eq!((drop.reason, drop.observed, drop.listed_source), (2, false, true));
    }

    #[test]
    fn an_ipv6_source_drop_keeps_its_family() {
        let client: std::net::Ipv6Addr = "2001:2::7".parse().unwrap();
        let ev = DropEvent {
            flow: FlowKey::new(client.octets(), [0; 16], 1025u16.to_be(), 0),
            kind: event_kind::SOURCE,
            observed: 1,
            hash: 0,
            ..Default::default()
        };
        let drop = KernelDrop::from_event(&ev);
        assert_eq!(drop.client, "[2001:2::7]:1025".parse().unwrap());
        assert_eq!(drop.dropped, Dropped::Source);
        assert!(drop.observed && !drop.listed_source);
    }
}
