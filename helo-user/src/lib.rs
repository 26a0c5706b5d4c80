//! The helo agent, as a library: the binary in `main.rs` is a thin command line over it.
//!
//! How a greeting flows through it: the packet meets the XDP program first ([`kernel`]), which
//! drops what is already listed; what passes reaches the agent's SMTP session, whose greeting the
//! classifier judges; a rejection is replied to and listed in the kernel, a clean session is
//! handed to the MTA.

pub mod kernel;
