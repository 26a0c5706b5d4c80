//! The replies the agent writes itself. Everything else the client reads comes from the MTA.

pub const NEED_GREETING: &str = "503 5.5.1 Send HELO/EHLO first";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long";
pub const OK: &str = "250 2.0.0 OK";
pub const BYE: &str = "221 2.0.0 Bye";
pub const BACKEND_DOWN: &str = "421 4.3.2 Service not available, try later";
pub const TOO_MANY_CONNECTIONS: &str = "421 4.7.0 Too many connections";
pub const TOO_MANY_ERRORS: &str = "421 4.7.0 Too many errors";
pub const TIMEOUT: &str = "421 4.4.2 Timeout exceeded";

pub fn banner(hostname: &str) -> String {
    format!("220 {hostname} ESMTP")
}

/// For a kernel drop of an entry this agent does not know the words for (listed by an operator
/// before a restart, say).
pub const KERNEL_DROP_DEFAULT: &str = "550 5.7.1 Bogus HELO";
