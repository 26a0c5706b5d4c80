//! Reading SMTP command lines with the RFC 5321 4.5.3.1.4 limit of 512 bytes, CRLF included.
//!
//! A line longer than that is reported as [`Line::TooLong`] and skipped up to its end, so the
//! session can answer `500 5.5.2 Line too long` and carry on reading the next command.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub const MAX_LINE: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, as sent (terminator included: the hand-off forwards it byte for byte).
    Complete(Vec<u8>),
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Closed,
}

pub struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner: BufReader::with_capacity(4096, inner) }
    }

    /// Reads up to and including the next LF.
    pub async fn read_line(&mut self) -> io::Result<Line> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(Line::Closed);
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let n = chunk.len();
            if !too_long {
                if line.len() + n > MAX_LINE {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            self.inner.consume(n);
            if done {
                return Ok(if too_long { Line::TooLong } else { Line::Complete(line) });
            }
        }
    }

    /// Bytes already read from the socket but not yet returned as lines (pipelined data after a
    /// command that switches the session to raw relaying).
    pub fn buffered(&self) -> &[u8] {
        self.inner.buffer()
    }

    pub fn into_inner(self) -> BufReader<R> {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Line> {
        let mut r = LineReader::new(input);
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
            lines(b"EHLO a\r\nMAIL FROM:<>\nrest").await,
            vec![Line::Complete(b"EHLO a\r\n".to_vec()), Line::Complete(b"MAIL FROM:<>\n".to_vec()), Line::Closed]
        );
    }

    #[tokio::test]
    async fn enforces_512_bytes_including_crlf() {
        let ok = [vec![b'a'; 510], b"\r\n".to_vec()].concat();
        let long = [vec![b'a'; 511], b"\r\n".to_vec()].concat();
        let input = [ok.clone(), long, b"NOOP\r\n".to_vec()].concat();
        assert_eq!(
            lines(&input).await,
            vec![Line::Complete(ok), Line::TooLong, Line::Complete(b"NOOP\r\n".to_vec()), Line::Closed]
        );
    }
}
