//! A client that frames one SMTP session the way a test asks, with the kernel's own TCP: from a
//! chosen source address, optionally with IPv6 extension headers on every packet, its opening bytes
//! (leading commands and greetings) cut into segments at given offsets (TCP_NODELAY and a pause
//! between writes, so each piece leaves as its own segment), then MAIL, RCPT, DATA and a message one
//! at a time. Every reply is recorded for the test to judge; nothing here decides what is right.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IPv6 extension headers the kernel adds to every packet of the connection (sticky options), by
/// their size in bytes (a multiple of 8, at most 256), each filled with one option the receiver skips.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ipv6Ext {
    pub hop_by_hop: Option<usize>,
    pub dest_opts: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub source: IpAddr,
    pub server: SocketAddr,
    pub ipv6_ext: Ipv6Ext,
    /// The bytes sent after the banner, before MAIL: leading commands and greeting lines.
    pub opening: Vec<u8>,
    /// How many replies the opening asks for (one per line).
    pub opening_lines: usize,
    /// Offsets into `opening` where a new segment starts.
    pub cuts: Vec<usize>,
    pub gap: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub mail_from: String,
    pub rcpt: String,
    /// The message sent if DATA is accepted (headers and body, CRLF lines, without the final dot).
    pub message: String,
}

/// What the client saw.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Why no TCP connection was made (a listed source's SYN dropped, say).
    pub not_connected: Option<String>,
    pub banner: Option<String>,
    /// Replies read after the opening, in order (fewer than asked for if the server closed).
    pub opening: Vec<String>,
    /// (command, reply) for what followed the opening, while the server still answered.
    pub after: Vec<(&'static str, String)>,
    /// The opening pieces as written, for a failure message.
    pub pieces: Vec<usize>,
}

impl Transcript {
    /// Every reply read, banner first, with what it answered.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        let banner = self.banner.iter().map(|b| ("banner", b.as_str()));
        let opening = self.opening.iter().map(|r| ("opening", r.as_str()));
        let after = self.after.iter().map(|(c, r)| (*c, r.as_str()));
        banner.chain(opening).chain(after)
    }

    pub fn reply_to(&self, command: &str) -> Option<&str> {
        self.after.iter().find(|(c, _)| *c == command).map(|(_, r)| r.as_str())
    }
}

/// Runs the session; call it from a thread inside the client's namespace.
pub fn run(s: &Session) -> Transcript {
    let mut t = Transcript::default();
    let mut stream = match connect(s) {
        Ok(stream) => stream,
        Err(e) => {
            t.not_connected = Some(e.to_string());
            return t;
        }
    };
    let mut replies = Replies { buf: Vec::new(), closed: false };
    t.banner = replies.next(&mut stream);
    let mut start = 0;
    for &end in s.cuts.iter().chain(std::iter::once(&s.opening.len())) {
        if start > 0 {
            thread::sleep(s.gap);
        }
        if stream.write_all(&s.opening[start..end]).is_err() {
            break;
        }
        t.pieces.push(end - start);
        start = end;
    }
    while t.opening.len() < s.opening_lines {
        match replies.next(&mut stream) {
            Some(r) => t.opening.push(r),
            None => break,
        }
    }
    let rest: [(&'static str, String); 3] =
        [("MAIL", format!("MAIL FROM:<{}>\r\n", s.mail_from)), ("RCPT", format!("RCPT TO:<{}>\r\n", s.rcpt)), ("DATA", "DATA\r\n".into())];
    for (what, line) in rest {
        if replies.closed || stream.write_all(line.as_bytes()).is_err() {
            return t;
        }
        match replies.next(&mut stream) {
            Some(r) => t.after.push((what, r)),
            None => return t,
        }
    }
    if t.reply_to("DATA").is_some_and(|r| r.starts_with("354")) {
        let body = format!("{}\r\n.\r\n", s.message);
        if stream.write_all(body.as_bytes()).is_ok() {
            if let Some(r) = replies.next(&mut stream) {
                t.after.push(("end of data", r));
            }
        }
    }
    if !replies.closed && stream.write_all(b"QUIT\r\n").is_ok() {
        if let Some(r) = replies.next(&mut stream) {
            t.after.push(("QUIT", r));
        }
    }
    t
}

fn connect(s: &Session) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(s.server), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::new(s.source, 0)))?;
    if let Some(len) = s.ipv6_ext.hop_by_hop {
        set_ipv6_option(&socket, libc::IPV6_HOPOPTS, &skippable_header(len))?;
    }
    if let Some(len) = s.ipv6_ext.dest_opts {
        set_ipv6_option(&socket, libc::IPV6_DSTOPTS, &skippable_header(len))?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.connect_timeout(&SockAddr::from(s.server), s.connect_timeout)?;
    socket.set_read_timeout(Some(s.read_timeout))?;
    socket.set_write_timeout(Some(s.read_timeout))?;
    Ok(socket.into())
}

/// An options header of `len` bytes (the kernel fills in its next-header byte) holding one option
/// of type 0x1e (RFC 4727's experimental type, whose top bits say "skip it if unknown"). Padding
/// would be simpler, but Linux drops a packet with more than 7 bytes of padding in a row.
fn skippable_header(len: usize) -> Vec<u8> {
    assert!(len.is_multiple_of(8) && (8..=256).contains(&len), "extension header length {len}");
    let mut h = vec![0u8; len];
    h[1] = (len / 8 - 1) as u8;
    h[2] = 0x1e;
    h[3] = (len - 4) as u8;
    h
}

fn set_ipv6_option(socket: &Socket, name: libc::c_int, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `value`, which outlives the call; the kernel copies it.
    let rc =
        unsafe { libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_IPV6, name, value.as_ptr().cast(), value.len() as libc::socklen_t) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SMTP replies read off one stream, split at reply boundaries (several may arrive at once).
struct Replies {
    buf: Vec<u8>,
    closed: bool,
}

impl Replies {
    /// The next whole reply, or `None` once the server closed or went quiet for the read timeout.
    fn next(&mut self, stream: &mut TcpStream) -> Option<String> {
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply: Vec<u8> = self.buf.drain(..end).collect();
                return Some(String::from_utf8_lossy(&reply).into_owned());
            }
            if self.closed {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    self.closed = true;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Where the first whole reply in `buf` ends: after the CRLF of a line whose fourth byte is not `-`.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = &buf[start..start + pos];
        start += pos + 2;
        if line.get(3) != Some(&b'-') {
            return Some(start);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_end_at_the_last_line_of_a_multiline_reply() {
        assert_eq!(reply_end(b"250-a\r\n250 b\r\n550 c\r\n"), Some(14));
        assert_eq!(reply_end(b"250-a\r\n250 b"), None);
        assert_eq!(reply_end(b"221\r\n"), Some(5));
    }

    #[test]
    fn an_options_header_is_one_skippable_option_filling_it() {
        let h = skippable_header(16);
        assert_eq!(&h[..4], &[0, 1, 0x1e, 12]);
        assert_eq!(h.len(), 16);
    }
}
