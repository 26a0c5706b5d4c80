//! What one call to the classifier looks at: the greeting and what is known about its sender.
//!
//! Everything is borrowed, so the agent can classify straight out of its session buffers.

use std::net::IpAddr;

/// The greeting verb. Both are classified alike; the verb is carried for logs and callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    Helo,
    Ehlo,
}

impl Verb {
    /// Parses a verb in any case (`helo`, `EHLO`, `Ehlo`, ...).
    pub fn parse(s: &str) -> Option<Verb> {
        if s.eq_ignore_ascii_case("helo") {
            Some(Verb::Helo)
        } else if s.eq_ignore_ascii_case("ehlo") {
            Some(Verb::Ehlo)
        } else {
            None
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
        }
    }
}

/// Everything the classifier looks at for one greeting, its whole input: the greeting (verb and
/// argument) and what is known about its sender (address, RCPT addresses so far, rDNS name).
///
/// The classifier keeps no state between calls: an EHLO after STARTTLS, or a second HELO in the
/// same session, is simply classified again as its own greeting.
#[derive(Clone, Copy, Debug)]
pub struct GreetingFacts<'a> {
    pub verb: Verb,
    /// The argument exactly as the client sent it: not yet lower-cased, trailing dot and all.
    /// Bytes, because the wire may carry anything.
    pub arg: &'a [u8],
    pub client_ip: IpAddr,
    /// RCPT TO addresses seen so far (empty at HELO time). Enables the RCPT-time form of
    /// `helo_matches_rcpt`. Either `user@domain` or `<user@domain>`.
    pub rcpt: &'a [&'a str],
    /// The client's rDNS name: `None` when it was not looked up, `Some("")` when the lookup found
    /// no name.
    pub client_rdns: Option<&'a str>,
}

impl<'a> GreetingFacts<'a> {
    pub fn new(verb: Verb, arg: &'a [u8], client_ip: IpAddr) -> Self {
        GreetingFacts { verb, arg, client_ip, rcpt: &[], client_rdns: None }
    }

    pub fn with_rcpt(mut self, rcpt: &'a [&'a str]) -> Self {
        self.rcpt = rcpt;
        self
    }

    pub fn with_rdns(mut self, rdns: Option<&'a str>) -> Self {
        self.client_rdns = rdns;
        self
    }
}
