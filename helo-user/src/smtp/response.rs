//! Counting the MTA's replies as they stream past, without buffering them: the relay forwards
//! the MTA's bytes to the client as they come and only needs to know where each reply ends and
//! its code (to keep its own replies in command order, RFC 2920, and to see whether DATA or
//! STARTTLS was accepted).
//!
//! A reply is one or more lines; every line but the last has `-` after the code (RFC 5321 4.2.1).

/// Follows reply boundaries across reads of any size.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// The first four bytes of the line being read.
    head: [u8; 4],
    /// Bytes of the current line seen so far (saturating).
    at: usize,
}

impl ReplyScanner {
    /// Feeds `bytes` and calls `done(code)` for each reply that ends in them (`code` 0 when the
    /// line does not start with three digits).
    pub fn feed(&mut self, bytes: &[u8], mut done: impl FnMut(u16)) {
        for &b in bytes {
            if b == b'\n' {
                if self.head[3] != b'-' || self.at < 4 {
                    done(self.code());
                }
                *self = Self::default();
            } else {
                if self.at < 4 {
                    self.head[self.at] = b;
                }
                self.at = self.at.saturating_add(1);
            }
        }
    }

    fn code(&self) -> u16 {
        let d = &self.head[..3];
        if self.at >= 3 && d.iter().all(u8::is_ascii_digit) {
            d.iter().fold(0, |n, &b| n * 10 + u16::from(b - b'0'))
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(chunks: &[&[u8]]) -> Vec<u16> {
        let mut s = ReplyScanner::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |code| out.push(code));
        }
        out
    }

    #[test]
    fn multiline_replies_end_at_their_last_line() {
        assert_eq!(codes(&[b"250-mx\r\n250-PIPELINING\r\n250 SIZE\r\n354 go\r\n"]), vec![250, 354]);
    }

    #[test]
    fn replies_split_anywhere() {
        let all = b"250 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n221 bye\r\n";
        for cut in 0..all.len() {
            assert_eq!(codes(&[&all[..cut], &all[cut..]]), vec![250, 550, 221], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(codes(&bytes), vec![250, 550, 221]);
    }

    #[test]
    fn a_line_without_a_code_still_ends_a_reply() {
        assert_eq!(codes(&[b"hello\r\n", b"25\r\n"]), vec![0, 0]);
    }
}
