//! The HELO table against the real XDP program, through BPF_PROG_TEST_RUN: the agent writes it
//! through its mapping, and the program must find every listed name wherever the agent put it.
//! As the table fills, names move to their other bucket (cuckoo); a full table evicts names never
//! hit before the ones the program drops; an older agent's pinned LRU map moves in at start.

use std::net::IpAddr;

use anyhow::Result;
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{TestRun, TestRunOptions},
};
use helo_common::{
    hash_helo_arg,
    helo_table::SLOTS,
    maps::{names, reason, BlockEntry},
    HashKey,
};
use helo_testbed::{frames::Frame, lab::BpfFs, privilege::require_root};
use helo_user::{
    kernel::{BlockTables, KernelFilter, LoadOptions},
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
fn a_nearly_full_table_keeps_every_name_where_the_program_finds_it() {
    if !require_root("a_nearly_full_table_keeps_every_name_where_the_program_finds_it") {
        return;
    }
    // 64 buckets of four: 256 slots, filled to 90%. Most late inserts find both buckets full
    // and move names aside.
    let mut filter = loaded(LoadOptions { helo_capacity: 256, ..Default::default() });
    let table = &mut filter.maps.blocks.helo;
    assert_eq!(table.slots(), 256);
    let count = 230;
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
    // 16 buckets of four. Four names the program drops, then a flood of names never seen on the
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
    assert!(held * 10 >= 16 * SLOTS * 9, "the table evicted while a tenth of it was free: {held} of {} held", 16 * SLOTS);
    for (n, h) in hot.iter().enumerate() {
        assert!(filter.helo_entry(hash_helo_arg(&KEY, h.as_bytes())).is_some(), "{h} was evicted by names never hit");
        assert_eq!(verdict(&filter, h, 10 + n), XDP_DROP, "{h}");
    }
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
