//! Handing a clean session to the MTA: a PROXY protocol v2 header carrying the client's address,
//! the replayed greeting, then a relay that watches client commands until the session's content
//! starts.

pub mod header;
pub mod relay;

pub use relay::{hand_off, HandOff, HandOffEnd};
