//! The blocklist's three copies (store, kernel maps, index) kept equal, with the real program's
//! maps in the kernel and a real redb store, but no agent process: the reconcile both ways,
//! operator entries put back after an eviction, ghosts removed at start, offline changes reaching
//! the pinned maps, the per-source quota, and a full filesystem (a size-limited tmpfs) that
//! recovers without a restart.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use helo_common::{maps::BlockEntry, HashKey};
use helo_testbed::{lab::BpfFs, privilege::require_root, tmpfs::Tmpfs};
use helo_user::{
    blocklist::{kernel_side::helo_hash, offline::Offline, Blocklist},
    kernel::{BlockTables, KernelFilter, LoadOptions},
    listing::{name, reason, Entry, Origin, Target},
    modes::FilterMode,
    store::Store,
};

const REPLY: &str = "550 5.7.1 Bogus HELO";

struct Rig {
    kernel: Arc<Mutex<KernelFilter>>,
    store: Store,
    key: HashKey,
    blocklist: Blocklist,
}

fn rig(state: &Path, pin_dir: Option<PathBuf>, helo_capacity: u32) -> Result<Rig> {
    let store = Store::open(state)?;
    let key = store.hash_key()?;
    let mut filter = KernelFilter::load(LoadOptions { helo_capacity, pin_dir, ..Default::default() })?;
    filter.configure(key, FilterMode::Enforce, &[25])?;
    let kernel = Arc::new(Mutex::new(filter));
    let hour = Duration::from_secs(3600);
    let blocklist = Blocklist::open(Arc::clone(&kernel) as _, store.clone(), key, hour, hour)?;
    Ok(Rig { kernel, store, key, blocklist })
}

impl Rig {
    fn entry(&self, name: &str, origin: Origin) -> Entry {
        self.blocklist.new_entry(Target::greeting(name.into()), reason::OPERATOR, REPLY, None, origin)
    }

    fn kernel_hashes(&self) -> HashSet<u64> {
        self.kernel.lock().unwrap().maps.blocks.helo.keys().into_iter().collect()
    }

    fn in_kernel(&self, name: &str) -> bool {
        self.kernel_hashes().contains(&helo_hash(&self.key, name))
    }

    fn stored(&self) -> HashSet<String> {
        self.store.entries().unwrap().iter().map(|e| e.name().to_owned()).collect()
    }

    /// Every kernel entry has a store entry.
    fn kernel_within_store(&self) -> bool {
        let stored: HashSet<u64> = self.stored().iter().map(|n| helo_hash(&self.key, n)).collect();
        self.kernel_hashes().is_subset(&stored)
    }
}

const DEFAULT_CAPACITY: u32 = 1024;

#[test]
fn the_reconcile_fixes_both_directions_and_keeps_operator_entries() -> Result<()> {
    if !require_root("the_reconcile_fixes_both_directions_and_keeps_operator_entries") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let r = rig(dir.path(), None, DEFAULT_CAPACITY)?;
    r.blocklist.add_all(&[r.entry("op.example.com", Origin::Operator), r.entry("fleet.example.com", Origin::Fleet("mx2".into()))])?;
    assert!(r.blocklist.list_greeting(b"Learned.Example.", "bogus_helo", REPLY)?.wait_blocking());
    // The agent rejecting an operator-listed name (with --no-xdp, say) leaves the operator's entry.
    assert!(r.blocklist.list_greeting(b"OP.example.com", "bogus_helo", REPLY)?.wait_blocking());
    r.blocklist.sync();
    assert!(r.in_kernel("learned.example"));
    assert_eq!(r.store.get("helo/op.example.com")?.unwrap().origin, Origin::Operator);
    // The kernel's LRU map evicts all three; a ghost appears that the store never held.
    {
        let mut k = r.kernel.lock().unwrap();
        for name in ["op.example.com", "fleet.example.com", "learned.example"] {
            assert!(k.unblock_helo(helo_hash(&r.key, name))?);
        }
        k.block_helo(helo_hash(&r.key, "ghost.example"), BlockEntry::default())?;
    }
    assert_eq!(r.blocklist.reconcile()?, (1, 2, 1), "(evicted, put back, removed from the kernel)");
    assert!(r.in_kernel("op.example.com") && r.in_kernel("fleet.example.com"), "operator and fleet entries are put back");
    assert!(!r.in_kernel("ghost.example"));
    assert_eq!(r.stored(), HashSet::from(["op.example.com".to_string(), "fleet.example.com".to_string()]));
    let c = r.blocklist.changes();
    assert_eq!((c.evicted, c.reconciled_to_kernel, c.reconciled_from_kernel), (1, 2, 1));
    // Equal now: nothing more to fix.
    assert_eq!(r.blocklist.reconcile()?, (0, 0, 0));
    Ok(())
}

#[test]
fn operator_entries_survive_a_flood_of_learned_names_in_a_small_map() -> Result<()> {
    if !require_root("operator_entries_survive_a_flood_of_learned_names_in_a_small_map") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let r = rig(dir.path(), None, 64)?;
    r.blocklist.add_all(&[r.entry("op.example.com", Origin::Operator)])?;
    // Invented names from as many addresses (one source is held to its quota: see below), until
    // the table for 64 names has evicted the operator's (a full pair of buckets evicts one of
    // its eight names, each as likely: none was ever hit).
    for i in 0..5_000u32 {
        let client = IpAddr::from((0xc612_0000u32 + i).to_be_bytes());
        r.blocklist.list_greeting_from(client, format!("invented{i}").as_bytes(), "bogus_helo", REPLY)?;
        if i % 100 == 99 {
            r.blocklist.sync();
            if !r.in_kernel("op.example.com") {
                break;
            }
        }
    }
    r.blocklist.sync();
    assert!(!r.in_kernel("op.example.com"), "5,000 invented names did not evict the operator entry from a table for 64");
    r.blocklist.reconcile()?;
    assert!(r.stored().contains("op.example.com"), "the reconcile must not drop an operator entry");
    assert!(r.in_kernel("op.example.com"), "the reconcile puts it back in the kernel");
    assert!(r.kernel_within_store());
    Ok(())
}

#[test]
fn one_source_gets_a_bounded_number_of_new_listings() -> Result<()> {
    if !require_root("one_source_gets_a_bounded_number_of_new_listings") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let r = rig(dir.path(), None, DEFAULT_CAPACITY)?;
    let client: IpAddr = "198.18.5.5".parse()?;
    let quota = helo_user::blocklist::learned::PER_SOURCE_PER_HOUR as usize;
    for i in 0..quota + 5 {
        // Every call resolves (the session replies either way).
        assert!(r.blocklist.list_greeting_from(client, format!("n{i}.invalid").as_bytes(), "bogus_helo", REPLY)?.wait_blocking());
    }
    r.blocklist.sync();
    assert_eq!(r.kernel_hashes().len(), quota);
    assert_eq!(r.stored().len(), quota);
    assert_eq!(r.blocklist.changes().learned_limited, 5);
    // A name already listed is no new listing; another source has its own quota.
    r.blocklist.list_greeting_from(client, b"n0.invalid", "bogus_helo", REPLY)?.wait_blocking();
    assert_eq!(r.blocklist.changes().learned_limited, 5);
    r.blocklist.list_greeting_from("198.18.5.6".parse()?, b"other.invalid", "bogus_helo", REPLY)?.wait_blocking();
    assert!(r.in_kernel("other.invalid"));
    Ok(())
}

#[test]
fn an_eight_bit_name_is_hashed_as_the_kernel_sees_it() -> Result<()> {
    if !require_root("an_eight_bit_name_is_hashed_as_the_kernel_sees_it") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let r = rig(dir.path(), None, DEFAULT_CAPACITY)?;
    assert!(r.blocklist.list_greeting(b"CAF\xe9", "bogus_helo", REPLY)?.wait_blocking());
    r.blocklist.sync();
    assert_eq!(r.stored(), HashSet::from(["caf\\xe9".to_string()]));
    let kernel_hash = helo_common::hash_helo_arg(&r.key, b"CAF\xe9");
    assert!(r.kernel_hashes().contains(&kernel_hash), "the kernel's own hash of the greeting must be listed");
    assert_eq!(r.blocklist.helo_listed(kernel_hash).map(|(n, _)| n).as_deref(), Some("caf\\xe9"));
    // The operator removes it by its escape, in any case.
    assert_eq!(r.blocklist.remove(&[format!("helo/{}", name::from_operator("Caf\\xE9")?)])?.len(), 1);
    assert!(r.kernel_hashes().is_empty());
    Ok(())
}

/// Opens the offline view once the agent-side handles are gone (the commit thread lets go of the
/// store a moment after the blocklist is dropped).
fn offline(state: &Path, pins: &Path) -> Result<Offline> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Offline::open(state, pins) {
            Ok(o) => return Ok(o),
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("already open") => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn the_kernel_follows_the_store_across_restarts_and_offline_edits() -> Result<()> {
    if !require_root("the_kernel_follows_the_store_across_restarts_and_offline_edits") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fs = BpfFs::mount(dir.path().join("bpffs"))?;
    let pins = fs.path.join("helo");
    let state = dir.path().join("state");
    let r = rig(&state, Some(pins.clone()), DEFAULT_CAPACITY)?;
    let key = r.key;
    r.blocklist.add_all(&[r.entry("one.example.com", Origin::Operator), r.entry("two.example.com", Origin::Operator)])?;
    drop(r);

    // Agent down. An offline delete reaches the pinned map at once.
    let mut o = offline(&state, &pins)?;
    assert!(o.note().contains("maps pinned"), "{}", o.note());
    let probe = |name: &str| Entry {
        target: Target::greeting(name.into()),
        reason: "x".into(),
        reply: REPLY.into(),
        added_unix_s: 0,
        expires_unix_s: 0,
        origin: Origin::Operator,
    };
    assert_eq!(o.remove(&Target::greeting("one.example.com".into()))?, 1);
    // An older version's offline delete reached the store only: the kernel still has a ghost.
    assert_eq!(o.store.remove_all(&["helo/two.example.com".into()])?.len(), 1);
    o.add_all(&[probe("three.example.com")])?;
    drop(o);

    let r = rig(&state, Some(pins.clone()), DEFAULT_CAPACITY)?;
    assert_eq!(r.key, key);
    assert!(!r.in_kernel("one.example.com"));
    assert!(!r.in_kernel("two.example.com"), "the ghost of an offline delete survived the restart");
    assert!(r.in_kernel("three.example.com"), "an offline add did not reach the kernel");
    assert_eq!(r.blocklist.changes().reconciled_from_kernel, 1);
    assert_eq!(r.stored(), HashSet::from(["three.example.com".to_string()]));
    drop(r);

    // The store lost while maps are pinned: refused, not re-keyed.
    std::fs::write(state.join(helo_user::store::DB_FILE), b"")?;
    let err = Offline::open(&state, &pins).err().expect("an empty store must be refused");
    assert!(format!("{err:#}").contains("empty"), "{err:#}");
    std::fs::remove_file(state.join(helo_user::store::DB_FILE))?;
    let err = Offline::open(&state, &pins).err().expect("a missing store with pins must be refused");
    assert!(format!("{err:#}").contains("detach"), "{err:#}");
    Ok(())
}

#[test]
fn a_full_filesystem_withdraws_listings_and_recovers_without_a_restart() -> Result<()> {
    if !require_root("a_full_filesystem_withdraws_listings_and_recovers_without_a_restart") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fs = Tmpfs::mount(dir.path().join("fs"), "2m")?;
    let r = rig(&fs.path.join("state"), None, DEFAULT_CAPACITY)?;
    r.blocklist.add_all(&[r.entry("before.example.com", Origin::Operator)])?;
    let filler = fs.fill()?;
    // A burst of rejections on the full filesystem: each session waits for its commit.
    let names: Vec<String> = (0..300).map(|i| format!("full{i}.invalid")).collect();
    let waits: Vec<_> = names.iter().map(|n| r.blocklist.list_greeting(n.as_bytes(), "bogus_helo", REPLY)).collect::<Result<_>>()?;
    let committed = waits.into_iter().map(|w| w.wait_blocking()).filter(|ok| *ok).count();
    r.blocklist.sync();
    let c = r.blocklist.changes();
    println!("{committed} of {} listings committed on the full filesystem, {} failed transactions", names.len(), c.store_errors);
    assert!(c.store_errors >= 1, "nothing failed: the filesystem was not full enough");
    assert!(r.kernel_within_store(), "a kernel entry has no store entry");
    // An operator change meanwhile is all or nothing: stored and in the kernel, or in neither.
    let during = r.blocklist.add_all(&[r.entry("during.example.com", Origin::Operator)]);
    assert_eq!(during.is_ok(), r.in_kernel("during.example.com"), "{during:?}");
    assert_eq!(during.is_ok(), r.stored().contains("during.example.com"));
    let expected = names.len() + 1 + during.is_ok() as usize;

    // Space comes back: the pending listings are stored and back in the kernel, admin works.
    std::fs::remove_file(filler)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stored().len() < expected {
        assert!(Instant::now() < deadline, "pending listings were not replayed: {} stored", r.stored().len());
        thread::sleep(Duration::from_millis(100));
    }
    assert!(names.iter().all(|n| r.in_kernel(n)), "replayed listings are back in the kernel");
    r.blocklist.add_all(&[r.entry("after.example.com", Origin::Operator)])?;
    assert!(r.in_kernel("after.example.com") && r.stored().contains("after.example.com"));
    assert!(r.kernel_within_store());
    Ok(())
}
