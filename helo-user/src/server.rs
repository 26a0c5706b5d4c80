//! The accept loop: caps on sessions in total and per source, one task per session, and a
//! graceful stop (no new sessions, open ones may finish until a deadline).
//!
//! Sessions run on `session-threads` threads, each a single-threaded tokio runtime with its own
//! listening socket in one SO_REUSEPORT group: the kernel picks the thread when the connection
//! arrives, and a session then lives on that thread from accept to close. A work-stealing runtime
//! would hand the accepted socket, the session's wake-ups and its timers from thread to thread; on
//! a bot-heavy edge, where sessions are short, those hand-offs (futex wake-ups, context switches)
//! cost about a quarter of a rejected session's CPU (`sessions reject`, BENCHMARKS.md).

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{oneshot, watch, Semaphore},
    task::JoinSet,
};

use crate::{
    session::{self, SessionContext},
    smtp::reply,
};

#[cfg(test)]
mod tests;

/// Binds `addr` without listening yet: the port is ours (a taken port fails here), but clients
/// are refused until [`TcpSocket::listen`], so nobody connects before the agent is ready.
/// `shared`: the port is bound with SO_REUSEPORT, so that each session thread can bind a listener
/// of its own beside this one (only sockets of the same user can join the group).
///
/// What every session's socket needs is set here, once: accepted sockets inherit the listener's
/// TCP_NODELAY and keepalive (Linux copies them at accept), which saves five system calls a session.
pub fn reserve(addr: SocketAddr, shared: bool) -> Result<TcpSocket> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    let sock = socket2::SockRef::from(&socket);
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // No Nagle: a reply is one write, and must not wait for the ACK of the one before it (the
    // client's ACK may ride on a greeting the kernel dropped).
    sock.set_tcp_nodelay(true)?;
    sock.set_tcp_keepalive(&crate::proxy::backend::tcp_keepalive())?;
    socket.bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(socket)
}

/// Sessions per client address.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

struct SourceSlot<'a>(&'a PerSource, IpAddr);

impl PerSource {
    fn take(&self, ip: IpAddr, max: usize) -> Option<SourceSlot<'_>> {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot(self, ip))
    }
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.0 .0.lock().unwrap();
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, text: &str) {
    let _ = stream.write_all(format!("{text}\r\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What every session thread shares: the caps.
#[derive(Clone)]
struct Caps {
    sessions: Arc<Semaphore>,
    per_source: Arc<PerSource>,
}

/// A task that runs beside the sessions of the first session thread, for as long as they do.
pub type Beside = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs until `shutdown` flips to true, then waits for open sessions up to the grace period.
/// With more than one session thread, `listeners` go to the first and each other thread binds
/// its own socket to the same addresses (they were reserved with `shared`).
///
/// `beside` runs on the first session thread: the agent's reader of the kernel's drop events,
/// which wakes the session of each dropped flow. There it needs no thread of its own to wake,
/// its events often arrive while the thread is up for its sessions anyway, and a session of
/// that thread is woken without a hop between threads.
pub async fn serve(
    cx: Arc<SessionContext>,
    listeners: Vec<TcpListener>,
    shutdown: watch::Receiver<bool>,
    beside: Option<Beside>,
) -> Result<()> {
    let caps = Caps { sessions: Arc::new(Semaphore::new(cx.config.max_sessions)), per_source: Arc::default() };
    let threads = cx.config.session_threads();
    if threads <= 1 {
        // On the caller's runtime: the in-process tests drive it with paused time.
        let beside = beside.map(tokio::spawn);
        let result = serve_thread(cx, listeners, shutdown, caps).await;
        beside.inspect(|task| task.abort());
        return result;
    }
    let mut beside = beside;
    let addrs = listeners.iter().map(|l| l.local_addr()).collect::<std::io::Result<Vec<_>>>()?;
    let mut first = Some(listeners.into_iter().map(|l| l.into_std()).collect::<std::io::Result<Vec<_>>>()?);
    let mut done = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, rx) = oneshot::channel();
        let (cx, caps, shutdown, addrs, given, beside) =
            (Arc::clone(&cx), caps.clone(), shutdown.clone(), addrs.clone(), first.take(), beside.take());
        std::thread::Builder::new().name(format!("helo-sessions-{i}")).spawn(move || {
            crate::logging::batch::batch_this_thread();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(crate::logging::batch::flush).build();
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(async move {
                    // Ends with this runtime, when the thread's sessions have.
                    let _beside = beside.map(tokio::spawn);
                    let listeners = match given {
                        Some(std) => std.into_iter().map(TcpListener::from_std).collect::<std::io::Result<Vec<_>>>()?,
                        None => match addrs.iter().map(|a| Ok(reserve(*a, true)?.listen(1024)?)).collect::<Result<Vec<_>>>() {
                            Ok(listeners) => listeners,
                            Err(e) => {
                                // Said now, not at the stop; the port is served by the other threads.
                                tracing::error!("session thread {i} could not bind its listener, the other threads serve on: {e:#}");
                                return Ok(());
                            }
                        },
                    };
                    serve_thread(cx, listeners, shutdown, caps).await
                })
            });
            crate::logging::batch::flush();
            let _ = tx.send(result);
        })?;
        done.push(rx);
    }
    tracing::info!("SMTP sessions on {threads} threads (session-threads), one listening socket each");
    let mut result = Ok(());
    for (i, rx) in done.into_iter().enumerate() {
        let r = rx.await.unwrap_or_else(|_| Err(anyhow::anyhow!("session thread {i} panicked")));
        if let Err(e) = r {
            tracing::error!("session thread {i}: {e:#}");
            if result.is_ok() {
                result = Err(e.context(format!("session thread {i}")));
            }
        }
    }
    result
}

/// One session thread's accept loop; the caps are shared with the other threads.
async fn serve_thread(cx: Arc<SessionContext>, listeners: Vec<TcpListener>, mut shutdown: watch::Receiver<bool>, caps: Caps) -> Result<()> {
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr)>(256);
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        let tx = accepted_tx.clone();
        acceptors.spawn(async move {
            let mut backoff = Duration::from_millis(5);
            loop {
                match listener.accept().await {
                    Ok(conn) => {
                        backoff = Duration::from_millis(5);
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of fds, say: back off rather than spin.
                        tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    }
    drop(accepted_tx);

    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            conn = accepted.recv() => {
                let Some((stream, peer)) = conn else { break };
                let Ok(permit) = Arc::clone(&caps.sessions).try_acquire_owned() else {
                    tokio::spawn(refuse(stream, reply::TOO_MANY_CONNECTIONS));
                    continue;
                };
                let cx = Arc::clone(&cx);
                let per_source = Arc::clone(&caps.per_source);
                let stop = shutdown.clone();
                sessions.spawn(async move {
                    let _permit = permit;
                    let Some(_slot) = per_source.take(peer.ip().to_canonical(), cx.config.max_sessions_per_source) else {
                        refuse(stream, reply::TOO_MANY_CONNECTIONS).await;
                        return;
                    };
                    session::run(cx, stream, peer, stop).await;
                });
            }
        }
    }
    acceptors.abort_all();
    let grace = Duration::from_secs(cx.config.timeouts.shutdown_grace_s);
    // Sessions saw the same signal: those waiting on their client were told 421 and closed; those
    // mid-transaction may finish within the grace period.
    if !sessions.is_empty() {
        tracing::info!("stopped accepting; waiting up to {grace:?} for {} open sessions", sessions.len());
    }
    let _ = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
    sessions.abort_all();
    Ok(())
}
