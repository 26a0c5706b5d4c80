//! Live sessions by client address, so that a kernel drop event can find the accepted socket of
//! the flow it dropped and end it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

/// Why a session is told to end from outside, and what to write before closing.
#[derive(Debug)]
pub struct Kill {
    /// `None`: close without a word.
    pub reply: Option<String>,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<SocketAddr, oneshot::Sender<Kill>>>,
}

/// Removes the session from the registry when the session ends.
pub struct Registration {
    registry: Arc<Registry>,
    client: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.sessions.lock().unwrap().remove(&self.client);
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Registry {
    pub fn register(self: &Arc<Self>, client: SocketAddr) -> (Registration, oneshot::Receiver<Kill>) {
        let client = canonical(client);
        let (tx, rx) = oneshot::channel();
        self.sessions.lock().unwrap().insert(client, tx);
        (Registration { registry: Arc::clone(self), client }, rx)
    }

    /// Tells the session of `client` to end. `false` if there is none.
    pub fn kill(&self, client: SocketAddr, kill: Kill) -> bool {
        match self.sessions.lock().unwrap().remove(&canonical(client)) {
            Some(tx) => tx.send(kill).is_ok(),
            None => false,
        }
    }
}
