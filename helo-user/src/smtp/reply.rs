//! The replies the agent writes itself, and the one routine that writes a reply to a client.
//! Everything else the client reads comes from the MTA, unchanged.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub const NEED_GREETING: &str = "503 5.5.1 Send HELO/EHLO first";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long";
pub const OK: &str = "250 2.0.0 OK";
pub const BYE: &str = "221 2.0.0 Bye";
pub const BACKEND_DOWN: &str = "421 4.3.2 Service not available, try later";
pub const TOO_MANY_CONNECTIONS: &str = "421 4.7.0 Too many connections";
pub const TOO_MANY_ERRORS: &str = "421 4.7.0 Too many errors";
pub const TOO_MANY_COMMANDS: &str = "421 4.7.0 Too many commands before HELO/EHLO";
pub const TIMEOUT: &str = "421 4.4.2 Timeout exceeded";
pub const SHUTTING_DOWN: &str = "421 4.3.2 Service shutting down, try later";

/// For a kernel drop of an entry this agent does not know the words for (listed by an operator
/// before a restart, say).
pub const KERNEL_DROP_DEFAULT: &str = "550 5.7.1 Bogus HELO";

pub fn banner(hostname: &str) -> String {
    format!("220 {hostname} ESMTP")
}

/// The banner for a listed source (RFC 5321 3.1: a server that will not talk to a client says so
/// with 554 in place of its 220): the entry's own words, so the sender's admin reads why.
pub fn refusal_banner(entry_reply: &str) -> String {
    format!("554 5.7.1 {}", text_of(entry_reply))
}

/// A reply's text without its code and enhanced status code: `Bogus HELO` of
/// `550 5.7.1 Bogus HELO`.
pub fn text_of(reply: &str) -> &str {
    let mut rest = reply.trim();
    for _ in 0..2 {
        if let Some((word, tail)) = rest.split_once(' ') {
            if word.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                rest = tail.trim_start();
            }
        }
    }
    rest
}

/// `text` with the operator's footer as its last lines, as Postfix's `smtpd_reject_footer` does:
/// one multiline reply (`550-5.7.1 Bogus HELO`, then `550 5.7.1 <footer>`), every line with the
/// reply's code and enhanced status code (RFC 5321 4.2.1, RFC 2034). A `\n` in the footer starts
/// another line. The lines are joined with CRLF; [`line()`] adds the last one. A text without a
/// reply code is returned as it is.
pub fn with_footer(text: &str, footer: Option<&str>) -> String {
    let Some(footer) = footer.filter(|f| !f.trim().is_empty()) else { return text.to_owned() };
    let Some((code, rest)) = text.split_at_checked(3).filter(|(c, _)| c.bytes().all(|b| b.is_ascii_digit())) else {
        return text.to_owned();
    };
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let enhanced = rest
        .split(' ')
        .next()
        .filter(|w| w.split('.').count() == 3 && w.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())));
    let extra: Vec<&str> = footer.split("\\n").flat_map(|l| l.split('\n')).map(str::trim_end).collect();
    let mut out = format!("{code}-{rest}");
    for (i, l) in extra.iter().enumerate() {
        let sep = if i + 1 == extra.len() { ' ' } else { '-' };
        match enhanced {
            Some(e) => out.push_str(&format!("\r\n{code}{sep}{e} {l}")),
            None => out.push_str(&format!("\r\n{code}{sep}{l}")),
        }
    }
    out
}

/// How long one write to a client may stall (a client that never reads) before the session gives
/// up on it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// `text` as a reply line, CRLF included.
pub fn line(text: &str) -> Vec<u8> {
    let mut l = Vec::with_capacity(text.len() + 2);
    l.extend_from_slice(text.as_bytes());
    l.extend_from_slice(b"\r\n");
    l
}

/// Writes `text` and CRLF as one write, within `limit`.
pub async fn send(out: &mut (impl AsyncWrite + Unpin), text: &str, limit: Duration) -> std::io::Result<()> {
    write_within(out, &line(text), limit).await
}

/// `write_all` that fails with `TimedOut` when the peer does not take the bytes within `limit`.
pub async fn write_within(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    match tokio::time::timeout(limit, out.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading")),
    }
}

/// Writes `bytes`, the last the client gets, and closes our side, within `limit`: in one segment
/// with the FIN when the socket takes the bytes at once. Sent with `MSG_MORE`, the bytes wait in
/// the send queue and the shutdown's FIN joins them: one packet, not two (on a veth, where the
/// receiver's work is done in the sender's system call, that is a third of what answering a
/// kernel-dropped session sends). Otherwise the rest is written as usual, then the FIN.
pub async fn send_last(out: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    let stream: &tokio::net::TcpStream = out.as_ref();
    let sent =
        stream.try_io(tokio::io::Interest::WRITABLE, || socket2::SockRef::from(stream).send_with_flags(bytes, libc::MSG_MORE)).unwrap_or(0);
    let written = match bytes.get(sent..).filter(|rest| !rest.is_empty()) {
        Some(rest) => write_within(out, rest, limit).await,
        None => Ok(()),
    };
    let closed = out.shutdown().await;
    written.and(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footer_makes_a_multiline_reply_with_the_codes_on_every_line() {
        let see = Some("See https://isp.example/helo");
        assert_eq!(with_footer("550 5.7.1 Bogus HELO", see), "550-5.7.1 Bogus HELO\r\n550 5.7.1 See https://isp.example/helo");
        assert_eq!(with_footer("554 go away", see), "554-go away\r\n554 See https://isp.example/helo");
        assert_eq!(with_footer("550 5.7.1 Bogus HELO", Some("a\\nb")), "550-5.7.1 Bogus HELO\r\n550-5.7.1 a\r\n550 5.7.1 b");
        assert_eq!(with_footer("550 5.7.1 Bogus HELO", None), "550 5.7.1 Bogus HELO");
        assert_eq!(with_footer("550 5.7.1 Bogus HELO", Some(" ")), "550 5.7.1 Bogus HELO");
        assert_eq!(with_footer("Bogus", see), "Bogus");
    }

    #[tokio::test]
    async fn the_last_reply_reaches_the_client_before_the_close_even_empty() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        for last in [&b"550 5.7.1 Bogus HELO\r\n550 5.7.1 Bogus HELO\r\n"[..], b""] {
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (_r, mut w) = server.into_split();
            send_last(&mut w, last, Duration::from_secs(5)).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, last);
        }
    }

    #[test]
    fn refusal_banner_keeps_the_entry_words() {
        assert_eq!(refusal_banner("550 5.7.1 Bogus HELO matches RCPT"), "554 5.7.1 Bogus HELO matches RCPT");
        assert_eq!(refusal_banner("550 5.7.1 Bogus HELO (192.0.2.25)"), "554 5.7.1 Bogus HELO (192.0.2.25)");
        assert_eq!(refusal_banner("go away"), "554 5.7.1 go away");
    }
}
