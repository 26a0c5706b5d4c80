//! Blocklist management and stats for operators: a JSON-lines protocol over a root-only Unix
//! socket to the running agent, or, with no agent running, the same operations on the store in
//! the state directory.
//!
//! - [`protocol`]: requests and responses;
//! - [`ops`]: the operations, on the live blocklist or on the store alone;
//! - [`server`]: the agent's side of the socket;
//! - [`client`]: the command line's side, with the offline fallback.

pub mod client;
pub mod ops;
pub mod protocol;
pub mod server;

#[cfg(test)]
mod tests;
