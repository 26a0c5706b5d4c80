//! Loading the XDP program, configuring it, and attaching it to an interface.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use helo_common::{
    helo_table::{bucket_count, BUCKET_MASK_GLOBAL, SLOTS},
    maps::{mode, names, Config, DEFAULT_HELO_CAPACITY, DEFAULT_SOURCE_CAPACITY, PROGRAM_NAME},
    HashKey,
};

use super::{helo_table::HeloTable, maps::KernelMaps, pin};
use crate::modes::{AttachMode, FilterMode};

/// The XDP object built by `build.rs` from `helo-ebpf`.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/helo"));

/// The program's `Config::mode` value for a filter mode.
fn kernel_mode(mode: FilterMode) -> u32 {
    match mode {
        FilterMode::Enforce => mode::ENFORCE,
        FilterMode::Observe => mode::OBSERVE,
    }
}

/// aya's attach flag for an attach mode (`auto` tries the driver first).
fn xdp_mode(mode: AttachMode) -> XdpMode {
    match mode {
        AttachMode::Native | AttachMode::Auto => XdpMode::Driver,
        AttachMode::Skb => XdpMode::Skb,
    }
}

/// What an attach failure means, from the errno somewhere in its chain.
fn attach_hint(e: &anyhow::Error, iface: &str) -> Option<String> {
    let errno = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).and_then(|io| io.raw_os_error())?;
    Some(match errno {
        libc::EBUSY | libc::EEXIST => format!(
            "another XDP program is already attached to {iface} (`ip link show {iface}` shows it; `ip link set dev {iface} xdp off` \
             removes one attached by netlink, `helo detach` one helo pinned)"
        ),
        libc::EOPNOTSUPP | libc::EINVAL => {
            format!("the driver of {iface} refused native XDP: use --xdp-mode skb (slower), or auto to fall back by itself")
        }
        libc::ENODEV => format!("no interface named {iface} in this network namespace"),
        libc::EPERM | libc::EACCES => "permission denied: attaching XDP needs CAP_NET_ADMIN and CAP_BPF (root)".into(),
        _ => return None,
    })
}

fn with_hint(e: anyhow::Error, iface: &str) -> anyhow::Error {
    match attach_hint(&e, iface) {
        Some(hint) => e.context(hint),
        None => e,
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Names the HELO table holds (rounded up to whole buckets, a power of two of them). A pinned
    /// table keeps the size it was created with.
    pub helo_capacity: u32,
    /// Capacity of the source map (LRU).
    pub source_capacity: u32,
    /// Pin the maps and the link here (reusing what is already pinned). `None`: nothing outlives
    /// this process (tests).
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { helo_capacity: DEFAULT_HELO_CAPACITY, source_capacity: DEFAULT_SOURCE_CAPACITY, pin_dir: None }
    }
}

/// The HELO table's bucket count: a pinned table's own (the program must be told the size of the
/// table it will use), otherwise one for the configured capacity.
fn helo_buckets(opts: &LoadOptions) -> Result<u32> {
    let wanted = bucket_count(opts.helo_capacity);
    let Some(pinned) = opts.pin_dir.as_ref().map(|d| pin::map_path(d, names::HELO_TABLE)).filter(|p| p.exists()) else {
        return Ok(wanted);
    };
    let buckets = HeloTable::pinned_buckets(&pinned)?;
    if buckets != wanted {
        tracing::warn!(
            "helo-capacity is {} but the pinned HELO table holds {} names: it keeps its size until `helo detach` \
             removes the pins (the next start then creates it anew, empty)",
            opts.helo_capacity,
            buckets as usize * SLOTS
        );
    }
    Ok(buckets)
}

/// The loaded (and possibly attached) program with its maps. Dropping it detaches the program.
pub struct KernelFilter {
    ebpf: Ebpf,
    pub maps: KernelMaps,
    events: Option<RingBuf<MapData>>,
    attached: Option<AttachMode>,
    pin_dir: Option<PathBuf>,
    last_link_id: Option<aya::programs::xdp::XdpLinkId>,
}

impl KernelFilter {
    /// Loads the embedded object and has the verifier check the program. Nothing is attached yet,
    /// and the program passes everything until [`KernelFilter::configure`] runs.
    pub fn load(opts: LoadOptions) -> Result<Self> {
        if let Some(dir) = &opts.pin_dir {
            pin::prepare(dir)?;
            pin::remove_obsolete(dir)?;
        }
        let buckets = helo_buckets(&opts)?;
        // The program masks with this constant (see `helo_common::helo_table`).
        let bucket_mask = buckets - 1;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::HELO_TABLE, buckets)
            .override_global(BUCKET_MASK_GLOBAL, &bucket_mask, true)
            .map_max_entries(names::SOURCE_BLOCKS, opts.source_capacity);
        if let Some(dir) = &opts.pin_dir {
            for name in pin::PINNED_MAPS {
                // Reused if already pinned (a restart), created and pinned otherwise.
                loader.map_pin_path(name, pin::map_path(dir, name));
            }
        }
        let mut ebpf = loader.load(XDP_OBJECT).context("loading the XDP object (are you root, with bpf and bpffs available?)")?;
        let program: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).context("the XDP object has no `helo` program")?.try_into()?;
        program.load().context("the kernel's verifier rejected the XDP program")?;
        let mut maps = KernelMaps::take_from(&mut ebpf)?;
        if let Some(dir) = &opts.pin_dir {
            super::helo_table::move_obsolete_helo_map(dir, &mut maps.blocks.helo)?;
        }
        let events = ebpf.take_map(names::EVENTS).map(RingBuf::try_from).transpose()?;
        Ok(Self { ebpf, maps, events, attached: None, pin_dir: opts.pin_dir, last_link_id: None })
    }

    /// Sets the hash key, the mode and the filtered ports. Ports are replaced, not added to.
    pub fn configure(&mut self, key: HashKey, mode: FilterMode, ports: &[u16]) -> Result<()> {
        if ports.is_empty() {
            bail!("at least one port must be filtered");
        }
        for port in 0..=u16::MAX {
            if self.maps.ports.get(&(port as u32), 0)? != 0 && !ports.contains(&port) {
                self.maps.set_port(port, false)?;
            }
        }
        for &port in ports {
            self.maps.set_port(port, true)?;
        }
        let config = Config { key, mode: kernel_mode(mode), flags: self.maps.empty_flags() };
        self.maps.hash_key = key;
        self.maps.config.set(0, config, 0).context("writing the program's configuration")
    }

    /// The offender ladder's settings (`strikes == 0`: off).
    pub fn configure_ladder(&mut self, ladder: helo_common::maps::Ladder) -> Result<()> {
        self.maps.blocks.answers = ladder.answers;
        self.maps.set_ladder(ladder)
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf.program(PROGRAM_NAME).expect("checked at load").try_into().expect("checked at load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf.program_mut(PROGRAM_NAME).expect("checked at load").try_into().expect("checked at load")
    }

    /// Attaches to `iface`. With a pin directory, a link already pinned there gets this program
    /// swapped in atomically (no gap in filtering); otherwise the new link is pinned.
    pub fn attach(&mut self, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
        let Some(dir) = self.pin_dir.clone() else {
            return self.attach_fresh(iface, wanted);
        };
        if let Some(mode) = pin::pinned_link_mode(&dir) {
            if wanted != AttachMode::Auto && wanted != mode {
                bail!(
                    "--xdp-mode {} asked for, but the filter pinned in {} is attached in {} mode: start with \
                     --xdp-mode {} (or auto), or `helo detach` it first (the box is unfiltered until the new start)",
                    wanted.as_str(),
                    dir.display(),
                    mode.as_str(),
                    mode.as_str()
                );
            }
            let path = pin::link_path(&dir, mode);
            let pinned = PinnedLink::from_pin(&path).context("opening the pinned XDP link")?;
            let link = XdpLink::try_from(FdLink::from(pinned)).context("the pinned link is not an XDP link")?;
            self.program_mut().attach_to_link(link).context("swapping the program into the pinned link")?;
            tracing::info!("reattached to the pinned XDP link at {} ({} mode)", path.display(), mode.as_str());
            self.attached = Some(mode);
            return Ok(mode);
        }
        let mode = self.attach_fresh(iface, wanted)?;
        let id = self.last_link_id.take().expect("attach_fresh sets it");
        let link = self.program_mut().take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                fd_link.pin(pin::link_path(&dir, mode)).context("pinning the XDP link")?;
            }
            Err(_) => tracing::warn!(
                "the kernel attached XDP through netlink, not a bpf link: the filter cannot be pinned and \
                 stops when the agent does"
            ),
        }
        Ok(mode)
    }

    fn attach_fresh(&mut self, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
        let c_iface = std::ffi::CString::new(iface).context("interface name with a NUL byte")?;
        // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
        if unsafe { libc::if_nametoindex(c_iface.as_ptr()) } == 0 {
            bail!("no interface named {iface} in this network namespace ({})", std::io::Error::last_os_error());
        }
        let used = match self.program_mut().attach(iface, xdp_mode(wanted)) {
            Ok(id) => {
                self.last_link_id = Some(id);
                if wanted == AttachMode::Auto {
                    AttachMode::Native
                } else {
                    wanted
                }
            }
            Err(native_err) if wanted == AttachMode::Auto => {
                let native_err = anyhow::Error::from(native_err).context(format!("attaching XDP to {iface} in native mode"));
                let native_err = with_hint(native_err, iface);
                if attach_hint(&native_err, iface).is_some_and(|h| h.starts_with("another XDP program")) {
                    return Err(native_err);
                }
                tracing::warn!(
                    "{native_err:#}; --xdp-mode auto: falling back to skb mode, which is slower (the packet is \
                     parsed after the kernel built an skb)"
                );
                let id = self
                    .program_mut()
                    .attach(iface, XdpMode::Skb)
                    .map_err(|e| with_hint(anyhow::Error::from(e).context(format!("attaching XDP to {iface} in skb mode")), iface))?;
                self.last_link_id = Some(id);
                AttachMode::Skb
            }
            Err(e) => {
                let e = anyhow::Error::from(e).context(format!("attaching XDP to {iface} in {} mode", wanted.as_str()));
                return Err(with_hint(e, iface));
            }
        };
        self.attached = Some(used);
        Ok(used)
    }

    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.attached
    }

    /// The program's kernel id, as `bpftool prog` shows it.
    pub fn program_id(&self) -> Option<u32> {
        self.program().info().ok().map(|i| i.id())
    }

    /// The drop-event ring. It can be taken once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}
