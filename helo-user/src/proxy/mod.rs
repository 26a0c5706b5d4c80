//! Handing a clean session to the MTA: a PROXY protocol v2 header carrying the client's address,
//! the replayed greeting ([`backend`]), then the [`relay`].

pub mod backend;
mod hand_off;
pub mod header;
pub mod health;
pub mod relay;

pub use hand_off::{hand_off, HandOff, HandOffEnd};
