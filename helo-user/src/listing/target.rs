//! What a source entry's name stands for: one address, or a network.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

/// A source entry's address, or its network (a CIDR, kept in its canonical form:
/// `198.18.99.0/24`, never `198.18.99.7/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceTarget {
    Addr(IpAddr),
    Net(ipnet::IpNet),
}

pub fn source_target(name: &str) -> Result<SourceTarget> {
    if name.contains('/') {
        let net: ipnet::IpNet = name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?;
        if net.to_string() != net.trunc().to_string() {
            bail!("{name:?} has host bits set; write {}", net.trunc());
        }
        Ok(SourceTarget::Net(net))
    } else {
        Ok(SourceTarget::Addr(name.parse().with_context(|| format!("{name:?} is not an address or a CIDR"))?))
    }
}
