//! Pins under bpffs (default `/sys/fs/bpf/helo`): the maps and the XDP link outlive the agent.
//!
//! While the agent is down or restarting, the kernel keeps dropping what is listed and passes the
//! rest; a new agent reuses the pinned maps (so nothing listed is lost) and swaps its program into
//! the pinned link atomically (so there is no moment without a filter).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use helo_common::maps::names;

use crate::modes::AttachMode;

/// The maps that are pinned, by name (the per-CPU scratch map is private to each program).
pub const PINNED_MAPS: [&str; 11] = [
    names::CONFIG,
    names::PORTS,
    names::HELO_TABLE,
    names::SOURCE_BLOCKS,
    names::SOURCE_NETS,
    names::ALLOW,
    names::FLOWS,
    names::COUNTERS,
    names::EVENTS,
    names::LADDER,
    names::STRIKES,
];

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// Where the XDP link attached in `mode` is pinned.
pub fn link_path(dir: &Path, mode: AttachMode) -> PathBuf {
    dir.join(format!("link-{}", mode.as_str()))
}

/// The mode of the XDP link pinned in `dir`, if one is (the mode is kept in the pin's name:
/// bpffs holds only bpf objects).
pub fn pinned_link_mode(dir: &Path) -> Option<AttachMode> {
    [AttachMode::Native, AttachMode::Skb].into_iter().find(|m| link_path(dir, *m).exists())
}

pub fn map_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Whether blocklist maps are pinned in `dir`: the kernel then holds entries hashed with the
/// store's key, so the store must not be replaced by a new one (see `store::refuse_reset`).
pub fn maps_pinned(dir: &Path) -> bool {
    [names::HELO_TABLE, names::OBSOLETE_HELO_BLOCKS, names::SOURCE_BLOCKS, names::SOURCE_NETS].iter().any(|n| map_path(dir, n).exists())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills the struct we own; the path is NUL-terminated.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `dir` exists on a bpf filesystem. `/sys/fs/bpf` is mounted if nothing is there yet
/// (systemd usually does it); any other parent must already be a bpffs.
pub fn prepare(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("the pin directory has no parent")?;
    if !is_bpffs(parent)? {
        if parent != Path::new("/sys/fs/bpf") {
            bail!("{} is not on a bpf filesystem (mount one: mount -t bpf bpf {})", parent.display(), parent.display());
        }
        let src = CString::new("bpf")?;
        let target = CString::new("/sys/fs/bpf")?;
        // SAFETY: plain mount(2) with NUL-terminated strings.
        if unsafe { libc::mount(src.as_ptr(), target.as_ptr(), src.as_ptr(), 0, std::ptr::null()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("mounting bpffs on /sys/fs/bpf");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Whether pins under `dir` outlive this process. A bpffs instance (and every pin on it) lives as
/// long as one of its mounts does; a mount lives as long as its mount namespace. So the pins
/// outlive us if another process shares our mount namespace, or if a mount namespace of another
/// process has a mount of the same bpffs instance. `false` is what `ip netns exec` (a mount
/// namespace of its own, /sys remounted) with a bpffs the agent mounted itself gives. `None`
/// when it cannot tell.
pub fn pins_outlive_process(dir: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir.parent()?).ok()?.dev();
    let wanted = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    let me = std::process::id().to_string();
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        // Reading another process's namespace link needs ptrace access, which a service with
        // bounded capabilities lacks towards a fully privileged process (pid 1, say); its
        // mountinfo is readable all the same, so that is still looked at.
        match std::fs::read_link(entry.path().join("ns/mnt")) {
            Ok(ns) if ns == ours => return Some(true),
            Ok(ns) if !seen.insert(ns.clone()) => continue,
            _ => {}
        }
        let Ok(info) = std::fs::read_to_string(entry.path().join("mountinfo")) else { continue };
        // `id parent MAJOR:MINOR root mountpoint … - fstype source options`
        if info.lines().any(|l| l.split(' ').nth(2) == Some(wanted.as_str()) && l.contains(" - bpf ")) {
            return Some(true);
        }
    }
    Some(false)
}

/// Removes the pins of maps an older agent kept and this one no longer uses: the flow map was an
/// LRU hash under another name (its flows are short-lived; nothing is lost).
pub fn remove_obsolete(dir: &Path) -> Result<()> {
    let path = map_path(dir, names::OBSOLETE_FLOWS);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}

/// Removes the link (detaching the program) and every pinned map.
pub fn remove(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    std::fs::remove_dir(dir)?;
    Ok(true)
}
