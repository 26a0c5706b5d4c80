//! The blocklist's three-way sync (store ⇄ kernel ⇄ operator), in process and without root: a real
//! redb store in a temporary directory, the kernel's tables in [`InMemoryKernel`]. After every
//! change, what the kernel holds is exactly what the store holds.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use helo_common::maps::BlockEntry;

use super::{kernel_side, Blocklist};
use crate::{
    kernel::{BlockTables, InMemoryKernel},
    listing::{clock::unix_now, reason, Entry, Kind, Origin, Target},
    store::Store,
};

const REPLY: &str = "550 5.7.1 Bogus HELO";

struct Rig {
    _dir: tempfile::TempDir,
    kernel: Arc<Mutex<InMemoryKernel>>,
    store: Store,
    blocklist: Blocklist,
}

fn rig() -> Result<Rig> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let kernel = Arc::new(Mutex::new(InMemoryKernel::default()));
    let hour = Duration::from_secs(3600);
    let blocklist = Blocklist::open(Arc::clone(&kernel) as _, store.clone(), store.hash_key()?, hour, hour)?;
    Ok(Rig { _dir: dir, kernel, store, blocklist })
}

impl Rig {
    fn entry(&self, kind: Kind, name: &str, origin: Origin) -> Entry {
        self.blocklist.new_entry(Target::parse(kind, name.into()).unwrap(), reason::OPERATOR, REPLY, None, origin)
    }

    fn in_kernel(&self, e: &Entry) -> bool {
        kernel_side::get(&*self.kernel.lock().unwrap(), &self.blocklist.tables.key, &e.target).is_some()
    }

    fn stored_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.store.entries().unwrap().iter().map(Entry::key).collect();
        keys.sort();
        keys
    }

    /// The kernel holds an entry for every stored one, and nothing else.
    fn assert_kernel_equals_store(&self) {
        let stored = self.store.entries().unwrap();
        for e in &stored {
            assert!(self.in_kernel(e), "{} is stored but not in the kernel", e.key());
        }
        assert_eq!(self.kernel.lock().unwrap().blocklist_len(), stored.len(), "the kernel holds entries the store does not");
    }
}

#[test]
fn operator_adds_and_deletes_reach_store_and_kernel_together() -> Result<()> {
    let r = rig()?;
    let entries = [
        r.entry(Kind::Helo, "one.example.com", Origin::Operator),
        r.entry(Kind::Source, "198.18.7.9", Origin::Operator),
        r.entry(Kind::Source, "2001:2::/48", Origin::Operator),
    ];
    r.blocklist.add_all(&entries)?;
    assert_eq!(r.stored_keys(), ["helo/one.example.com", "source/198.18.7.9", "source/2001:2::/48"]);
    r.assert_kernel_equals_store();
    // The network's trie entry covers an address inside it.
    let inside: IpAddr = "2001:2::1".parse()?;
    assert!(r.kernel.lock().unwrap().source_net_entry(inside, 128).is_some());
    let removed = r.blocklist.remove(&["source/198.18.7.9".into(), "helo/one.example.com".into()])?;
    assert_eq!(removed.len(), 2);
    assert_eq!(r.stored_keys(), ["source/2001:2::/48"]);
    r.assert_kernel_equals_store();
    assert_eq!(r.blocklist.changes().added, 3);
    assert_eq!(r.blocklist.changes().removed, 2);
    Ok(())
}

#[test]
fn the_agents_listing_is_in_the_kernel_at_once_and_in_the_store_once_committed() -> Result<()> {
    let r = rig()?;
    let committed = r.blocklist.list_greeting(b"Bogus.Example.", "bogus_helo", REPLY)?;
    let e = r.entry(Kind::Helo, "bogus.example", Origin::Agent);
    assert!(r.in_kernel(&e), "listed in the kernel before the commit");
    assert!(committed.wait_blocking(), "the group commit reported failure");
    assert_eq!(r.stored_keys(), ["helo/bogus.example"]);
    r.assert_kernel_equals_store();
    // A drop event for that hash is answered with the entry's reply.
    let hash = kernel_side::helo_hash(&r.blocklist.tables.key, "bogus.example");
    assert_eq!(r.blocklist.helo_listed(hash), Some(("bogus.example".into(), REPLY.into())));
    Ok(())
}

#[test]
fn expiry_removes_from_store_and_kernel_and_keeps_the_rest() -> Result<()> {
    let r = rig()?;
    let mut old = r.entry(Kind::Helo, "old.example.com", Origin::Operator);
    old.expires_unix_s = unix_now() - 1;
    let mut old_net = r.entry(Kind::Source, "198.18.4.0/24", Origin::Operator);
    old_net.expires_unix_s = unix_now() - 1;
    let fresh = r.entry(Kind::Helo, "fresh.example.com", Origin::Operator);
    r.blocklist.add_all(&[old, old_net, fresh])?;
    r.assert_kernel_equals_store();
    assert_eq!(r.blocklist.expire()?, 2);
    assert_eq!(r.stored_keys(), ["helo/fresh.example.com"]);
    r.assert_kernel_equals_store();
    assert_eq!(r.blocklist.expire()?, 0);
    Ok(())
}

#[test]
fn the_reconcile_fixes_both_directions_and_keeps_operator_entries() -> Result<()> {
    let r = rig()?;
    let operator = r.entry(Kind::Helo, "op.example.com", Origin::Operator);
    let fleet = r.entry(Kind::Source, "198.18.9.9", Origin::Fleet("mx2".into()));
    r.blocklist.add_all(&[operator.clone(), fleet.clone()])?;
    assert!(r.blocklist.list_greeting(b"learned.example", "bogus_helo", REPLY)?.wait_blocking());
    let learned = r.entry(Kind::Helo, "learned.example", Origin::Agent);
    let key = r.blocklist.tables.key;
    {
        // A full LRU map evicts all three; a ghost the store never held appears.
        let mut k = r.kernel.lock().unwrap();
        for e in [&operator, &fleet, &learned] {
            assert!(kernel_side::remove(&mut *k, &key, &e.target)?);
        }
        k.block_helo(kernel_side::helo_hash(&key, "ghost.example"), BlockEntry::default())?;
    }
    // Evicted agent listing dropped; operator and fleet entries put back; the ghost removed.
    assert_eq!(r.blocklist.reconcile()?, (1, 2, 1));
    assert_eq!(r.stored_keys(), ["helo/op.example.com", "source/198.18.9.9"]);
    r.assert_kernel_equals_store();
    let c = r.blocklist.changes();
    assert_eq!((c.evicted, c.reconciled_to_kernel, c.reconciled_from_kernel), (1, 2, 1));
    assert_eq!(r.blocklist.reconcile()?, (0, 0, 0), "a second reconcile finds nothing");
    Ok(())
}

#[test]
fn opening_makes_the_kernel_equal_to_the_store() -> Result<()> {
    // What an agent finds at start: a store from its last run and pinned maps that drifted (an
    // offline delete, a listing that was never stored).
    let dir = tempfile::tempdir()?;
    let key = Store::open(dir.path())?.hash_key()?;
    let mut kernel = InMemoryKernel::default();
    kernel.block_helo(kernel_side::helo_hash(&key, "stale.example"), BlockEntry::default())?;
    kernel.block_source("198.18.3.3".parse()?, BlockEntry::default())?;
    let kept = Entry {
        target: Target::greeting("kept.example".into()),
        reason: reason::OPERATOR.into(),
        reply: REPLY.into(),
        added_unix_s: unix_now(),
        expires_unix_s: 0,
        origin: Origin::Operator,
    };
    let expired = Entry { target: Target::greeting("gone.example".into()), expires_unix_s: unix_now() - 1, ..kept.clone() };
    let store = Store::open(dir.path())?;
    store.put_all_publishing(&[kept, expired], false)?;
    drop(store);
    let kernel = Arc::new(Mutex::new(kernel));
    let hour = Duration::from_secs(3600);
    let store = Store::open(dir.path())?;
    let blocklist = Blocklist::open(Arc::clone(&kernel) as _, store.clone(), key, hour, hour)?;
    let r = Rig { _dir: dir, kernel, store, blocklist };
    assert_eq!(r.stored_keys(), ["helo/kept.example"]);
    r.assert_kernel_equals_store();
    assert_eq!(r.blocklist.changes().reconciled_from_kernel, 2);
    Ok(())
}

#[test]
fn an_address_in_a_spelling_of_its_own_is_kept_under_that_key() -> Result<()> {
    // An import can hold an address as a person wrote it; the stored name is its key, so it is
    // kept as written, and the kernel entry is the address's.
    let r = rig()?;
    let e = r.entry(Kind::Source, "2001:DB8::7", Origin::Operator);
    r.blocklist.add_all(std::slice::from_ref(&e))?;
    assert_eq!(r.stored_keys(), vec!["source/2001:DB8::7".to_string()]);
    assert!(r.kernel.lock().unwrap().source_entry("2001:db8::7".parse()?).is_some());
    assert_eq!(r.blocklist.remove(&["source/2001:DB8::7".into()])?.len(), 1);
    r.assert_kernel_equals_store();
    assert_eq!(r.kernel.lock().unwrap().blocklist_len(), 0);
    Ok(())
}
