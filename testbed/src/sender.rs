//! A real Postfix as the *sending* MTA, in the client namespace: what an ISP's customers run.
//!
//! Each route sends one recipient domain to a next hop through its own `smtp` transport with its
//! own `smtp_helo_name`, so one instance can greet as a clean server and as each kind of
//! misconfigured one. Mail is submitted to its plain smtpd port (from inside the namespace);
//! bounces come back to `BOUNCE_USER`'s Maildir. The maillog is where a sender's admin reads why
//! mail did not go: the tests read it the same way.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    netns::Netns,
    postfix::{Postfix, PostfixConfig},
};

pub const BOUNCE_DOMAIN: &str = "sender.example";
/// The envelope sender of submitted mail; its bounces are delivered here.
pub const BOUNCE_USER: &str = "alice@sender.example";
/// The sender instance's own host name.
pub const SENDER_HOSTNAME: &str = "mta.sender.example";

/// Mail for `domain` leaves through a transport that greets with `helo`.
pub struct Route {
    pub domain: String,
    pub helo: String,
}

impl Route {
    pub fn new(domain: &str, helo: &str) -> Self {
        Self { domain: domain.to_owned(), helo: helo.to_owned() }
    }
}

/// One recipient's final line in the sender's maillog.
#[derive(Debug)]
pub struct Outcome {
    pub status: String,
    /// The whole log line.
    pub line: String,
}

/// Starts a sending Postfix on `listen_ip` in `ns`, routing each route's domain to
/// `[next_hop]:25`.
pub fn start(ns: &Netns, listen_ip: &str, next_hop: Ipv4Addr, routes: &[Route]) -> Result<Postfix> {
    let mut master = Vec::new();
    let mut transport = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        master.push(format!("t{i} unix - - n - - smtp\n  -o smtp_helo_name={}", r.helo));
        transport.push(format!("{{{}=t{i}:[{next_hop}]:25}}", r.domain));
    }
    Postfix::start(
        ns,
        PostfixConfig {
            listen_ip: listen_ip.to_owned(),
            proxy_port: 10027,
            plain_port: 10028,
            domains: vec![BOUNCE_DOMAIN.into()],
            users: vec![BOUNCE_USER.into()],
            myhostname: SENDER_HOSTNAME.into(),
            tls: false,
            extra_main_cf: vec![
                format!("transport_maps = inline:{{ {} }}", transport.join(", ")),
                // Addresses only, never the resolver: the next hops are [literals].
                "smtp_host_lookup = native".into(),
                "smtp_tls_security_level = none".into(),
                // Log the whole SMTP dialogue with the next hop: what an admin would turn on.
                format!("debug_peer_list = {next_hop}"),
                "notify_classes =".into(),
            ],
            extra_master_cf: master,
        },
    )
}

/// Submission port of a sender started by [`start`].
pub const SUBMIT_PORT: u16 = 10028;

impl Postfix {
    /// Waits for the final `status=` line of `rcpt` in this instance's maillog.
    pub fn wait_for_outcome(&self, rcpt: &str, timeout: Duration) -> Result<Outcome> {
        let needle = format!("to=<{rcpt}>");
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.maillog();
            let found = log.lines().rfind(|l| l.contains(&needle) && l.contains(" status="));
            if let Some(line) = found {
                let status = line.split(" status=").nth(1).unwrap_or("").split_whitespace().next().unwrap_or("").to_owned();
                return Ok(Outcome { status, line: line.to_owned() });
            }
            if Instant::now() >= deadline {
                bail!("no outcome for {rcpt} within {timeout:?}; maillog tail:\n{}", self.maillog_tail(40));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}
