//! The drop policy over a whole agent in process (`agent_state/in_process.rs`): the in-memory
//! kernel, a real store, the real registry and blocklist; the drops are the typed events the
//! kernel's ring is read into.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::sync::oneshot::error::TryRecvError;

use super::DropPolicy;
use crate::{
    agent_state::in_process::{self, InProcess},
    blocklist::kernel_side::helo_hash,
    kernel::events::{Dropped, KernelDrop},
    listing::{Origin, Target},
    smtp::reply::KERNEL_DROP_DEFAULT,
};

const WORDS: &str = "550 5.7.1 rad.internal is not a name on the Internet";

fn rig() -> Result<InProcess> {
    let rig = in_process::agent(in_process::nowhere(), |_| {})?;
    let entry = rig.agent.blocklist.new_entry(Target::greeting("rad.internal".into()), "bogus_helo", WORDS, None, Origin::Operator);
    rig.agent.blocklist.add_all(&[entry])?;
    Ok(rig)
}

fn policy(rig: &InProcess, silent: bool) -> DropPolicy {
    let agent = &rig.agent;
    DropPolicy { registry: agent.registry.clone(), blocklist: agent.blocklist.clone(), recent: agent.recent.clone(), silent }
}

fn greeting_drop(rig: &InProcess, client: SocketAddr, name: &str) -> Result<KernelDrop> {
    Ok(KernelDrop {
        client,
        server: "198.18.0.25:25".parse()?,
        dropped: Dropped::Greeting { hash: helo_hash(&rig.store.hash_key()?, name) },
        reason: helo_common::maps::reason::BOGUS_HELO,
        observed: false,
        listed_source: false,
    })
}

#[test]
fn a_dropped_greeting_ends_its_session_with_the_entrys_words_and_counts_for_top() -> Result<()> {
    let rig = rig()?;
    let client: SocketAddr = "198.18.1.2:40000".parse()?;
    let (_registration, mut ended) = rig.agent.registry.register(client);
    policy(&rig, false).on_drop(greeting_drop(&rig, client, "rad.internal")?);
    assert_eq!(ended.try_recv()?.reply.as_deref(), Some(WORDS));
    assert_eq!(rig.agent.recent.top(5), [("helo".to_owned(), "rad.internal".to_owned(), 1)]);
    Ok(())
}

#[test]
fn an_unknown_hash_gets_the_default_words_and_silent_gets_none() -> Result<()> {
    let rig = rig()?;
    let client: SocketAddr = "198.18.1.3:40001".parse()?;
    let (_registration, mut ended) = rig.agent.registry.register(client);
    let drop = greeting_drop(&rig, client, "listed.before.a.restart")?;
    policy(&rig, false).on_drop(drop);
    assert_eq!(ended.try_recv()?.reply.as_deref(), Some(KERNEL_DROP_DEFAULT));
    let Dropped::Greeting { hash } = drop.dropped else { unreachable!() };
    assert_eq!(rig.agent.recent.top(5), [("helo".to_owned(), format!("hash {hash:016x}"), 1)]);

    let (_registration, mut ended) = rig.agent.registry.register(client);
    policy(&rig, true).on_drop(greeting_drop(&rig, client, "rad.internal")?);
    assert_eq!(ended.try_recv()?.reply, None);
    Ok(())
}

#[test]
fn an_observed_drop_is_counted_but_leaves_the_session_alone() -> Result<()> {
    let rig = rig()?;
    let client: SocketAddr = "[2001:2::7]:1025".parse()?;
    let (_registration, mut ended) = rig.agent.registry.register(client);
    let drop = KernelDrop { dropped: Dropped::Source, observed: true, ..greeting_drop(&rig, client, "rad.internal")? };
    policy(&rig, false).on_drop(drop);
    assert!(matches!(ended.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(rig.agent.recent.top(5), [("source".to_owned(), "2001:2::7".to_owned(), 1)]);
    Ok(())
}
