//! After a refusal, until the client quits: every command it still sends gets the same reply.
//!
//! A client whose EHLO is refused falls back to HELO (RFC 5321 4.1.4; Postfix, swaks and smtplib
//! all do). Closing right after the first reply makes that HELO meet a closed connection, and the
//! sender logs "lost connection" and retries for days, never reading why. Answering the fallback
//! with the same words makes a real MTA log `refused to talk to me: 550 5.7.1 Bogus HELO` and
//! bounce at once. The wait is short and bounded: a few commands, a few seconds.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    command::{self, Command},
    line::{Line, LineReader},
    reply,
};

/// How long a refused client is still answered.
#[derive(Clone, Copy, Debug)]
pub struct Linger {
    /// Commands answered after the refusal (QUIT ends it sooner).
    pub commands: u32,
    /// For at most this long after the refusal.
    pub within: Duration,
    /// One write's stall limit.
    pub write: Duration,
}

impl Default for Linger {
    fn default() -> Self {
        Self { commands: 5, within: Duration::from_secs(10), write: reply::WRITE_TIMEOUT }
    }
}

/// Answers each command in `input` with `refusal` (a whole reply, CRLF included) until QUIT (221),
/// the end of the connection, or `linger`'s bound; then closes the write side.
pub async fn answer_until_quit<R, W>(input: &mut LineReader<R>, out: &mut W, refusal: &[u8], linger: Linger)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(linger.within, async {
        for _ in 0..linger.commands {
            match input.read_line().await {
                Ok(Line::Complete(line)) if command::parse(&line) == Command::Quit => {
                    let _ = reply::send(out, reply::BYE, linger.write).await;
                    return;
                }
                Ok(Line::Complete(_)) | Ok(Line::TooLong) => {
                    if reply::write_within(out, refusal, linger.write).await.is_err() {
                        return;
                    }
                }
                Ok(Line::Closed) | Err(_) => return,
            }
        }
    })
    .await;
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::smtp::line::COMMAND_LINE;

    #[tokio::test]
    async fn the_helo_fallback_reads_the_same_reply_and_quit_gets_221() {
        let (mut client, server) = duplex(4096);
        let (r, mut w) = tokio::io::split(server);
        let task = tokio::spawn(async move {
            let mut input = LineReader::new(r, COMMAND_LINE);
            answer_until_quit(&mut input, &mut w, &reply::line("550 5.7.1 Bogus HELO"), Linger::default()).await;
        });
        client.write_all(b"HELO rad.internal\r\nQUIT\r\n").await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "550 5.7.1 Bogus HELO\r\n221 2.0.0 Bye\r\n");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_let_go_after_the_linger() {
        let (mut client, server) = duplex(4096);
        let (r, mut w) = tokio::io::split(server);
        let task = tokio::spawn(async move {
            let mut input = LineReader::new(r, COMMAND_LINE);
            answer_until_quit(&mut input, &mut w, &reply::line("550 x"), Linger::default()).await;
        });
        let mut got = Vec::new();
        // Paused time: the 10 s linger passes at once, and the write side is closed.
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_keeps_talking_is_cut_off_after_a_few_commands() {
        let (mut client, server) = duplex(1 << 16);
        let (r, mut w) = tokio::io::split(server);
        let task = tokio::spawn(async move {
            let mut input = LineReader::new(r, COMMAND_LINE);
            answer_until_quit(&mut input, &mut w, &reply::line("550 x"), Linger::default()).await;
        });
        client.write_all(&b"NOOP\r\n".repeat(50)).await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got.matches("550 x\r\n").count(), 5);
        task.await.unwrap();
    }
}
