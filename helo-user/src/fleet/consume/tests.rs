//! The fleet consumer in process, without Redis or root: a real agent over [`InMemoryKernel`] and
//! a store in a temporary directory, fed stream messages as `sync.rs` would read them.

use anyhow::Result;

use super::{apply_batch, handle, load_entry, start_at, StartAt, StreamMessage, EPOCH, LAST_ID};
use crate::{
    agent_state::in_process::{self, nowhere, InProcess},
    blocklist::kernel_side,
    fleet::wire::Message,
    listing::{clock::unix_now, Entry, Kind, Origin, Target},
    metrics::FleetSkipLabel,
    store::FleetChange,
};

const ME: &str = "edge-a";

fn agent() -> Result<InProcess> {
    in_process::agent(nowhere(), |c| {
        c.classifier.allow.names = vec!["friend.example.org".into()];
        c.classifier.allow.cidrs = vec!["198.18.7.0/24".into()];
    })
}

fn entry(kind: Kind, name: &str, origin: &str) -> Entry {
    Entry {
        target: Target::parse(kind, name.into()).unwrap(),
        reason: "bogus_helo".into(),
        reply: "550 5.7.1 Bogus HELO".into(),
        added_unix_s: unix_now(),
        expires_unix_s: 0,
        origin: Origin::from(origin.to_owned()),
    }
}

fn fields(m: &Message) -> Vec<(String, Vec<u8>)> {
    m.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v.into_bytes())).collect()
}

fn add(id: &str, kind: Kind, name: &str, origin: &str) -> StreamMessage {
    (id.into(), fields(&Message::Add(entry(kind, name, origin))))
}

fn del(id: &str, kind: Kind, name: &str, origin: &str) -> StreamMessage {
    (id.into(), fields(&Message::Del { kind, name: name.into(), origin: Origin::from(origin.to_owned()) }))
}

fn skipped(env: &InProcess, why: &str) -> u64 {
    env.agent.metrics.fleet_skipped.get_or_create(&FleetSkipLabel { kind: why.into() }).get()
}

/// Stored and in the kernel's maps, as the blocklist keeps both.
fn listed(env: &InProcess, kind: Kind, name: &str) -> bool {
    let stored = env.store.get(&format!("{}/{name}", kind.as_str())).unwrap();
    let kernel = env.kernel.lock().unwrap();
    match stored {
        Some(e) => {
            assert!(kernel_side::get(&*kernel, &env.store.hash_key().unwrap(), &e.target).is_some(), "{name} stored but not in the kernel");
            true
        }
        None => false,
    }
}

#[test]
fn another_boxs_changes_are_applied_in_order_and_the_position_is_kept() -> Result<()> {
    let env = agent()?;
    let batch = [
        add("1000-0", Kind::Helo, "rad.internal", "edge-b"),
        add("1000-1", Kind::Source, "198.18.9.9", "edge-b"),
        add("1001-0", Kind::Source, "198.18.64.0/18", "edge-c"),
        del("1002-0", Kind::Helo, "rad.internal", "edge-c"),
    ];
    let last = apply_batch(&env.agent, ME, &batch, "0-0")?;
    assert_eq!(last, "1002-0");
    assert!(!listed(&env, Kind::Helo, "rad.internal"), "added, then removed by a later message");
    assert!(listed(&env, Kind::Source, "198.18.9.9"));
    assert!(listed(&env, Kind::Source, "198.18.64.0/18"));
    let origin = env.store.get("source/198.18.9.9")?.unwrap().origin;
    assert_eq!(origin.as_str(), "edge-b", "kept with the publishing box as its origin");
    assert_eq!(env.agent.metrics.fleet_received.get(), 4);
    assert_eq!(env.store.meta(LAST_ID)?.as_deref(), Some("1002-0"), "the position survives a restart");
    // Applied from another box: nothing goes back into this box's outbox.
    assert_eq!(env.store.queued_count()?, 0);
    Ok(())
}

#[test]
fn an_empty_read_keeps_the_position() -> Result<()> {
    let env = agent()?;
    assert_eq!(apply_batch(&env.agent, ME, &[], "1500-3")?, "1500-3");
    assert_eq!(env.store.meta(LAST_ID)?, None, "nothing read, nothing written");
    Ok(())
}

#[test]
fn a_duplicate_changes_nothing_and_a_removal_of_what_is_not_listed_is_no_error() -> Result<()> {
    let env = agent()?;
    let batch = [
        add("1-0", Kind::Helo, "rad.internal", "edge-b"),
        add("2-0", Kind::Helo, "rad.internal", "edge-b"),
        del("3-0", Kind::Helo, "never.listed.example", "edge-b"),
    ];
    apply_batch(&env.agent, ME, &batch, "0-0")?;
    assert_eq!(env.store.entries()?.len(), 1);
    assert_eq!(env.kernel.lock().unwrap().blocklist_len(), 1);
    assert_eq!(skipped(&env, "malformed"), 0);
    Ok(())
}

#[test]
fn this_boxs_own_echoes_are_ignored() -> Result<()> {
    let env = agent()?;
    // This box listed it (as an operator), published it; its echo comes back with its own name.
    let own = entry(Kind::Helo, "mine.example", "operator");
    env.agent.blocklist.add_all(std::slice::from_ref(&own))?;
    let batch = [add("1-0", Kind::Helo, "echo.example", ME), del("2-0", Kind::Helo, "mine.example", ME)];
    assert_eq!(apply_batch(&env.agent, ME, &batch, "0-0")?, "2-0", "echoes still move the position on");
    assert!(!listed(&env, Kind::Helo, "echo.example"), "an echo of an add is not applied");
    assert!(listed(&env, Kind::Helo, "mine.example"), "an echo of a removal is not applied");
    assert_eq!(env.agent.metrics.fleet_received.get(), 0);
    Ok(())
}

#[test]
fn malformed_messages_are_counted_and_skipped_and_the_rest_applied() -> Result<()> {
    let env = agent()?;
    let mut no_reply = add("1-0", Kind::Helo, "a.example", "edge-b");
    no_reply.1.retain(|(k, _)| k != "reply");
    let mut huge = add("2-0", Kind::Helo, "b.example", "edge-b");
    huge.1.iter_mut().find(|(k, _)| k == "name").unwrap().1 = vec![b'x'; 4000];
    let mut hash_kind = add("3-0", Kind::Helo, "c.example", "edge-b");
    hash_kind.1.iter_mut().find(|(k, _)| k == "kind").unwrap().1 = b"hash".to_vec();
    let mut v2 = add("4-0", Kind::Helo, "d.example", "edge-b");
    v2.1.iter_mut().find(|(k, _)| k == "v").unwrap().1 = b"2".to_vec();
    let not_utf8 = ("5-0".to_owned(), vec![("v".to_owned(), vec![0xff, 0xfe])]);
    let mut bad_source = add("6-0", Kind::Source, "198.18.9.1", "edge-b");
    bad_source.1.iter_mut().find(|(k, _)| k == "name").unwrap().1 = b"not-an-address".to_vec();
    let good = add("7-0", Kind::Helo, "e.example", "edge-b");
    let batch = [no_reply, huge, hash_kind, v2, not_utf8, bad_source, good];
    assert_eq!(apply_batch(&env.agent, ME, &batch, "0-0")?, "7-0");
    assert_eq!(skipped(&env, "malformed"), 6);
    assert_eq!(env.store.entries()?.iter().map(|e| e.name()).collect::<Vec<_>>(), ["e.example"]);
    assert_eq!(env.agent.metrics.fleet_received.get(), 1);
    Ok(())
}

#[test]
fn what_this_box_allows_is_not_listed_from_another() -> Result<()> {
    let env = agent()?;
    let batch = [
        add("1-0", Kind::Helo, "friend.example.org", "edge-b"),
        add("2-0", Kind::Source, "198.18.7.7", "edge-b"),
        // A network overlapping the allowed one, wider or narrower, is refused whole.
        add("3-0", Kind::Source, "198.18.0.0/16", "edge-b"),
        add("4-0", Kind::Source, "198.18.7.128/25", "edge-b"),
        add("5-0", Kind::Source, "198.18.8.0/24", "edge-b"),
    ];
    apply_batch(&env.agent, ME, &batch, "0-0")?;
    assert_eq!(skipped(&env, "allowed"), 4);
    assert_eq!(env.store.entries()?.iter().map(|e| e.key()).collect::<Vec<_>>(), ["source/198.18.8.0/24"]);
    Ok(())
}

#[test]
fn loading_the_current_state_skips_own_and_malformed_entries() -> Result<()> {
    let env = agent()?;
    let theirs = serde_json::to_string(&entry(Kind::Helo, "theirs.example", "edge-b"))?;
    let mine = serde_json::to_string(&entry(Kind::Helo, "mine.example", ME))?;
    assert!(load_entry(&env.agent, ME, &theirs));
    assert!(!load_entry(&env.agent, ME, &mine));
    assert!(!load_entry(&env.agent, ME, "{not json"));
    assert!(listed(&env, Kind::Helo, "theirs.example"));
    assert!(!listed(&env, Kind::Helo, "mine.example"));
    assert_eq!(skipped(&env, "malformed"), 1);
    Ok(())
}

#[test]
fn where_to_start_after_connecting() {
    assert_eq!(start_at(None, "gen1", None, None), StartAt::Join, "first join");
    assert_eq!(start_at(Some("gen0"), "gen1", Some("5-0"), Some("1-0")), StartAt::Join, "Redis lost its data");
    assert_eq!(start_at(Some("gen1"), "gen1", Some("5-0"), Some("1-0")), StartAt::Resume("5-0".into()));
    assert_eq!(start_at(Some("gen1"), "gen1", Some("5-0"), Some("5-0")), StartAt::Resume("5-0".into()));
    assert_eq!(start_at(Some("gen1"), "gen1", Some("5-0"), None), StartAt::Resume("5-0".into()), "an empty stream");
    // IDs compare as numbers, not text: 10-0 is after 9-5.
    assert_eq!(start_at(Some("gen1"), "gen1", Some("9-5"), Some("10-0")), StartAt::Reload, "trimmed past this box");
    assert_eq!(start_at(Some("gen1"), "gen1", Some("9-5"), Some("9-6")), StartAt::Reload);
    assert_eq!(start_at(Some("gen1"), "gen1", None, Some("1-0")), StartAt::Reload, "no position kept");
}

#[test]
fn a_restarted_consumer_resumes_where_it_stopped() -> Result<()> {
    let env = agent()?;
    env.store.set_meta(EPOCH, "gen1")?;
    apply_batch(&env.agent, ME, &[add("42-7", Kind::Helo, "rad.internal", "edge-b")], "0-0")?;
    let start = start_at(env.store.meta(EPOCH)?.as_deref(), "gen1", env.store.meta(LAST_ID)?.as_deref(), Some("1-0"));
    assert_eq!(start, StartAt::Resume("42-7".into()));
    Ok(())
}

#[test]
fn joining_a_generation_queues_this_boxs_own_entries_only() -> Result<()> {
    let env = agent()?;
    env.agent.blocklist.add_all(&[entry(Kind::Helo, "op.example", "operator"), entry(Kind::Helo, "agent.example", "agent")])?;
    handle(&env.agent, ME, &fields(&Message::Add(entry(Kind::Helo, "theirs.example", "edge-b"))));
    let before = env.store.queued_count()?;
    assert_eq!(super::republish_own(&env.agent)?, 2);
    let queued: Vec<String> = env
        .store
        .queued(100)?
        .into_iter()
        .skip(before as usize)
        .map(|(_, c)| match c {
            FleetChange::Add { entry } => entry.name().to_owned(),
            FleetChange::Del { name, .. } => panic!("unexpected removal of {name}"),
        })
        .collect();
    assert_eq!(queued.len(), 2);
    assert!(queued.contains(&"op.example".to_owned()) && queued.contains(&"agent.example".to_owned()), "{queued:?}");
    Ok(())
}
