//! One client connection, from our banner to its end.
//!
//! Before the greeting the agent speaks SMTP itself (banner, NOOP, RSET, QUIT, errors); the
//! greeting is classified; a rejected sender gets the reply, is listed in the kernel and closed; a
//! clean session is handed to the MTA. A kernel drop event for this flow ends the session at any
//! point.

pub mod command;
pub mod judge;
pub mod line;
pub mod reply;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{tcp::OwnedWriteHalf, TcpStream},
    sync::oneshot,
    time::timeout,
};

use self::{
    command::Command,
    line::{Line, LineReader},
};
use crate::{
    agent::Agent,
    kernel::FilterMode,
    proxy::{self, HandOff},
    registry::Kill,
};

async fn send(out: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    out.write_all(format!("{text}\r\n").as_bytes()).await
}

async fn close(mut out: OwnedWriteHalf, text: Option<&str>) {
    if let Some(text) = text {
        let _ = send(&mut out, text).await;
    }
    let _ = out.shutdown().await;
}

/// Whether the client sent anything within `wait` of connecting, before our banner. With a zero
/// wait this only sees what already arrived (tokio's timeout polls the future once first).
async fn pregreets(stream: &TcpStream, wait: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(timeout(wait, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
}

/// Runs `step` unless a kernel drop event for this session comes first.
async fn or_killed<T>(kill: &mut oneshot::Receiver<Kill>, step: impl std::future::Future<Output = T>) -> Result<T, Kill> {
    tokio::select! {
        killed = kill => Err(killed.unwrap_or(Kill { reply: None })),
        done = step => Ok(done),
    }
}

pub async fn run(agent: Arc<Agent>, stream: TcpStream, peer: SocketAddr) {
    let started = std::time::Instant::now();
    agent.metrics.sessions.inc();
    agent.metrics.sessions_active.inc();
    serve(&agent, stream, peer).await;
    agent.metrics.sessions_active.dec();
    agent.metrics.session_seconds.observe(started.elapsed().as_secs_f64());
}

async fn serve(agent: &Arc<Agent>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let (_registration, mut kill) = agent.registry.register(peer);
    if pregreets(&stream, Duration::from_millis(agent.config.pregreet_ms)).await {
        log::info!("{peer} talked before the banner (pregreet)");
        judge::observe_pregreet(agent);
    }
    let (r, mut out) = stream.into_split();
    if send(&mut out, &reply::banner(agent.config.hostname())).await.is_err() {
        return;
    }
    // An idle client holds no read buffer until it sends something: ten thousand idle sessions
    // cost their sockets and tasks, not 40 MB of buffers.
    match or_killed(&mut kill, timeout(agent.config.command_timeout(), r.readable())).await {
        Err(Kill { reply }) => return close(out, reply.as_deref()).await,
        Ok(Err(_)) => return close(out, Some(reply::TIMEOUT)).await,
        Ok(Ok(Err(_))) => return,
        Ok(Ok(Ok(()))) => {}
    }
    let mut input = LineReader::new(r);
    let mut errors = 0u32;
    loop {
        if errors >= agent.config.max_errors {
            return close(out, Some(reply::TOO_MANY_ERRORS)).await;
        }
        let line = match or_killed(&mut kill, timeout(agent.config.command_timeout(), input.read_line())).await {
            Err(Kill { reply }) => return close(out, reply.as_deref()).await,
            Ok(line) => line,
        };
        let line = match line {
            Err(_) => return close(out, Some(reply::TIMEOUT)).await,
            Ok(Err(_)) | Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => {
                errors += 1;
                let _ = send(&mut out, reply::LINE_TOO_LONG).await;
                continue;
            }
            Ok(Ok(Line::Complete(line))) => line,
        };
        let arg = match command::parse(&line) {
            Command::Quit => return close(out, Some(reply::BYE)).await,
            Command::Noop | Command::Rset => {
                let _ = send(&mut out, reply::OK).await;
                continue;
            }
            Command::Greeting { ehlo: _, arg } => arg.to_vec(),
            _ => {
                errors += 1;
                let _ = send(&mut out, reply::NEED_GREETING).await;
                continue;
            }
        };
        if let Some(refusal) = judge::greeting(agent, &arg, peer.ip()) {
            if agent.config.mode == FilterMode::Enforce {
                let reply = refusal.durable().await;
                return close(out, Some(&reply)).await;
            }
        }
        let mut rcpt_judge = judge::Relay::new(agent, arg, peer.ip());
        let hand_off = HandOff {
            backend: agent.config.backend,
            client: peer,
            server: local,
            greeting: &line,
            connect_timeout: Duration::from_secs(agent.config.timeouts.backend_connect_s),
            idle_timeout: agent.config.command_timeout(),
        };
        tokio::select! {
            killed = &mut kill => {
                // The relay's halves are dropped with this branch: both sockets close.
                log::debug!("{peer}: session ended by a kernel drop during relay ({killed:?})");
            }
            // Boxed: the relay's state is most of a session's, and an idle session (waiting for
            // its greeting) should not carry it.
            end = Box::pin(proxy::hand_off(input, out, hand_off, &mut rcpt_judge)) => {
                judge::record_hand_off(agent, end);
            }
        }
        return;
    }
}
