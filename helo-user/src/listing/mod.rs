//! The blocklist's terms: what a listing is (its kind and target, reason, reply, origin, expiry)
//! and the clocks its times are read on. Below both the blocklist, which keeps entries in step
//! across store, kernel and index, and the store, which only persists them: both speak these
//! terms, and this module knows neither.
//!
//! - [`entry`]: one listed name or address, as stored, exported, published and shown;
//! - [`origin`]: who listed it (the agent, an operator, the offender ladder, another box);
//! - [`reason`]: the reasons the code writes, and the kernel's code for each;
//! - [`target`]: what an entry lists (a greeting name, an address or a network), parsed once;
//! - [`name`]: greeting names as text, escaped without losing a byte;
//! - [`clock`]: wall-clock and monotonic-clock time, and an expiry moved from one to the other;
//! - [`allow`]: the operator's allow entries, as the store keeps them, read from an operator's
//!   spelling and merged with the config file's (the allow list's own terms, beside the
//!   blocklist's; the only file here that imports anything above, the classifier's configuration).

pub mod allow;
pub mod clock;
pub mod entry;
pub mod name;
pub mod origin;
pub mod reason;
pub mod target;

pub use self::{
    entry::Entry,
    origin::Origin,
    target::{Kind, Match, Target},
};
