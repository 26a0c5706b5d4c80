//! Hand-built Ethernet frames for BPF_PROG_TEST_RUN: every header field the XDP parser reads can
//! be set, including the wrong values (bad IHL, bad data offset, lengths that lie).

use std::net::IpAddr;

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;

/// IPv6 extension headers the builder can insert, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    HopByHop,
    Routing,
    DestOpts,
    Fragment,
}

impl Ipv6Ext {
    fn number(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Routing => 43,
            Self::DestOpts => 60,
            Self::Fragment => 44,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub vlan_tpids: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4: 32-bit words of options (0–10).
    pub ipv4_option_words: u8,
    /// IPv4: overrides the IHL field (to write an invalid one).
    pub ipv4_ihl_override: Option<u8>,
    /// IPv4: the flags/fragment-offset field (host order), e.g. 0x2000 for more-fragments.
    pub ipv4_frag: u16,
    pub ipv6_ext: Vec<Ipv6Ext>,
    /// IP protocol / next header (6 for TCP).
    pub ip_proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub tcp_flags: u8,
    /// 32-bit words of TCP options (0–10).
    pub tcp_option_words: u8,
    /// Overrides the data-offset field.
    pub tcp_doff_override: Option<u8>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A first client segment carrying `payload`, from `src` to `dst` port 25.
    pub fn tcp(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Self {
        Self {
            vlan_tpids: vec![],
            src,
            dst,
            ipv4_option_words: 0,
            ipv4_ihl_override: None,
            ipv4_frag: 0x4000, // don't fragment
            ipv6_ext: vec![],
            ip_proto: 6,
            sport: 40000,
            dport: 25,
            seq: 1000,
            tcp_flags: TCP_ACK | TCP_PSH,
            tcp_option_words: 0,
            tcp_doff_override: None,
            payload: payload.to_vec(),
        }
    }

    /// This frame's SYN: same flow, sequence number one before the first payload byte.
    pub fn syn(&self) -> Self {
        Self { seq: self.seq.wrapping_sub(1), tcp_flags: TCP_SYN, payload: vec![], ..self.clone() }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for (i, tpid) in self.vlan_tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI
        }
        let mut tcp = self.tcp_segment();
        if self.ip_proto == 6 && self.tcp_doff_override.is_none() {
            // Real checksums, so the receiving TCP stack (and iptables behind it) takes the frame
            // as a real segment; the XDP program never checks them.
            let sum = tcp_checksum(self.src, self.dst, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let opt_len = self.ipv4_option_words as usize * 4;
                let ihl = self.ipv4_ihl_override.unwrap_or(5 + self.ipv4_option_words);
                let total = (20 + opt_len + tcp.len()) as u16;
                f.push(0x40 | (ihl & 0x0f));
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34]);
                f.extend_from_slice(&self.ipv4_frag.to_be_bytes());
                f.push(64);
                f.push(self.ip_proto);
                f.extend_from_slice(&[0, 0]); // checksum: XDP does not check it
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for i in 0..opt_len {
                    f.push(if i + 1 == opt_len { 0 } else { 1 }); // NOPs, then end-of-list
                }
                let ip_start = f.len() - 20 - opt_len;
                let sum = checksum(&f[ip_start..], 0);
                f[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                let mut ext = Vec::new();
                for (i, e) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).map(|n| n.number()).unwrap_or(self.ip_proto);
                    match e {
                        Ipv6Ext::Fragment => ext.extend_from_slice(&[next, 0, 0, 1, 0, 0, 0, 7]),
                        Ipv6Ext::Routing => ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]),
                        // PadN option filling the 6 bytes after next/len.
                        _ => ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
                let first = self.ipv6_ext.first().map(|e| e.number()).unwrap_or(self.ip_proto);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
            }
            _ => panic!("source and destination must be of one family"),
        }
        f.extend_from_slice(&tcp);
        f
    }

    fn tcp_segment(&self) -> Vec<u8> {
        let opt_len = self.tcp_option_words as usize * 4;
        let doff = self.tcp_doff_override.unwrap_or(5 + self.tcp_option_words);
        let mut t = Vec::with_capacity(20 + opt_len + self.payload.len());
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.push(doff << 4);
        t.push(self.tcp_flags);
        t.extend_from_slice(&65535u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend(std::iter::repeat_n(1u8, opt_len)); // NOPs
        t.extend_from_slice(&self.payload);
        t
    }
}

/// The Internet checksum (RFC 1071) of `data`, starting from `initial`.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        }
        _ => return 0,
    }
    pseudo.extend_from_slice(segment);
    checksum(&pseudo, 0)
}
