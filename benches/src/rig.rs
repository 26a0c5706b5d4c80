//! What the report binaries do to a test namespace's interfaces: run a shell command there, read
//! an interface's MAC and receive count, and put up (and read, and take down) the nftables rule
//! the comparisons use.

use anyhow::{bail, Result};
use helo_testbed::netns::Netns;

/// `sh -c script` inside `ns`; its stdout, or an error with its stderr.
pub fn sh(ns: &Netns, script: &str) -> Result<String> {
    let out = ns.command("sh").arg("-c").arg(script).output()?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn mac(ns: &Netns, ifname: &str) -> Result<Vec<u8>> {
    let text = sh(ns, &format!("cat /sys/class/net/{ifname}/address"))?;
    Ok(text.trim().split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>()?)
}

pub fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    Ok(sh(ns, &format!("cat /sys/class/net/{ifname}/statistics/rx_packets"))?.trim().parse()?)
}

/// The nftables arm: a netdev ingress rule on `ifname` dropping TCP to port 25 whose payload
/// starts with `EHLO <name>` (its first 16 bytes: nft compares at most 128 bits in one payload
/// expression; the segment has no TCP options), with a counter.
pub fn nft_drop_greeting(ns: &Netns, ifname: &str, name: &str) -> Result<()> {
    let hex: String = format!("EHLO {name}").bytes().take(16).map(|b| format!("{b:02x}")).collect();
    sh(ns, &format!(
        "nft add table netdev helobench && nft add chain netdev helobench in '{{ type filter hook ingress device {ifname} priority 0; }}' && \
         nft add rule netdev helobench in tcp dport 25 @th,160,128 0x{hex} counter drop"
    ))?;
    Ok(())
}

/// Packets the nftables rule has dropped so far.
pub fn nft_dropped(ns: &Netns) -> Result<u64> {
    let rules = sh(ns, "nft list table netdev helobench")?;
    Ok(rules.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0))
}

pub fn nft_remove(ns: &Netns) -> Result<()> {
    sh(ns, "nft delete table netdev helobench").map(|_| ())
}
