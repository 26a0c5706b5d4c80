//! Reading SMTP command lines up to a length limit.
//!
//! Before the greeting the agent speaks SMTP itself and holds clients to RFC 5321 4.5.3.1.4's 512
//! octets ([`COMMAND_LINE`]); a longer line is reported as [`Line::TooLong`] and skipped up to its
//! end, so the session can answer `500 5.5.2 Line too long` and carry on. After the hand-off the
//! MTA sets the limit (DSN, AUTH and SMTPUTF8 make longer MAIL and RCPT lines legal), so the relay
//! reads with a much larger cap, [`RELAY_LINE`].

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const COMMAND_LINE: usize = 512;
/// What the relay buffers of one line at most; longer lines are passed through unread. Postfix
/// accepts 2,048 octets (`line_length_limit`); this only bounds the agent's memory.
pub const RELAY_LINE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, as sent (terminator included: the hand-off forwards it byte for byte).
    Complete(Vec<u8>),
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Closed,
}

/// A line reader that keeps what it read past the last line, so that a session handing its
/// client to the relay hands over pipelined bytes too.
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self::with_buffered(inner, BytesMut::new(), max)
    }

    /// A reader that returns `buffered` before reading from `inner`.
    pub fn with_buffered(inner: R, buffered: BytesMut, max: usize) -> Self {
        Self { inner, buf: buffered, max }
    }

    /// Reads up to and including the next LF.
    pub async fn read_line(&mut self) -> io::Result<Line> {
        let mut too_long = false;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(if too_long || line.len() > self.max { Line::TooLong } else { Line::Complete(line.to_vec()) });
            }
            if self.buf.len() > self.max {
                // Past the limit: forget the line's start, keep looking for its end.
                too_long = true;
                self.buf.clear();
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Ok(Line::Closed);
            }
        }
    }

    /// The reader and what was read past the last line returned.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            let l = r.read_line().await.unwrap();
            let closed = l == Line::Closed;
            out.push(l);
            if closed {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_terminators() {
        assert_eq!(
            lines(b"EHLO a\r\nMAIL FROM:<>\nrest", COMMAND_LINE).await,
            vec![Line::Complete(b"EHLO a\r\n".to_vec()), Line::Complete(b"MAIL FROM:<>\n".to_vec()), Line::Closed]
        );
    }

    #[tokio::test]
    async fn enforces_512_bytes_including_crlf() {
        let ok = [vec![b'a'; 510], b"\r\n".to_vec()].concat();
        let long = [vec![b'a'; 511], b"\r\n".to_vec()].concat();
        let very_long = [vec![b'b'; 20_000], b"\r\n".to_vec()].concat();
        let input = [ok.clone(), long, very_long, b"NOOP\r\n".to_vec()].concat();
        assert_eq!(
            lines(&input, COMMAND_LINE).await,
            vec![Line::Complete(ok), Line::TooLong, Line::TooLong, Line::Complete(b"NOOP\r\n".to_vec()), Line::Closed]
        );
    }

    #[tokio::test]
    async fn hands_over_what_it_read_ahead() {
        let mut r = LineReader::new(&b"EHLO a\r\nMAIL FROM:<>\r\nRCPT"[..], COMMAND_LINE);
        assert_eq!(r.read_line().await.unwrap(), Line::Complete(b"EHLO a\r\n".to_vec()));
        let (_, rest) = r.into_parts();
        assert_eq!(&rest[..], b"MAIL FROM:<>\r\nRCPT");
    }
}
