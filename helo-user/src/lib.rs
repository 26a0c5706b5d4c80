//! The helo agent, as a library: the binary in `main.rs` is a thin command line over it.
//!
//! How a greeting flows through it:
//! 1. [`kernel`]: the XDP program drops what is already listed, before the TCP stack sees it;
//! 2. [`server`] accepts what passes and starts a [`session`];
//! 3. the session's greeting goes to the [`classify`] rules;
//! 4. a rejection is replied to and listed ([`blocklist`]) so the kernel drops the next one;
//! 5. a clean session is handed to the MTA ([`proxy`]).
//!
//! Around it: the durable [`store`], the operator's run-time [`allow`] list, the operators' [`admin`] socket and [`metrics`]; what systemd is
//! told ([`service`]); the man pages and completions ([`generate`]). [`agent`] starts all of it;
//! the parts it starts share an [`agent_state::Agent`], below them all.

pub mod admin;
pub mod admin_cli;
pub mod agent;
pub mod agent_state;
pub mod allow;
pub mod blocklist;
pub mod classify;
pub mod cli;
pub mod config;
pub mod duration;
pub mod fleet;
pub mod generate;
pub mod kernel;
pub mod limits;
pub mod listing;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod modes;
pub mod periodic;
pub mod proxy;
pub mod ratelimit;
pub mod recent;
pub mod registry;
pub mod reload;
pub mod server;
pub mod service;
pub mod session;
pub mod session_id;
pub mod smtp;
pub mod state;
pub mod store;
pub mod top;
