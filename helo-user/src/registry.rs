//! Live sessions by client address, so that a kernel drop event can find the accepted socket of
//! the flow it dropped and end it.
//!
//! An address and port come back: a busy client reuses a port as soon as its side of the last
//! connection is closed, while the agent's session for that connection may still be winding down.
//! So each registration carries an id, and a session that ends removes its own entry only, never
//! the newer session's that replaced it (whose end channel would otherwise close, and end it).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::oneshot;

/// An order from outside (a kernel drop of the session's flow) for a session to end, and what to
/// write before closing.
#[derive(Debug)]
pub struct EndSession {
    /// `None`: close without a word.
    pub reply: Option<String>,
    /// The flow's server end as the kernel saw it, so the session can release the flow without
    /// asking its socket (a `getsockname` per dropped session).
    pub server: SocketAddr,
}

/// Sessions by client address and port, in shards by port: every session takes its shard's
/// lock twice (registered at connect, removed at its end) and every drop event once, from
/// different threads; one lock for all of them was a futex wait and wake-up in about a fifth of
/// kernel-dropped sessions.
#[derive(Default)]
pub struct Registry {
    shards: [Mutex<Shard>; SHARDS],
    next_id: AtomicU64,
}

const SHARDS: usize = 16;

/// Each session's registration id (see the module's note) and the way to end it.
type Shard = HashMap<SocketAddr, (u64, oneshot::Sender<EndSession>)>;

/// Removes the session from the registry when the session ends.
pub struct Registration {
    registry: Arc<Registry>,
    client: SocketAddr,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.registry.shard(self.client).lock().unwrap();
        if sessions.get(&self.client).is_some_and(|(id, _)| *id == self.id) {
            sessions.remove(&self.client);
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Registry {
    /// A client's ports are consecutive or random: either way they spread over the shards.
    fn shard(&self, client: SocketAddr) -> &Mutex<Shard> {
        &self.shards[client.port() as usize % SHARDS]
    }

    pub fn register(self: &Arc<Self>, client: SocketAddr) -> (Registration, oneshot::Receiver<EndSession>) {
        let client = canonical(client);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // A session still registered under this address is an older connection whose client
        // already let go of the port: it is replaced.
        self.shard(client).lock().unwrap().insert(client, (id, tx));
        (Registration { registry: Arc::clone(self), client, id }, rx)
    }

    /// Tells the session of `client` to end. `false` if there is none.
    pub fn end_session(&self, client: SocketAddr, order: EndSession) -> bool {
        let client = canonical(client);
        match self.shard(client).lock().unwrap().remove(&client) {
            Some((_, tx)) => tx.send(order).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ending_session_leaves_a_newer_one_on_the_same_port_alone() {
        let registry = Arc::new(Registry::default());
        let addr: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let (old, _old_end) = registry.register(addr);
        let (_new, mut new_end) = registry.register(addr);
        drop(old);
        assert!(new_end.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty), "the newer session's channel closed");
        assert!(registry.end_session(addr, EndSession { reply: Some("550 x".into()), server: "198.18.0.2:25".parse().unwrap() }));
        assert_eq!(new_end.try_recv().unwrap().reply.as_deref(), Some("550 x"));
    }
}
