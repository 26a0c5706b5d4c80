//! The SMTP wire format, shared by the session (which speaks SMTP itself until the greeting) and
//! the relay (which only watches what passes): reading command lines, recognising the few
//! commands the agent acts on, the replies it writes itself, and counting the MTA's replies.
//!
//! Nothing here knows about the classifier, the blocklist or the kernel.

pub mod command;
pub mod line;
pub mod refused;
pub mod reply;
pub mod response;
