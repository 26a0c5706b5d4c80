//! The relay between a handed-off client and the MTA: one task drives both sockets.
//!
//! After the hand-off the agent is transparent: the MTA's bytes reach the client unchanged and as
//! they come, the client's commands reach the MTA byte for byte, and the agent never answers on
//! the MTA's behalf. It enforces no line limit of its own (lines longer than [`RELAY_LINE`] are
//! passed through unread rather than buffered).
//!
//! While the session is in its command phase the relay still reads the client's commands, so
//! that each RCPT and any further greeting can be judged. A pipelined group (RFC 2920) goes to the
//! MTA in one write. When the judge refuses a command, that command is not forwarded; the relay
//! waits for the MTA's replies to every command before it, so the refusal takes the place of that
//! command's reply and never of an earlier one; then the MTA gets QUIT and the client the refusal.
//!
//! The relay stops reading commands and copies raw bytes only once the MTA has accepted DATA (354)
//! or STARTTLS (220). A BDAT chunk's octets follow its command at once (RFC 3030), so they are
//! counted off and copied, and the command phase goes on after them.
//!
//! Every wait is bounded: the client between commands, the MTA owing replies, either side once
//! raw, each write to a client that does not read.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::watch,
    time::Instant,
};

use crate::{
    load::Load,
    smtp::{
        command::{self, Command},
        line::{LineReader, COMMAND_LINE, RELAY_LINE},
        refused::{self, Linger},
        reply,
        response::ReplyScanner,
    },
};

/// How long each side may keep the session waiting.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// The client, between commands (shortened under load, see [`Load`]).
    pub command: Duration,
    /// The MTA, while it owes replies (RFC 5321 4.5.3.2 allows 10 minutes after the message).
    pub reply: Duration,
    /// Either side, once the relay copies raw bytes (message content, TLS).
    pub data: Duration,
    /// One write to either peer.
    pub write: Duration,
    /// After the client closed its side: how long the MTA has to finish and close.
    pub close: Duration,
    pub linger: Linger,
}

/// What the relay asks the session about a client command: `Some(reply)` refuses it and ends the
/// session.
pub trait Judge {
    fn rcpt(&mut self, address: &str) -> Option<String>;
    fn greeting(&mut self, arg: &[u8]) -> Option<String>;
}

/// How a relayed session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// One side closed after a normal relay.
    Finished,
    /// A command was refused by the judge: the client got its reply, the MTA a QUIT.
    Refused,
    /// A side kept the session waiting past its timeout.
    TimedOut,
    /// The agent is stopping: an idle client was told 421, the MTA QUIT.
    ShutDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Commands,
    Raw,
}

/// A command whose reply decides whether the relay goes raw (DATA: 354, STARTTLS: 220).
#[derive(Clone, Copy, Debug)]
struct Switch {
    /// Replies still to come up to and including this command's.
    replies_until: u32,
    accept: u16,
}

/// The command phase's bookkeeping.
#[derive(Debug)]
struct Commands {
    phase: Phase,
    /// Commands forwarded whose replies have not come back.
    in_flight: u32,
    switch: Option<Switch>,
    /// Octets of a BDAT chunk still to copy.
    bdat_left: u64,
    /// Inside a line longer than [`RELAY_LINE`], passed through unread.
    overlong: bool,
    refusal: Option<String>,
    scanner: ReplyScanner,
}

impl Commands {
    fn new() -> Self {
        Self {
            phase: Phase::Commands,
            in_flight: 0,
            switch: None,
            bdat_left: 0,
            overlong: false,
            refusal: None,
            scanner: ReplyScanner::default(),
        }
    }

    /// Whether the relay reads the client now: not while a refusal waits for earlier replies,
    /// nor between DATA/STARTTLS and the MTA's answer (the client must wait for it anyway).
    fn reads_client(&self) -> bool {
        self.phase == Phase::Raw || (self.refusal.is_none() && self.switch.is_none())
    }

    fn forwarded(&mut self) {
        self.in_flight += 1;
    }

    /// Moves what can go to the MTA from `buf` to `out`, judging each complete command.
    fn take_client_bytes(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>, judge: &mut impl Judge) {
        loop {
            if self.phase == Phase::Raw {
                out.extend_from_slice(&buf.split());
                return;
            }
            if self.bdat_left > 0 {
                let take = self.bdat_left.min(buf.len() as u64) as usize;
                out.extend_from_slice(&buf.split_to(take));
                self.bdat_left -= take as u64;
                if self.bdat_left > 0 {
                    return;
                }
                continue;
            }
            if self.refusal.is_some() || self.switch.is_some() {
                return;
            }
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                if self.overlong || buf.len() > RELAY_LINE {
                    self.overlong = true;
                    out.extend_from_slice(&buf.split());
                }
                return;
            };
            let line = buf.split_to(end + 1);
            if std::mem::take(&mut self.overlong) {
                out.extend_from_slice(&line);
                self.forwarded();
                continue;
            }
            match command::parse(&line) {
                Command::Rcpt(address) => {
                    if let Some(refusal) = judge.rcpt(address) {
                        self.refusal = Some(refusal);
                        return;
                    }
                }
                Command::Greeting { arg, .. } => {
                    if let Some(refusal) = judge.greeting(arg) {
                        self.refusal = Some(refusal);
                        return;
                    }
                }
                Command::Data => self.switch_on(354),
                Command::StartTls => self.switch_on(220),
                Command::Bdat(Some(size)) => self.bdat_left = size,
                _ => {}
            }
            out.extend_from_slice(&line);
            self.forwarded();
        }
    }

    /// The command being forwarded decides the phase by its reply.
    fn switch_on(&mut self, accept: u16) {
        self.switch = Some(Switch { replies_until: self.in_flight + 1, accept });
    }

    /// Counts the replies in the MTA's `bytes`.
    fn mta_bytes(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Raw {
            return;
        }
        let Self { scanner, in_flight, switch, phase, .. } = self;
        scanner.feed(bytes, |code| {
            *in_flight = in_flight.saturating_sub(1);
            if let Some(s) = switch {
                s.replies_until = s.replies_until.saturating_sub(1);
                if s.replies_until == 0 {
                    if code == s.accept {
                        *phase = Phase::Raw;
                    }
                    *switch = None;
                }
            }
        });
    }
}

/// Relays until one side is done. `client_buf` holds what the client sent past its greeting,
/// `mta_buf` what the MTA sent past its reply to it.
#[allow(clippy::too_many_arguments)]
pub async fn relay<CR, CW, MR, MW>(
    mut client_in: CR,
    mut client_buf: BytesMut,
    mut client_out: CW,
    mut mta_in: MR,
    mut mta_buf: BytesMut,
    mut mta_out: MW,
    judge: &mut impl Judge,
    load: &Load,
    t: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) -> RelayEnd
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    MR: AsyncRead + Unpin,
    MW: AsyncWrite + Unpin,
{
    let mut st = Commands::new();
    let mut to_mta = Vec::with_capacity(4096);
    // The relay's one timer, moved only when it must be. Every command moves the deadline later;
    // setting a tokio timer for each would cost a timer-wheel update each time and, when the new
    // deadline is the thread's earliest, a wake-up of the runtime's driver (an eventfd write, a
    // system call). Instead a deadline that moved later is noticed when the timer fires, and the
    // timer set again then: at most one extra wake-up per timeout period, never one per command.
    // A deadline that moved earlier (the load shortened the client's time, the client closed) is
    // set at once. Far off until then: a sleep not yet polled costs nothing to move.
    let timer = tokio::time::sleep_until(Instant::now() + Duration::from_secs(86_400 * 365));
    tokio::pin!(timer);
    let (mut last_client, mut last_mta) = (Instant::now(), Instant::now());
    let mut client_eof = false;
    let mut stopping = *shutdown.borrow();
    if !mta_buf.is_empty() {
        // The MTA spoke before being asked (a 421 before it closes, say): pass it on.
        if reply::write_within(&mut client_out, &mta_buf, t.write).await.is_err() {
            return RelayEnd::Finished;
        }
        mta_buf.clear();
    }
    loop {
        // Once raw, what the client sent goes to the MTA as it is, from the read buffer itself.
        let to_send: &[u8] = if st.phase == Phase::Raw {
            &client_buf
        } else {
            to_mta.clear();
            st.take_client_bytes(&mut client_buf, &mut to_mta, judge);
            &to_mta
        };
        if !to_send.is_empty() && reply::write_within(&mut mta_out, to_send, t.write).await.is_err() {
            let _ = reply::send(&mut client_out, reply::BACKEND_DOWN, t.write).await;
            let _ = client_out.shutdown().await;
            return RelayEnd::Finished;
        }
        if st.phase == Phase::Raw {
            client_buf.clear();
        }
        if st.refusal.is_some() && st.in_flight == 0 {
            let text = st.refusal.take().unwrap_or_default();
            return refuse(client_in, client_buf, client_out, mta_out, &text, t).await;
        }
        let idle = st.phase == Phase::Commands && st.in_flight == 0 && client_buf.is_empty() && !st.overlong;
        if stopping && idle && !client_eof {
            let _ = reply::send(&mut client_out, reply::SHUTTING_DOWN, t.write).await;
            quit(&mut mta_out, t.write).await;
            let _ = client_out.shutdown().await;
            return RelayEnd::ShutDown;
        }

        let deadline = match st.phase {
            Phase::Raw => last_client.max(last_mta) + t.data,
            Phase::Commands if client_eof => last_mta + t.close,
            Phase::Commands if st.in_flight > 0 => last_mta + t.reply,
            Phase::Commands => last_client + load.timeout(t.command),
        };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        let read_client = !client_eof && st.reads_client();
        if st.phase == Phase::Raw {
            // A message (or TLS records) in as few reads, and writes to the MTA, as the kernel
            // has it: a 10 kB message is one read and one write, not three of each.
            client_buf.reserve(RAW_READ);
            mta_buf.reserve(RAW_READ);
        }
        tokio::select! {
            r = client_in.read_buf(&mut client_buf), if read_client => match r {
                Ok(n) if n > 0 => last_client = Instant::now(),
                _ => {
                    // The client is done sending: so is the MTA's client. Its replies still
                    // reach the client until the MTA closes.
                    client_eof = true;
                    let _ = mta_out.shutdown().await;
                }
            },
            r = mta_in.read_buf(&mut mta_buf) => match r {
                Ok(n) if n > 0 => {
                    last_mta = Instant::now();
                    st.mta_bytes(&mta_buf);
                    let written = reply::write_within(&mut client_out, &mta_buf, t.write).await;
                    mta_buf.clear();
                    if written.is_err() {
                        // A client that does not read (or is gone) ends the session.
                        let _ = mta_out.shutdown().await;
                        return RelayEnd::TimedOut;
                    }
                }
                _ => {
                    let _ = client_out.shutdown().await;
                    return RelayEnd::Finished;
                }
            },
            _ = &mut timer => {
                if Instant::now() < deadline {
                    // The deadline moved on since the timer was set: set it again.
                    timer.as_mut().reset(deadline);
                    continue;
                }
                if let Some(text) = st.refusal.take() {
                    // The MTA never answered the commands before the refused one.
                    return refuse(client_in, client_buf, client_out, mta_out, &text, t).await;
                }
                if st.phase == Phase::Commands && !client_eof {
                    let _ = reply::send(&mut client_out, reply::TIMEOUT, t.write).await;
                    quit(&mut mta_out, t.write).await;
                }
                let _ = client_out.shutdown().await;
                let _ = mta_out.shutdown().await;
                return RelayEnd::TimedOut;
            },
            changed = shutdown.changed(), if !stopping => {
                stopping = changed.is_err() || *shutdown.borrow();
            },
        }
    }
}

/// How much the relay reads at once from either side once it copies raw bytes (as HAProxy's
/// default `tune.bufsize`): commands and replies are short, a message is not.
const RAW_READ: usize = 16 * 1024;

/// QUIT to the MTA, then our side of its connection closed.
pub(super) async fn quit(mta_out: &mut (impl AsyncWrite + Unpin), limit: Duration) {
    let _ = reply::write_within(mta_out, b"QUIT\r\n", limit).await;
    let _ = mta_out.shutdown().await;
}

/// The refusal in place of the refused command's reply, QUIT to the MTA, then every command the
/// client still sends (what it pipelined behind the refused one, a fallback) gets the same words.
async fn refuse<CR, CW, MW>(client_in: CR, client_buf: BytesMut, mut client_out: CW, mut mta_out: MW, text: &str, t: Timeouts) -> RelayEnd
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    MW: AsyncWrite + Unpin,
{
    quit(&mut mta_out, t.write).await;
    let line = reply::line(text);
    if reply::write_within(&mut client_out, &line, t.write).await.is_ok() {
        let mut input = LineReader::with_buffered(client_in, client_buf, COMMAND_LINE);
        refused::answer_until_quit(&mut input, &mut client_out, &line, t.linger).await;
    }
    RelayEnd::Refused
}

#[cfg(test)]
mod tests;
