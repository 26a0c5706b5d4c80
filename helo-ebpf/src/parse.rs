//! Header parsing: one forward-only cursor and one small `parse_<layer>` function per layer, in the
//! style of xdp-tutorial's parsing helpers. Each function checks its bytes against `data_end`
//! before reading them and returns the reason ([`Pass`]) when it gives up, so the caller can pass
//! the packet and count why.

use aya_ebpf::programs::XdpContext;
use helo_common::maps::FlowKey;

use crate::decision::Pass;

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const TCP_HDR_LEN: usize = 20;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// How many VLAN tags and IPv6 extension headers are walked before giving up.
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 6;

/// No header we parse starts beyond this offset; the bound also keeps the verifier's view of the
/// cursor small.
const MAX_HEADER_OFFSET: usize = 4096;

/// Offset from the start of the frame. Only moves forward.
pub struct Cursor {
    pos: usize,
}

impl Cursor {
    pub fn new() -> Self {
        Self { pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// A pointer to `len` readable bytes at the cursor, or `None` past the end of the frame.
    #[inline(always)]
    fn bytes(&self, ctx: &XdpContext, len: usize) -> Option<*const u8> {
        let pos = self.pos;
        if pos > MAX_HEADER_OFFSET {
            return None;
        }
        let start = ctx.data() + pos;
        if start + len > ctx.data_end() {
            return None;
        }
        Some(start as *const u8)
    }

    /// Whether `len` bytes from the cursor lie within the frame, without reading them.
    #[inline(always)]
    fn has(&self, ctx: &XdpContext, len: usize) -> bool {
        ctx.data() + self.pos + len <= ctx.data_end()
    }

    #[inline(always)]
    fn advance(&mut self, len: usize) {
        self.pos += len;
    }
}

/// Reads a fixed-size header at the cursor. This is the one place packet memory is read.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, cur: &Cursor) -> Option<[u8; N]> {
    let p = cur.bytes(ctx, N)?;
    // SAFETY: `bytes` checked that N bytes from `p` lie within [data, data_end).
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

/// The eight bytes at `data + base + off` (little-endian), read in place from the packet with one
/// 8-byte load: the greeting's fast path reads the payload this way, with no copy.
#[inline(always)]
pub fn read_u64_at(data: usize, data_end: usize, base: usize, off: usize) -> Option<u64> {
    // Bounded first, then hidden from LLVM: it would otherwise fold a caller's `x - 8` with the
    // `+ 8` below, or hoist `data + base` out of a loop above this check, into code whose
    // bounds the verifier cannot follow.
    let off = opaque(off);
    if base > MAX_HEADER_OFFSET + 60 || off > 4096 {
        return None;
    }
    let start = data + opaque(base) + opaque(off);
    if start + 8 > data_end {
        return None;
    }
    let v: u64;
    // SAFETY: the 8 bytes from `start` lie within [data, data_end), checked just above. The load
    // is written out because Rust would split an unaligned read into eight byte loads; BPF's
    // 8-byte load has no alignment requirement on packet data where the kernel does not ask for
    // strict alignment (x86-64, arm64).
    unsafe {
        core::arch::asm!("{0} = *(u64 *)({1} + 0)", out(reg) v, in(reg) start, options(readonly, nostack));
    }
    Some(v)
}

/// `x`, through a register move LLVM cannot see through or move.
#[inline(always)]
pub fn opaque(mut x: usize) -> usize {
    // SAFETY: a register move to itself.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) x, options(nomem, nostack)) };
    x
}

/// The network layer's result.
pub struct Ip {
    /// Where the source address starts in the frame (the destination follows it); the addresses
    /// are only read when a flow key is needed ([`Segment::flow_key`]).
    pub addrs_offset: usize,
    pub v6: bool,
    /// Bytes of transport header plus payload, from the IP length field (not the frame length:
    /// short frames carry Ethernet padding).
    pub l4_len: usize,
}

/// The transport layer's result.
pub struct Tcp {
    pub sport_be: u16,
    pub dport: u16,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub payload_len: usize,
}

pub enum L3 {
    V4,
    V6,
}

/// Ethernet plus up to two VLAN tags (802.1Q, 802.1ad): the network protocol.
#[inline(always)]
pub fn parse_ethernet(ctx: &XdpContext, cur: &mut Cursor) -> Result<L3, Pass> {
    let eth: [u8; ETH_HDR_LEN] = read(ctx, cur).ok_or(Pass::Malformed)?;
    cur.advance(ETH_HDR_LEN);
    let mut proto = be16(eth[12], eth[13]);
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag: [u8; VLAN_HDR_LEN] = read(ctx, cur).ok_or(Pass::Malformed)?;
        cur.advance(VLAN_HDR_LEN);
        proto = be16(tag[2], tag[3]);
    }
    match proto {
        ETH_P_IPV4 => Ok(L3::V4),
        ETH_P_IPV6 => Ok(L3::V6),
        _ => Err(Pass::NotIp),
    }
}

/// IPv4 with options (IHL 5–15). Fragments are passed: only a whole first segment is judged.
#[inline(always)]
pub fn parse_ipv4(ctx: &XdpContext, cur: &mut Cursor) -> Result<Ip, Pass> {
    let h: [u8; IPV4_HDR_LEN] = read(ctx, cur).ok_or(Pass::Malformed)?;
    let version = h[0] >> 4;
    let hdr_len = ((h[0] & 0x0f) as usize) * 4;
    if version != 4 || hdr_len < IPV4_HDR_LEN {
        return Err(Pass::Malformed);
    }
    let total_len = be16(h[2], h[3]) as usize;
    if total_len < hdr_len {
        return Err(Pass::Malformed);
    }
    // A frame shorter than its IP header says was cut somewhere: it is not judged.
    if !cur.has(ctx, total_len) {
        return Err(Pass::Truncated);
    }
    // More-fragments flag or a non-zero offset.
    if be16(h[6], h[7]) & 0x3fff != 0 {
        return Err(Pass::Fragment);
    }
    if h[9] != IPPROTO_TCP {
        return Err(Pass::NotTcp);
    }
    let addrs_offset = cur.pos() + 12;
    cur.advance(hdr_len);
    Ok(Ip { addrs_offset, v6: false, l4_len: total_len - hdr_len })
}

/// IPv6, skipping hop-by-hop, routing, destination-options and AH headers (up to a bound).
#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext, cur: &mut Cursor) -> Result<Ip, Pass> {
    let h: [u8; IPV6_HDR_LEN] = read(ctx, cur).ok_or(Pass::Malformed)?;
    if h[0] >> 4 != 6 {
        return Err(Pass::Malformed);
    }
    let mut remaining = be16(h[4], h[5]) as usize;
    if !cur.has(ctx, IPV6_HDR_LEN + remaining) {
        return Err(Pass::Truncated);
    }
    let mut next = h[6];
    let addrs_offset = cur.pos() + 8;
    cur.advance(IPV6_HDR_LEN);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let e: [u8; 2] = read(ctx, cur).ok_or(Pass::Malformed)?;
                next = e[0];
                (e[1] as usize + 1) * 8
            }
            IPV6_AUTH => {
                let e: [u8; 2] = read(ctx, cur).ok_or(Pass::Malformed)?;
                next = e[0];
                (e[1] as usize + 2) * 4
            }
            IPV6_FRAGMENT => return Err(Pass::Fragment),
            _ => break,
        };
        if ext_len > remaining {
            return Err(Pass::Malformed);
        }
        remaining -= ext_len;
        cur.advance(ext_len);
    }
    match next {
        IPPROTO_TCP => {}
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => return Err(Pass::Malformed),
        IPV6_FRAGMENT => return Err(Pass::Fragment),
        _ => return Err(Pass::NotTcp),
    }
    Ok(Ip { addrs_offset, v6: true, l4_len: remaining })
}

/// TCP with options (data offset 5–15). Leaves the cursor at the payload.
#[inline(always)]
pub fn parse_tcp(ctx: &XdpContext, cur: &mut Cursor, l4_len: usize) -> Result<Tcp, Pass> {
    let h: [u8; TCP_HDR_LEN] = read(ctx, cur).ok_or(Pass::Malformed)?;
    let hdr_len = ((h[12] >> 4) as usize) * 4;
    if hdr_len < TCP_HDR_LEN || hdr_len > l4_len {
        return Err(Pass::Malformed);
    }
    if !cur.has(ctx, hdr_len) {
        return Err(Pass::Truncated);
    }
    cur.advance(hdr_len);
    let flags = h[13];
    Ok(Tcp {
        sport_be: u16::from_ne_bytes([h[0], h[1]]),
        dport: be16(h[2], h[3]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        payload_len: l4_len - hdr_len,
    })
}

/// A parsed TCP segment: where its addresses are, and its TCP facts.
pub struct Segment {
    pub addrs_offset: usize,
    pub v6: bool,
    pub tcp: Tcp,
    /// Offset of the payload from the start of the frame.
    pub payload_offset: usize,
}

impl Segment {
    /// The flow (client → server), read from the frame only now: most payloads are passed before
    /// a flow is needed. `None` cannot happen for a segment `parse_segment` returned (its headers
    /// were checked to be in the frame), but a `None` is passed, never guessed at.
    #[inline(always)]
    pub fn flow_key(&self, ctx: &XdpContext) -> Option<FlowKey> {
        let (data, end, at) = (ctx.data(), ctx.data_end(), self.addrs_offset);
        let (saddr, daddr) = if self.v6 {
            (
                words(read_u64_at(data, end, at, 0)?, read_u64_at(data, end, at, 8)?),
                words(read_u64_at(data, end, at, 16)?, read_u64_at(data, end, at, 24)?),
            )
        } else {
            // Both IPv4 addresses in one load, each stored IPv4-mapped (`::ffff:a.b.c.d`).
            let both = read_u64_at(data, end, at, 0)?;
            let mapped = |v4: u32| [0, 0, 0xffff_0000, v4];
            (mapped(both as u32), mapped((both >> 32) as u32))
        };
        Some(FlowKey::from_words(saddr, daddr, self.tcp.sport_be, self.tcp.dport.to_be()))
    }
}

/// Sixteen address bytes from two little-endian loads of them, as [`FlowKey`] keeps them.
#[inline(always)]
fn words(lo: u64, hi: u64) -> [u32; 4] {
    [lo as u32, (lo >> 32) as u32, hi as u32, (hi >> 32) as u32]
}

/// All layers, outermost first.
#[inline(always)]
pub fn parse_segment(ctx: &XdpContext) -> Result<Segment, Pass> {
    let mut cur = Cursor::new();
    let ip = match parse_ethernet(ctx, &mut cur)? {
        L3::V4 => parse_ipv4(ctx, &mut cur)?,
        L3::V6 => parse_ipv6(ctx, &mut cur)?,
    };
    let tcp = parse_tcp(ctx, &mut cur, ip.l4_len)?;
    Ok(Segment { addrs_offset: ip.addrs_offset, v6: ip.v6, tcp, payload_offset: cur.pos() })
}
