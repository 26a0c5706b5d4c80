//! For unit tests: a whole agent in process and without root, over [`InMemoryKernel`] and a real
//! store in a temporary directory, as `agent::start` builds one over the loaded program.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;

use crate::{agent_state::Agent, blocklist::Blocklist, config::Config, kernel::InMemoryKernel, metrics::Metrics, store::Store};

pub(crate) struct InProcess {
    pub agent: Arc<Agent>,
    /// The same tables the agent writes, to look at.
    pub kernel: Arc<Mutex<InMemoryKernel>>,
    pub store: Store,
    _dir: tempfile::TempDir,
}

/// An agent for `mx.example.net` (server IP 198.18.0.25) handing clean sessions to `backend`,
/// with the defaults and whatever `adjust` changes.
pub(crate) fn agent(backend: SocketAddr, adjust: impl FnOnce(&mut Config)) -> Result<InProcess> {
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        hostname: Some("mx.example.net".into()),
        server_ip: vec!["198.18.0.25".parse()?],
        no_xdp: true,
        backend,
        state_dir: dir.path().to_owned(),
        // Sessions on the test's own runtime, where time can be paused.
        session_threads: 1,
        ..Default::default()
    };
    adjust(&mut config);
    let store = Store::open(dir.path())?;
    let kernel = Arc::new(Mutex::new(InMemoryKernel::default()));
    let hour = Duration::from_secs(3600);
    let blocklist = Blocklist::open(Arc::clone(&kernel) as _, store.clone(), store.hash_key()?, hour, hour)?;
    let reread = config.clone();
    let agent = Agent::new(
        config.clone(),
        config.classifier()?,
        Arc::clone(&kernel) as _,
        blocklist,
        Metrics::new("off", 0),
        move || Ok(reread.clone()),
        vec![],
    );
    Ok(InProcess { agent: Arc::new(agent), kernel, store, _dir: dir })
}

/// A port nothing listens on: the MTA is down.
pub(crate) fn nowhere() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
