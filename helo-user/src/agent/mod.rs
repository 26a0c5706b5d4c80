//! The agent's composition: how it starts and what runs beside its sessions. Everything the agent
//! is made of is imported from here, and nothing imports this module but the command line (and
//! the in-process tests): the parts it starts share an [`crate::agent_state::Agent`], which lives
//! below them.
//!
//! - [`start`] composes it: ports and paths first, then the kernel, the blocklist, the fleet, the
//!   jobs;
//! - [`Running::serve`] accepts SMTP until the caller's shutdown future completes;
//! - `jobs.rs`: what runs beside the sessions (drop events, metrics, expiry, reconcile, admin);
//! - `drops.rs`: what a drop the kernel reports means to the agent (answer and end the session,
//!   count it for `top`, record a ladder listing);
//! - `start_undo.rs`: a failed start leaves the box as it found it.

mod drops;
mod jobs;
mod start;
mod start_undo;

pub use start::{start, Running};
