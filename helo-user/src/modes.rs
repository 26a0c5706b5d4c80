//! The run modes an operator chooses: what the filter does with a listed packet ([`FilterMode`])
//! and how the program is attached ([`AttachMode`]). Plain configuration vocabulary, below both
//! the configuration and the kernel: `kernel/` maps them to its own values, and nothing above it
//! has to import the kernel to name a mode.

/// What the program does with a listed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Drop listed greetings and sources.
    Enforce,
    /// Count and report them, but pass. Switch a new box on this way.
    Observe,
}

/// How the program is attached (asked for: all three; attached: `native` or `skb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before an skb exists (fastest). If the driver refuses, the start fails.
    Native,
    /// Generic XDP, after the skb is built.
    Skb,
    /// Native if the driver takes it, else skb (with a warning giving the driver's reason).
    Auto,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
            Self::Auto => "auto",
        }
    }
}
