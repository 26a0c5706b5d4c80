//! Reading the kernel state of an agent running in another process: its program by id, and that
//! program's counters, through the kernel's object ids (no pins needed).

use anyhow::{Context, Result};
use aya::maps::{loaded_maps, Map, MapData, PerCpuArray};
use helo_common::maps::counter;
use helo_user::kernel::Counters;

/// The id of the XDP program an agent logged (`XDP program N attached ...`).
pub fn program_id_from_log(log: &str) -> Option<u32> {
    let rest = log.split("XDP program ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The summed counters of the program `prog_id`.
pub fn counters(prog_id: u32) -> Result<Counters> {
    let program = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == prog_id)
        .with_context(|| format!("no loaded program with id {prog_id}"))?;
    let ids = program.map_ids()?.context("the kernel did not report map ids")?;
    let info = loaded_maps()
        .filter_map(|m| m.ok())
        .find(|m| ids.contains(&m.id()) && m.name_as_str() == Some("HELO_COUNTERS"))
        .context("the program has no HELO_COUNTERS map")?;
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(MapData::from_id(info.id())?))?;
    let mut out = Counters::default();
    for i in 0..counter::COUNT {
        out.0[i as usize] = map.get(&i, 0)?.iter().sum();
    }
    Ok(out)
}
