//! The blocklist as the agent enforces it itself. XDP is the cheap path, not the only one: a
//! listed greeting that the kernel never judged (after a NOOP, split over two segments, a second
//! EHLO, on a host run with `--no-xdp`, sent as fragments) and a listed source whose SYN got
//! through are refused here with the entry's own reply.

use std::net::IpAddr;

use helo_common::{hash_normalised, normalised_arg};

use super::Blocklist;
use crate::listing::clock::unix_now;

impl Blocklist {
    /// The reply of the live entry listing this greeting argument (raw, as sent), if any. The
    /// lookup is the kernel's: the keyed hash of the normalised argument.
    pub fn helo_refusal(&self, raw_arg: &[u8]) -> Option<String> {
        let normalised: Vec<u8> = normalised_arg(raw_arg).collect();
        let hash = hash_normalised(&self.tables.key, &normalised);
        let now = unix_now();
        self.tables.helo_index.lock().unwrap().get(&hash).filter(|e| !e.expired(now)).map(|e| e.reply.clone())
    }

    /// The reply of the live entry listing this client (its address, or the most specific listed
    /// network holding it), if any.
    pub fn source_refusal(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let now = unix_now();
        if let Some(e) = self.tables.sources.lock().unwrap().get(&ip).filter(|e| !e.expired(now)) {
            return Some(e.reply.clone());
        }
        let nets = self.tables.nets.lock().unwrap();
        nets.iter().filter(|(n, e)| n.contains(&ip) && !e.expired(now)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, e)| e.reply.clone())
    }
}
