//! The accept loop: caps on sessions in total and per source, one task per session, and a
//! graceful stop (no new sessions, open ones may finish until a deadline).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{watch, Semaphore},
    task::JoinSet,
};

use crate::{agent::Agent, session, smtp::reply};

#[cfg(test)]
mod tests;

/// Binds a listener; an IPv6 wildcard is IPv6-only so it can sit beside `0.0.0.0`.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    Ok(reserve(addr)?.listen(1024)?)
}

/// Binds `addr` without listening yet: the port is ours (a taken port fails here), but clients
/// are refused until [`TcpSocket::listen`], so nobody connects before the agent is ready.
pub fn reserve(addr: SocketAddr) -> Result<TcpSocket> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
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

/// Runs until `shutdown` flips to true, then waits for open sessions up to the grace period.
pub async fn serve(agent: Arc<Agent>, listeners: Vec<TcpListener>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let limit = Arc::new(Semaphore::new(agent.config.max_sessions));
    let per_source = Arc::new(PerSource::default());
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
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    tokio::spawn(refuse(stream, reply::TOO_MANY_CONNECTIONS));
                    continue;
                };
                let agent = Arc::clone(&agent);
                let per_source = Arc::clone(&per_source);
                let stop = shutdown.clone();
                sessions.spawn(async move {
                    let _permit = permit;
                    let Some(_slot) = per_source.take(peer.ip().to_canonical(), agent.config.max_sessions_per_source) else {
                        refuse(stream, reply::TOO_MANY_CONNECTIONS).await;
                        return;
                    };
                    session::run(agent, stream, peer, stop).await;
                });
            }
        }
    }
    acceptors.abort_all();
    let grace = Duration::from_secs(agent.config.timeouts.shutdown_grace_s);
    // Sessions saw the same signal: those waiting on their client were told 421 and closed; those
    // mid-transaction may finish within the grace period.
    tracing::info!("stopped accepting; waiting up to {grace:?} for {} open sessions", sessions.len());
    let _ = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
    sessions.abort_all();
    Ok(())
}
