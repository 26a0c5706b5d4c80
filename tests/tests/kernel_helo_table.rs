//! The HELO table against the real XDP program, through BPF_PROG_TEST_RUN: the agent writes it
//! through its mapping, and the program must find every listed name wherever the agent put it.
//! As the table fills, names move to their other bucket (cuckoo); a full table evicts names never
//! hit before the ones the program drops; an older agent's pinned LRU map moves in at start.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Result;
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use helo_common::{
    hash_helo_arg,
    maps::{names, reason, BlockEntry},
    HashKey,
};
use helo_testbed::{frames::Frame, lab::BpfFs, privilege::require_root};
use helo_user::{
    kernel::{helo_table::HeloTable, BlockTables, KernelFilter, LoadOptions},
    modes::FilterMode,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const KEY: HashKey = HashKey { k0: 0x7ab1_e000_0000_0001, k1: 0x0fed_cba9_8765_4321 };
/// `BPF_MAP_TYPE_LRU_HASH` (uapi/linux/bpf.h): the HELO map of earlier versions.
const LRU_HASH: u32 = 9;

fn loaded(opts: LoadOptions) -> KernelFilter {
    let mut filter = KernelFilter::load(opts).expect("load the XDP program");
    filter.configure(KEY, FilterMode::Enforce, &[25]).unwrap();
    filter
}

fn name(i: usize) -> String {
    format!("n{i}.example")
}

fn entry() -> BlockEntry {
    BlockEntry { reason: reason::BOGUS_HELO, ..Default::default() }
}

/// The program's verdict on `EHLO <name>` opening a new connection (its SYN first), from a
/// source and port of its own so that no flow or source state carries over.
fn verdict(filter: &KernelFilter, name: &str, n: usize) -> u32 {
    let src: IpAddr = format!("198.18.{}.{}", 10 + n / 250, 1 + n % 250).parse().unwrap();
    let mut f = Frame::tcp(src, "198.18.0.2".parse().unwrap(), format!("EHLO {name}\r\n").as_bytes());
    f.sport = 20_000 + n as u16;
    let run = |frame: &Frame| {
        filter.program().test_run(TestRunOptions { data_in: Some(&frame.build()), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    assert_eq!(run(&f.syn()), XDP_PASS, "the SYN of {name}");
    run(&f)
}

#[test]
fn a_table_holds_its_capacity_where_the_program_finds_every_name() {
    if !require_root("a_table_holds_its_capacity_where_the_program_finds_every_name") {
        return;
    }
    // 200 names: 64 buckets of four, 78% full. Many late inserts find both buckets full and
    // move names aside.
    let mut filter = loaded(LoadOptions { helo_capacity: 200, ..Default::default() });
    let table = &mut filter.maps.blocks.helo;
    assert_eq!(table.slots(), 256);
    let count = 200;
    for i in 0..count {
        assert_eq!(table.insert(hash_helo_arg(&KEY, name(i).as_bytes()), entry()), None, "{} evicted a name at {i}", name(i));
    }
    assert_eq!(table.keys().len(), count);
    for i in 0..count {
        assert_eq!(filter.helo_entry(hash_helo_arg(&KEY, name(i).as_bytes())), Some(entry()), "{}", name(i));
        assert_eq!(verdict(&filter, &name(i), i), XDP_DROP, "the program did not find {}", name(i));
    }
    assert_eq!(verdict(&filter, "not-listed.example", count), XDP_PASS);
    // Removed names pass at once; the others are still found.
    for i in (0..count).step_by(2) {
        assert!(filter.unblock_helo(hash_helo_arg(&KEY, name(i).as_bytes())).unwrap());
    }
    assert!(!filter.unblock_helo(hash_helo_arg(&KEY, name(0).as_bytes())).unwrap(), "removed twice");
    for i in 0..count {
        let expected = if i % 2 == 0 { XDP_PASS } else { XDP_DROP };
        assert_eq!(verdict(&filter, &name(i), count + 1 + i), expected, "{}", name(i));
    }
}

#[test]
fn a_full_table_evicts_names_never_hit_before_names_the_program_drops() {
    if !require_root("a_full_table_evicts_names_never_hit_before_names_the_program_drops") {
        return;
    }
    // 32 buckets of four. Four names the program drops, then a flood of names never seen on the
    // wire: a name's two buckets hold eight slots, so a victim never hit is always there.
    let mut filter = loaded(LoadOptions { helo_capacity: 64, ..Default::default() });
    let hot: Vec<String> = (0..4).map(|i| format!("hot{i}.example")).collect();
    for h in &hot {
        filter.block_helo(hash_helo_arg(&KEY, h.as_bytes()), entry()).unwrap();
    }
    for (n, h) in hot.iter().enumerate() {
        assert_eq!(verdict(&filter, h, n), XDP_DROP);
        assert!(filter.helo_entry(hash_helo_arg(&KEY, h.as_bytes())).unwrap().hits >= 1, "the program counts its hits in the table");
    }
    let mut evicted = 0;
    let flood = 300;
    for i in 0..flood {
        evicted += filter.maps.blocks.helo.insert(hash_helo_arg(&KEY, name(i).as_bytes()), entry()).is_some() as usize;
    }
    let held = filter.maps.blocks.helo.keys().len();
    assert_eq!(held + evicted, hot.len() + flood, "every name is either held or reported evicted");
    assert!(held >= 64, "a full table holds fewer names than its capacity: {held} of {} slots", filter.maps.blocks.helo.slots());
    for (n, h) in hot.iter().enumerate() {
        assert!(filter.helo_entry(hash_helo_arg(&KEY, h.as_bytes())).is_some(), "{h} was evicted by names never hit");
        assert_eq!(verdict(&filter, h, 10 + n), XDP_DROP, "{h}");
    }
}

#[test]
fn a_listed_name_is_never_missed_while_the_agent_moves_and_evicts_names_around_it() -> Result<()> {
    if !require_root("a_listed_name_is_never_missed_while_the_agent_moves_and_evicts_names_around_it") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fs = BpfFs::mount(dir.path().join("bpffs"))?;
    let pins = fs.path.join("helo");
    let filter = loaded(LoadOptions { helo_capacity: 64, pin_dir: Some(pins.clone()), ..Default::default() });
    // A second mapping of the same table, as an offline command would have: the writer here.
    let mut writer = HeloTable::open_pinned(&pins.join(names::HELO_TABLE))?;
    writer.insert(hash_helo_arg(&KEY, b"hot.example"), entry());
    let mut f = Frame::tcp("198.18.9.9".parse()?, "198.18.0.2".parse()?, b"EHLO hot.example\r\n");
    f.sport = 30_000;
    let (syn, greeting) = (f.syn().build(), f.build());
    let run = |frame: &[u8]| {
        filter.program().test_run(TestRunOptions { data_in: Some(frame), repeat: 1, ..Default::default() }).unwrap().return_value
    };
    assert_eq!(run(&syn), XDP_PASS);
    // Hit once before the writer starts: a name never hit may be evicted, a hit one may not.
    assert_eq!(run(&greeting), XDP_DROP);
    let stop = AtomicBool::new(false);
    let (runs, missed, evicted) = std::thread::scope(|s| {
        // The program, on the other core, replays the flow's greeting without pause.
        let reader = s.spawn(|| {
            let (mut runs, mut missed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                runs += 1;
                missed += (run(&greeting) != XDP_DROP) as u64;
            }
            (runs, missed)
        });
        // The table near full, names coming and going: most inserts move names aside, some
        // evict.
        let live = writer.slots() - 8;
        let mut evicted = 0;
        for i in 0..60_000usize {
            evicted += writer.insert(hash_helo_arg(&KEY, name(i).as_bytes()), entry()).is_some() as usize;
            if i >= live {
                writer.remove(hash_helo_arg(&KEY, name(i - live).as_bytes()));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (runs, missed) = reader.join().unwrap();
        (runs, missed, evicted)
    });
    assert!(runs > 1000, "the program ran only {runs} times");
    assert_eq!(missed, 0, "the program passed the listed greeting {missed} times of {runs}, {evicted} evictions");
    assert!(filter.helo_entry(hash_helo_arg(&KEY, b"hot.example")).is_some());
    drop(filter);
    std::fs::remove_dir_all(&pins)?;
    Ok(())
}

#[test]
fn an_older_agents_pinned_lru_map_moves_into_the_table_at_start() -> Result<()> {
    if !require_root("an_older_agents_pinned_lru_map_moves_into_the_table_at_start") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let fs = BpfFs::mount(dir.path().join("bpffs"))?;
    let pins = fs.path.join("helo");
    std::fs::create_dir_all(&pins)?;
    // What an earlier agent left pinned: its LRU hash of greeting hashes.
    let old = aya_obj::Map::new_from_params(LRU_HASH, 8, size_of::<BlockEntry>() as u32, 64, 0);
    let data = MapData::create(old, names::OBSOLETE_HELO_BLOCKS, None)?;
    data.pin(pins.join(names::OBSOLETE_HELO_BLOCKS))?;
    let mut map: BpfHashMap<MapData, u64, BlockEntry> = BpfHashMap::try_from(Map::LruHashMap(data))?;
    for i in 0..20 {
        map.insert(hash_helo_arg(&KEY, name(i).as_bytes()), BlockEntry { added_unix_s: 1000 + i as u64, ..entry() }, 0)?;
    }
    drop(map);

    let filter = loaded(LoadOptions { pin_dir: Some(pins.clone()), ..Default::default() });
    assert!(!pins.join(names::OBSOLETE_HELO_BLOCKS).exists(), "the older map's pin is removed");
    assert!(pins.join(names::HELO_TABLE).exists());
    for i in 0..20 {
        let e = filter.helo_entry(hash_helo_arg(&KEY, name(i).as_bytes()));
        assert_eq!(e.map(|e| e.added_unix_s), Some(1000 + i as u64), "{} did not move with its entry", name(i));
        assert_eq!(verdict(&filter, &name(i), i), XDP_DROP, "{}", name(i));
    }
    drop(filter);
    std::fs::remove_dir_all(&pins)?;
    Ok(())
}

#[test]
fn the_first_eviction_comes_only_past_the_capacity() {
    if !require_root("the_first_eviction_comes_only_past_the_capacity") {
        return;
    }
    for capacity in [200u32, 3300, 52_000] {
        let mut filter = loaded(LoadOptions { helo_capacity: capacity, ..Default::default() });
        let table = &mut filter.maps.blocks.helo;
        let slots = table.slots();
        let first = (0..slots).find(|&i| table.insert(hash_helo_arg(&KEY, name(i).as_bytes()), entry()).is_some());
        let first = first.expect("a full table evicts");
        eprintln!(
            "capacity {capacity}, {slots} slots: the first eviction at name {first} ({:.1}% full)",
            first as f64 * 100.0 / slots as f64
        );
        assert!(first >= capacity as usize, "capacity {capacity}: a name was evicted at {first}");
    }
}
