//! Loading the XDP program, configuring it, and attaching it to an interface.

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, RingBuf},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use helo_common::{
    maps::{mode, names, Config, DEFAULT_HELO_CAPACITY, DEFAULT_SOURCE_CAPACITY, PROGRAM_NAME},
    HashKey,
};

use super::{maps::KernelMaps, XDP_OBJECT};

/// What the program does with a listed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Drop listed greetings and sources.
    Enforce,
    /// Count and report them, but pass. Switch a new box on this way.
    Observe,
}

impl FilterMode {
    fn kernel_value(self) -> u32 {
        match self {
            Self::Enforce => mode::ENFORCE,
            Self::Observe => mode::OBSERVE,
        }
    }
}

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before an skb exists (fastest). Falls back to `skb` if the driver refuses.
    Native,
    /// Generic XDP, after the skb is built.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Capacity of the HELO hash map (LRU).
    pub helo_capacity: u32,
    /// Capacity of the source map (LRU).
    pub source_capacity: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { helo_capacity: DEFAULT_HELO_CAPACITY, source_capacity: DEFAULT_SOURCE_CAPACITY }
    }
}

/// The loaded (and possibly attached) program with its maps. Dropping it detaches the program.
pub struct KernelFilter {
    ebpf: Ebpf,
    pub maps: KernelMaps,
    events: Option<RingBuf<MapData>>,
    attached: Option<AttachMode>,
}

impl KernelFilter {
    /// Loads the embedded object and has the verifier check the program. Nothing is attached yet,
    /// and the program passes everything until [`KernelFilter::configure`] runs.
    pub fn load(opts: LoadOptions) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::HELO_BLOCKS, opts.helo_capacity)
            .map_max_entries(names::SOURCE_BLOCKS, opts.source_capacity)
            .load(XDP_OBJECT)
            .context("loading the XDP object (are you root, with bpf and bpffs available?)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("the XDP object has no `helo` program")?
            .try_into()?;
        program.load().context("the kernel's verifier rejected the XDP program")?;
        let maps = KernelMaps::take_from(&mut ebpf)?;
        let events = ebpf.take_map(names::EVENTS).map(RingBuf::try_from).transpose()?;
        Ok(Self { ebpf, maps, events, attached: None })
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
        let config = Config { key, mode: mode.kernel_value(), _pad: 0 };
        self.maps.config.set(0, config, 0).context("writing the program's configuration")
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Attaches to `iface`. A refused native attach falls back to skb mode, with a warning.
    pub fn attach(&mut self, iface: &str, wanted: AttachMode) -> Result<AttachMode> {
        let used = match self.program_mut().attach(iface, wanted.xdp_mode()) {
            Ok(_) => wanted,
            Err(native_err) if wanted == AttachMode::Native => {
                log::warn!(
                    "native XDP attach on {iface} failed ({native_err}); falling back to skb mode, \
                     which is slower: the packet is parsed after the kernel built an skb"
                );
                self.program_mut()
                    .attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} in skb mode"))?;
                AttachMode::Skb
            }
            Err(e) => return Err(e).with_context(|| format!("attaching XDP to {iface}")),
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
