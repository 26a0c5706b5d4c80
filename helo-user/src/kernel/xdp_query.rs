//! Which XDP program an interface runs, asked the way `ip link show` asks: an rtnetlink
//! RTM_GETLINK for the interface, whose IFLA_XDP attribute names the attached program's id.
//!
//! This needs no capability. Walking the kernel's BPF links (`aya::programs::loaded_links`)
//! would, CAP_SYS_ADMIN (BPF_LINK_GET_NEXT_ID), which the systemd unit does not grant.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// IFLA_XDP's nested attributes that carry a program id (linux/if_link.h): the single attached
/// program, and the per-mode ones the kernel reports when several modes are attached.
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLA_F_NESTED: u16 = 1 << 15;

/// The interface's index, or `None` if this network namespace has no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated string only.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The ids of the XDP programs attached to interface `ifindex` (empty: none).
pub fn attached_program_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    let socket = route_socket()?;
    let mut request = Vec::with_capacity(NLMSG_HDR_LEN + IFINFOMSG_LEN);
    request.extend_from_slice(&((NLMSG_HDR_LEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
    request.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    request.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    request.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    request.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    request.extend_from_slice(&[0; 8]); // flags, change
                                        // SAFETY: sends `request.len()` bytes from a live buffer on a socket we own.
    if unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = vec![0u8; 64 * 1024];
    // SAFETY: receives at most `reply.len()` bytes into a live buffer on a socket we own.
    let n = unsafe { libc::recv(socket.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&reply[..n as usize])
}

/// A NETLINK_ROUTE socket that gives up on a reply after a second (a scrape must not hang).
fn route_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: setsockopt reads a timeval of the size passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The program ids in the first message of an RTM_GETLINK reply (an RTM_NEWLINK, or an error).
fn parse_reply(msg: &[u8]) -> io::Result<Vec<u32>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed rtnetlink reply");
    let len = (u32_at(msg, 0).ok_or_else(bad)? as usize).min(msg.len());
    let kind = u16_at(msg, 4).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, NLMSG_HDR_LEN).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != libc::RTM_NEWLINK {
        return Err(bad());
    }
    let mut ids = vec![];
    for (kind, value) in attributes(msg.get(NLMSG_HDR_LEN + IFINFOMSG_LEN..len).ok_or_else(bad)?) {
        if kind & !NLA_F_NESTED == libc::IFLA_XDP {
            for (kind, value) in attributes(value) {
                if matches!(kind, IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID | IFLA_XDP_HW_PROG_ID) {
                    ids.extend(u32_at(value, 0).filter(|&id| id != 0));
                }
            }
        }
    }
    ids.dedup();
    Ok(ids)
}

/// (type, value) of each route attribute in `b`; stops at the first malformed one.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let kind = u16_at(b, 2)?;
        let value = b.get(4..len)?;
        // Attributes are padded to four bytes.
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWLINK with one plain attribute and IFLA_XDP { ATTACHED, PROG_ID }.
    #[test]
    fn finds_the_program_id_in_a_link_message() {
        let mut attrs = vec![];
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&4u16.to_ne_bytes()); // IFLA_MTU
        attrs.extend_from_slice(&1500u32.to_ne_bytes());
        let mut xdp = vec![];
        xdp.extend_from_slice(&5u16.to_ne_bytes());
        xdp.extend_from_slice(&2u16.to_ne_bytes()); // IFLA_XDP_ATTACHED
        xdp.extend_from_slice(&[1, 0, 0, 0]); // one byte, padded
        xdp.extend_from_slice(&8u16.to_ne_bytes());
        xdp.extend_from_slice(&IFLA_XDP_PROG_ID.to_ne_bytes());
        xdp.extend_from_slice(&4242u32.to_ne_bytes());
        attrs.extend_from_slice(&((4 + xdp.len()) as u16).to_ne_bytes());
        attrs.extend_from_slice(&(libc::IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
        attrs.extend_from_slice(&xdp);
        let total = NLMSG_HDR_LEN + IFINFOMSG_LEN + attrs.len();
        let mut msg = vec![];
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[0; IFINFOMSG_LEN]);
        msg.extend_from_slice(&attrs);
        assert_eq!(parse_reply(&msg).unwrap(), vec![4242]);
    }

    #[test]
    fn an_error_reply_is_its_errno() {
        let mut msg = vec![];
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&(-libc::ENODEV).to_ne_bytes());
        msg.extend_from_slice(&[0; 16]);
        assert_eq!(parse_reply(&msg).unwrap_err().raw_os_error(), Some(libc::ENODEV));
    }

    /// The loopback interface of whatever namespace the test runs in has no XDP program.
    #[test]
    fn loopback_runs_no_xdp_program() {
        let lo = ifindex("lo").expect("a loopback interface");
        assert_eq!(attached_program_ids(lo).unwrap(), Vec::<u32>::new());
    }
}
