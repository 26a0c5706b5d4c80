//! One client connection, from our banner to its end.
//!
//! Before the greeting the agent speaks SMTP itself (banner, NOOP, RSET, QUIT, errors), with
//! bounds on time, commands and errors. The greeting is checked against the blocklist and then
//! classified; a refused sender gets the reply, and the same reply again for its HELO fallback or
//! anything else it sends until it quits ([`refused`]); a rejection is listed. A clean session is
//! handed to the MTA. A kernel drop event for this flow ends the session only while it waits for
//! the client's first bytes: the kernel dropped them, so the client never gets to send anything
//! else, and a forged drop cannot end a session that is already talking.

mod context;
pub mod judge;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{tcp::OwnedWriteHalf, TcpStream},
    sync::watch,
    time::timeout,
};

pub use self::context::SessionContext;
use crate::{
    modes::FilterMode,
    proxy::{self, HandOff},
    registry::EndSession,
    session_id::SessionId,
    smtp::{
        command::{self, Command},
        line::{Line, LineReader, COMMAND_LINE},
        refused, reply,
    },
};

/// Whether the client sent anything within `wait` of connecting, before our banner. With a zero
/// wait this only sees what already arrived: one non-blocking peek, no timer (a tokio timeout of
/// zero still sleeps until the timer wheel's next millisecond tick, which put a millisecond and
/// two extra wake-ups before every banner).
async fn pregreets(stream: &TcpStream, wait: Duration) -> bool {
    if wait.is_zero() {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit()];
        // Through tokio, so that an empty receive queue (`WouldBlock`) clears the readiness the
        // wait for the client's first bytes relies on.
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || socket2::SockRef::from(stream).peek(&mut probe));
        return matches!(peeked, Ok(n) if n > 0);
    }
    let mut probe = [0u8; 1];
    matches!(timeout(wait, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
}

pub async fn run(cx: Arc<SessionContext>, stream: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
    let started = std::time::Instant::now();
    let id = SessionId::next();
    tracing::info!(session = %id, event = "connect", client = %peer);
    let _active = cx.load.enter();
    cx.metrics.sessions.inc();
    cx.metrics.sessions_active.inc();
    serve(&cx, id, stream, peer, shutdown).await;
    tracing::info!(session = %id, event = "close", after_ms = started.elapsed().as_millis() as u64);
    cx.metrics.sessions_active.dec();
    cx.metrics.session_seconds.observe(started.elapsed().as_secs_f64());
}

/// Writes `text` (if any) and closes our side.
async fn close(out: &mut OwnedWriteHalf, text: Option<&str>, write: Duration) {
    if let Some(text) = text {
        let _ = reply::send(out, text, write).await;
    }
    let _ = out.shutdown().await;
}

/// How the wait for the client's first bytes ended.
enum FirstBytes {
    Arrived,
    /// The kernel dropped them: the reply for that, if one is to be written, and the flow's
    /// server end (`None`: the order was withdrawn, the socket is asked).
    Dropped(Option<String>, Option<SocketAddr>),
    Stop,
    TimedOut,
    Gone,
}

async fn serve(cx: &Arc<SessionContext>, id: SessionId, stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    let config = &cx.config;
    let write = Duration::from_secs(config.timeouts.write_s);
    let enforce = config.mode == FilterMode::Enforce;
    // TCP_NODELAY and keepalive came with the socket from the listener (server::reserve). Our own
    // address is asked of the socket only where it is needed (the hand-off): a refused session
    // never needs it, and a kernel-dropped one is told it by the drop event.
    let exempt = judge::exempt(cx, peer.ip());

    let (r, mut out) = {
        let (registration, mut end_order) = cx.registry.register(peer);
        if !exempt {
            if let Some(entry_reply) = judge::listed_source(cx, id, peer.ip()) {
                if enforce {
                    let (r, mut out) = stream.into_split();
                    let banner = cx.refusal_text(&reply::refusal_banner(&entry_reply));
                    if reply::send(&mut out, &banner, write).await.is_ok() {
                        // RFC 5321 3.1: after a 554 banner, wait for QUIT, answering 503.
                        let answer = reply::line(&cx.refusal_text(&format!("503 5.7.1 {}", reply::text_of(&entry_reply))));
                        let mut input = LineReader::new(r, COMMAND_LINE);
                        refused::answer_until_quit(&mut input, &mut out, &answer, config.linger()).await;
                    }
                    return;
                }
            }
        }
        if pregreets(&stream, Duration::from_millis(config.pregreet_ms)).await {
            tracing_pregreet(cx, id, peer);
        }
        let (r, mut out) = stream.into_split();
        if reply::send(&mut out, &reply::banner(config.hostname()), write).await.is_err() {
            return;
        }
        // An idle client holds no read buffer until it sends something: ten thousand idle sessions
        // cost their sockets and tasks, not 40 MB of buffers.
        let first = tokio::select! {
            ended = &mut end_order => match ended {
                Ok(EndSession { reply, server }) => FirstBytes::Dropped(reply, Some(server)),
                Err(_) => FirstBytes::Dropped(None, None),
            },
            Ok(()) = shutdown.changed() => FirstBytes::Stop,
            ready = timeout(cx.load.timeout(config.command_timeout()), r.readable()) => match ready {
                Err(_) => FirstBytes::TimedOut,
                Ok(Err(_)) => FirstBytes::Gone,
                Ok(Ok(())) => FirstBytes::Arrived,
            },
        };
        match first {
            FirstBytes::Arrived => {}
            // Boxed: an idle session (most of them, waiting here) should not carry its state.
            FirstBytes::Dropped(text, server) => return Box::pin(answer_kernel_drop(cx, id, peer, server, text, r, out)).await,
            FirstBytes::Stop => return close(&mut out, Some(reply::SHUTTING_DOWN), write).await,
            FirstBytes::TimedOut => return close(&mut out, Some(reply::TIMEOUT), write).await,
            FirstBytes::Gone => return,
        }
        // The client's first bytes got past the kernel: from here on a drop event for this
        // address and port is not about this session.
        drop(registration);
        (r, out)
    };

    let mut input = LineReader::new(r, COMMAND_LINE);
    let (mut errors, mut commands) = (0u32, 0u32);
    let greeting = loop {
        if errors >= config.max_errors {
            return close(&mut out, Some(reply::TOO_MANY_ERRORS), write).await;
        }
        let line = tokio::select! {
            Ok(()) = shutdown.changed() => return close(&mut out, Some(reply::SHUTTING_DOWN), write).await,
            line = timeout(cx.load.timeout(config.command_timeout()), input.read_line()) => line,
        };
        commands += 1;
        if commands > config.max_commands_before_greeting {
            // NOOP or RSET forever, or anything else: the greeting must come within a bound.
            return close(&mut out, Some(reply::TOO_MANY_COMMANDS), write).await;
        }
        let line = match line {
            Err(_) => return close(&mut out, Some(reply::TIMEOUT), write).await,
            Ok(Err(_)) | Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => {
                errors += 1;
                if cx.client_lines.allow() {
                    tracing::info!(session = %id, event = "protocol-error", client = %peer, error = "line too long");
                }
                let _ = reply::send(&mut out, reply::LINE_TOO_LONG, write).await;
                continue;
            }
            Ok(Ok(Line::Complete(line))) => line,
        };
        match command::parse(&line) {
            Command::Quit => return close(&mut out, Some(reply::BYE), write).await,
            Command::Noop | Command::Rset => {
                let _ = reply::send(&mut out, reply::OK, write).await;
            }
            Command::Greeting { .. } => break line,
            _ => {
                errors += 1;
                if let Some(command) = cx.client_lines.quote(line.trim_ascii_end()) {
                    tracing::info!(session = %id, event = "protocol-error", client = %peer, error = "not a greeting", command);
                }
                let _ = reply::send(&mut out, reply::NEED_GREETING, write).await;
            }
        }
    };
    let Command::Greeting { arg, .. } = command::parse(&greeting) else { unreachable!("the loop breaks on a greeting") };

    let refusal = judge::greeting(cx, id, arg, peer.ip(), exempt);
    if let Some(refusal) = refusal {
        if enforce {
            let text = cx.refusal_text(&refusal.durable().await);
            let line = reply::line(&text);
            if reply::write_within(&mut out, &line, write).await.is_ok() {
                refused::answer_until_quit(&mut input, &mut out, &line, config.linger()).await;
            }
            return;
        }
    }

    let Ok(local) = out.local_addr() else { return };
    let mut rcpt_judge = judge::RelayJudge::new(cx, id, arg.to_vec(), peer.ip(), exempt);
    let (r, buffered) = input.into_parts();
    let hand_off = HandOff {
        backend: config.backend,
        client: peer,
        server: local,
        session: id,
        greeting: &greeting,
        connect_timeout: Duration::from_secs(config.timeouts.backend_connect_s),
        timeouts: config.relay_timeouts(),
    };
    // Boxed: the relay's state is most of a session's, and an idle session (waiting for its
    // greeting) should not carry it.
    let end = Box::pin(proxy::hand_off(r, buffered, out, hand_off, &mut rcpt_judge, &cx.load, shutdown)).await;
    judge::record_hand_off(cx, id, end);
}

/// Answers a session whose first bytes the kernel dropped (`text`: the entry's reply, or nothing
/// to say) and ends it. `server`: our end of the flow, from the drop event.
async fn answer_kernel_drop(
    cx: &SessionContext,
    id: SessionId,
    peer: SocketAddr,
    server: Option<SocketAddr>,
    text: Option<String>,
    r: tokio::net::tcp::OwnedReadHalf,
    mut out: OwnedWriteHalf,
) {
    let write = Duration::from_secs(cx.config.timeouts.write_s);
    tracing::info!(session = %id, event = "kernel-drop", client = %peer);
    // The client's greeting never reaches us: it reads our reply to its EHLO, falls back to HELO
    // (which cannot reach us either, behind the dropped bytes) and reads the second copy as the
    // reply to that. Then it knows why.
    let twice = text.map(|t| cx.refusal_text(&t)).map(|t| [reply::line(&t), reply::line(&t)].concat());
    let _ = reply::send_last(&mut out, twice.as_deref().unwrap_or_default(), write).await;
    // Then let its retransmitted greeting in and read what it still sends (the HELO, its QUIT)
    // to its FIN: both sides close cleanly, instead of the client retransmitting into a window
    // that never opens, for minutes, and the edge holding an orphan. Only this flow, only after
    // it was answered: an attacker gains nothing it could not send on its own connection anyway.
    if let Some(local) = server.or_else(|| out.local_addr().ok()) {
        judge::release_flow(cx, peer, local);
    }
    drain(r, cx.config.linger().within.min(DRAIN)).await;
}

/// How long a kernel-dropped client is read after its answer, for its retransmitted greeting
/// and its FIN (a client retransmits after 200 ms at the least).
const DRAIN: Duration = Duration::from_secs(3);

/// Reads and discards until the peer's FIN, or `limit`.
async fn drain(mut r: tokio::net::tcp::OwnedReadHalf, limit: Duration) {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 512];
    let _ = timeout(limit, async { while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {} }).await;
}

fn tracing_pregreet(cx: &SessionContext, id: SessionId, peer: SocketAddr) {
    tracing::info!(session = %id, event = "pregreet", client = %peer, "talked before the banner");
    judge::observe_pregreet(cx);
}
