//! What the agent has listed, and the act of listing it in the kernel.
//!
//! The kernel holds only hashes and addresses; the agent keeps the original name, the reason and
//! the reply text beside each entry, so that a kernel drop can still be answered with the same
//! words the sender got on its first try.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use helo_common::{hash_helo_arg, maps::BlockEntry, HashKey};

use crate::kernel::KernelFilter;

/// One listed name or address, as the agent remembers it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    pub name: String,
    /// `helo_common::maps::reason`.
    pub reason: u32,
    pub reply: String,
    pub added_unix_s: u64,
    pub expires_unix_s: u64,
}

pub struct Blocklist {
    kernel: Arc<Mutex<KernelFilter>>,
    key: HashKey,
    helo_ttl: Duration,
    source_ttl: Duration,
    helo: Mutex<HashMap<u64, Record>>,
    sources: Mutex<HashMap<IpAddr, Record>>,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `CLOCK_BOOTTIME` in ns: the kernel's clock for entry expiry.
pub fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Blocklist {
    pub fn new(kernel: Arc<Mutex<KernelFilter>>, key: HashKey, helo_ttl: Duration, source_ttl: Duration) -> Self {
        Self {
            kernel,
            key,
            helo_ttl,
            source_ttl,
            helo: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn entry(reason: u32, ttl: Duration) -> BlockEntry {
        BlockEntry {
            reason,
            added_unix_s: unix_now(),
            expires_boot_ns: boot_now_ns() + ttl.as_nanos() as u64,
            ..Default::default()
        }
    }

    fn record(name: String, reason: u32, reply: &str, ttl: Duration) -> Record {
        let now = unix_now();
        Record { name, reason, reply: reply.to_owned(), added_unix_s: now, expires_unix_s: now + ttl.as_secs() }
    }

    /// Lists a greeting argument (as the client sent it) for every sender.
    pub fn block_helo(&self, raw_arg: &[u8], reason: u32, reply: &str) -> Result<()> {
        let hash = hash_helo_arg(&self.key, raw_arg);
        self.kernel.lock().unwrap().maps.block_helo(hash, Self::entry(reason, self.helo_ttl))?;
        let name = String::from_utf8_lossy(&helo_common::normalised_arg(raw_arg).collect::<Vec<_>>()).into_owned();
        self.helo.lock().unwrap().insert(hash, Self::record(name, reason, reply, self.helo_ttl));
        Ok(())
    }

    /// Lists a client address.
    pub fn block_source(&self, ip: IpAddr, reason: u32, reply: &str) -> Result<()> {
        let ip = ip.to_canonical();
        self.kernel.lock().unwrap().maps.block_source(ip, Self::entry(reason, self.source_ttl))?;
        self.sources.lock().unwrap().insert(ip, Self::record(ip.to_string(), reason, reply, self.source_ttl));
        Ok(())
    }

    /// The reply for a kernel drop of this greeting hash, if the agent listed it.
    pub fn helo_reply(&self, hash: u64) -> Option<String> {
        self.helo.lock().unwrap().get(&hash).map(|r| r.reply.clone())
    }

    pub fn source_reply(&self, ip: IpAddr) -> Option<String> {
        self.sources.lock().unwrap().get(&ip.to_canonical()).map(|r| r.reply.clone())
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.helo.lock().unwrap().len(), self.sources.lock().unwrap().len())
    }
}
