//! The two fleet tasks. Both reconnect with backoff; while Redis is away, filtering goes on from
//! the local store and kernel, and local blocks wait in the store's outbox.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use redis::{aio::MultiplexedConnection, Client};

use super::wire::{entry_key, Message, ENTRY_PREFIX, STREAM, STREAM_MAXLEN};
use crate::{
    agent::Agent,
    classify::{Greeting, ObservationKind, Verb},
    listing::{Entry, Match, Origin, Target},
    store::FleetChange,
};

const LAST_ID: &str = "fleet_last_id";
/// The fleet's generation: a random token Redis keeps. A box that finds a token other than the
/// one it synced with knows Redis lost its data (a restart without persistence, a failover to an
/// empty replica) or that it is joining for the first time: it reloads and republishes its own.
const EPOCH_KEY: &str = "helo:epoch";
const EPOCH: &str = "fleet_epoch";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the publisher and the consumer. `url` is `redis://[user:pass@]host:port/db` (or
/// `rediss://` for TLS); `name` is this box's `--fleet-name`.
pub fn start(agent: Arc<Agent>, url: &str, name: String) -> Result<()> {
    let client = Client::open(url).with_context(|| format!("fleet URL {}", redact(url)))?;
    agent.blocklist.enable_fleet();
    tokio::spawn(publisher(Arc::clone(&agent), client.clone(), name.clone(), redact(url)));
    tokio::spawn(consumer(agent, client, name, redact(url)));
    Ok(())
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn connect(client: &Client) -> Result<MultiplexedConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await.context("timed out")?.map_err(Into::into)
}

/// Backoff between reconnects: 0.5 s doubling to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(500))
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

/// What other boxes see as the origin of this box's own entries.
fn published(entry: &Entry, me: &str) -> Entry {
    let mut e = entry.clone();
    if e.origin.published_as_this_box() {
        e.origin = Origin::Fleet(me.to_owned());
    }
    e
}

async fn publish(con: &mut MultiplexedConnection, change: &FleetChange, me: &str) -> Result<()> {
    let (msg, state) = match change {
        FleetChange::Add { entry } => {
            let e = published(entry, me);
            (Message::Add(e.clone()), Some(e))
        }
        FleetChange::Del { kind, name } => (Message::Del { kind: *kind, name: name.clone(), origin: Origin::Fleet(me.to_owned()) }, None),
    };
    let mut pipe = redis::pipe();
    pipe.atomic();
    match (&msg, state) {
        (Message::Add(_), Some(e)) => {
            let key = entry_key(e.kind(), e.name());
            let json = serde_json::to_string(&e)?;
            if e.expires_unix_s == 0 {
                pipe.cmd("SET").arg(&key).arg(json).ignore();
            } else {
                pipe.cmd("SET").arg(&key).arg(json).arg("EXAT").arg(e.expires_unix_s).ignore();
            }
        }
        (Message::Del { kind, name, .. }, _) => {
            pipe.cmd("DEL").arg(entry_key(*kind, name)).ignore();
        }
        _ => unreachable!(),
    }
    let xadd = pipe.cmd("XADD").arg(STREAM).arg("MAXLEN").arg("~").arg(STREAM_MAXLEN).arg("*");
    for (k, v) in msg.to_fields() {
        xadd.arg(k).arg(v);
    }
    xadd.ignore();
    pipe.query_async::<()>(con).await?;
    Ok(())
}

async fn publisher(agent: Arc<Agent>, client: Client, me: String, shown: String) {
    let mut backoff = Backoff::new();
    loop {
        let mut con = match connect(&client).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("fleet: cannot reach {shown} to publish: {e:#}; local blocks stay queued");
                backoff.wait().await;
                continue;
            }
        };
        backoff = Backoff::new();
        loop {
            let store = agent.blocklist.store();
            agent.metrics.fleet_queued.set(store.queued_count().unwrap_or(0) as i64);
            let batch = match store.queued(200) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("fleet: reading the outbox: {e:#}");
                    break;
                }
            };
            if batch.is_empty() {
                // Woken by a new block, or every second to keep the queue metric fresh.
                let _ = tokio::time::timeout(Duration::from_secs(1), agent.blocklist.outbox_ready.notified()).await;
                continue;
            }
            let mut sent = Vec::new();
            let mut failed = None;
            for (seq, change) in &batch {
                match publish(&mut con, change, &me).await {
                    Ok(()) => sent.push(*seq),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Err(e) = store.unqueue(&sent) {
                tracing::error!("fleet: clearing the outbox: {e:#}");
            }
            agent.metrics.fleet_sent.inc_by(sent.len() as u64);
            if let Some(e) = failed {
                tracing::warn!("fleet: publishing to {shown} failed: {e:#}; will retry");
                break;
            }
        }
        backoff.wait().await;
    }
}

type StreamMessage = (String, Vec<(String, Vec<u8>)>);

fn pairs(flat: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    flat.chunks(2).filter(|c| c.len() == 2).map(|c| (String::from_utf8_lossy(&c[0]).into_owned(), c[1].clone())).collect()
}

async fn head_id(con: &mut MultiplexedConnection) -> Result<Option<String>> {
    let last: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XREVRANGE").arg(STREAM).arg("+").arg("-").arg("COUNT").arg(1).query_async(con).await?;
    Ok(last.into_iter().next().map(|(id, _)| id))
}

async fn first_id(con: &mut MultiplexedConnection) -> Result<Option<String>> {
    let first: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+").arg("COUNT").arg(1).query_async(con).await?;
    Ok(first.into_iter().next().map(|(id, _)| id))
}

/// Stream IDs compare as (ms, seq).
fn id_key(id: &str) -> (u64, u64) {
    let mut it = id.splitn(2, '-');
    (it.next().and_then(|s| s.parse().ok()).unwrap_or(0), it.next().and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Whether this box's own allow list covers the entry: then another box's block is not applied.
fn allowed_here(agent: &Agent, target: &Target) -> bool {
    match target.matches() {
        Match::Addr(ip) => agent.classifier.current().exempt_networks().any(|n| n.contains(&ip)),
        // A listed network is refused here if any of it is allowed here.
        Match::Net(net) => agent.classifier.current().exempt_networks().any(|n| n.contains(&net) || net.contains(&n)),
        Match::Greeting => {
            let probe = Greeting::new(Verb::Ehlo, target.name().as_bytes(), IpAddr::from([0, 0, 0, 0]));
            agent.classifier.classify(&probe).observations.iter().any(|o| o == ObservationKind::OperatorAllow)
        }
    }
}

fn apply(agent: &Agent, msg: &Message) -> Result<()> {
    match msg {
        Message::Add(e) => {
            if allowed_here(agent, &e.target) {
                tracing::info!("fleet: {} lists {}, but it is allowed here", e.origin, e.target);
                agent.metrics.fleet_skipped.get_or_create(&crate::metrics::KindLabel { kind: "allowed".into() }).inc();
                return Ok(());
            }
            agent.blocklist.apply_remote(e)
        }
        Message::Del { kind, name, .. } => agent.blocklist.remove(&[format!("{}/{name}", kind.as_str())]).map(|_| ()),
    }
}

fn handle(agent: &Agent, me: &str, fields: &[(String, Vec<u8>)]) {
    match Message::from_fields(fields) {
        Ok(msg) if msg.origin().as_str() == me => {}
        Ok(msg) => match apply(agent, &msg) {
            Ok(()) => {
                agent.metrics.fleet_received.inc();
            }
            Err(e) => tracing::error!("fleet: applying {msg:?}: {e:#}"),
        },
        Err(e) => {
            tracing::warn!("fleet: skipping a bad stream entry: {e:#}");
            agent.metrics.fleet_skipped.get_or_create(&crate::metrics::KindLabel { kind: "malformed".into() }).inc();
        }
    }
}

/// Loads the current state (the entry keys), returning the stream ID to follow from.
async fn load_state(agent: &Agent, con: &mut MultiplexedConnection, me: &str) -> Result<String> {
    // The head is read first: anything added while the keys are scanned is applied again from
    // the stream, which is harmless (an add is an upsert).
    let head = head_id(con).await?.unwrap_or_else(|| "0-0".into());
    let mut cursor: u64 = 0;
    let mut loaded = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{ENTRY_PREFIX}*")).arg("COUNT").arg(1000).query_async(con).await?;
        if !keys.is_empty() {
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(con).await?;
            for v in values.into_iter().flatten() {
                match serde_json::from_str::<Entry>(&v) {
                    Ok(e) if e.origin.as_str() == me => {}
                    Ok(e) => match apply(agent, &Message::Add(e)) {
                        Ok(()) => loaded += 1,
                        Err(err) => tracing::warn!("fleet: a stored entry was refused: {err:#}"),
                    },
                    Err(_) => {
                        agent.metrics.fleet_skipped.get_or_create(&crate::metrics::KindLabel { kind: "malformed".into() }).inc();
                    }
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    tracing::info!("fleet: loaded {loaded} entries of other boxes; following the stream from {head}");
    Ok(head)
}

async fn consumer(agent: Arc<Agent>, client: Client, me: String, shown: String) {
    let mut backoff = Backoff::new();
    loop {
        agent.metrics.fleet_connected.set(0);
        let mut con = match connect(&client).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("fleet: cannot connect to {shown}: {e:#}; filtering goes on locally");
                backoff.wait().await;
                continue;
            }
        };
        if let Err(e) = follow(&agent, &mut con, &me).await {
            tracing::warn!("fleet: lost {shown}: {e:#}; reconnecting");
        }
        backoff.wait().await;
    }
}

/// What XREAD answers: per stream, its messages as (id, flat field/value list).
type XreadReply = Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>;

async fn follow(agent: &Agent, con: &mut MultiplexedConnection, me: &str) -> Result<()> {
    let store = agent.blocklist.store();
    let fresh: String = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    let _: Option<String> = redis::cmd("SET").arg(EPOCH_KEY).arg(&fresh).arg("NX").query_async(con).await?;
    let epoch: String = redis::cmd("GET").arg(EPOCH_KEY).query_async(con).await?;
    let saved = store.meta(LAST_ID)?;
    let first = first_id(con).await?;
    let mut last = if store.meta(EPOCH)?.as_deref() != Some(epoch.as_str()) {
        // New to this Redis, or Redis lost its data: load what is there, and publish this box's
        // own entries (again) so the fleet has them.
        tracing::info!("fleet: joining generation {epoch}; loading the current list and publishing this box's entries");
        for e in store.entries()?.into_iter().filter(|e| e.origin.published_as_this_box()) {
            store.queue(&FleetChange::Add { entry: e })?;
        }
        agent.blocklist.outbox_ready.notify_one();
        let head = load_state(agent, con, me).await?;
        store.set_meta(EPOCH, &epoch)?;
        head
    } else {
        match saved {
            // Trimmed past where this box stopped: the stream no longer has what it missed.
            Some(s) if first.as_deref().is_some_and(|f| id_key(f) > id_key(&s)) => load_state(agent, con, me).await?,
            Some(s) => s,
            None => load_state(agent, con, me).await?,
        }
    };
    store.set_meta(LAST_ID, &last)?;
    agent.metrics.fleet_connected.set(1);
    loop {
        let reply: Option<XreadReply> =
            redis::cmd("XREAD").arg("COUNT").arg(500).arg("BLOCK").arg(1000).arg("STREAMS").arg(STREAM).arg(&last).query_async(con).await?;
        let messages: Vec<StreamMessage> =
            reply.into_iter().flatten().flat_map(|(_, msgs)| msgs).map(|(id, flat)| (id, pairs(flat))).collect();
        if messages.is_empty() {
            agent.metrics.fleet_lag_seconds.set(0.0);
            continue;
        }
        for (id, fields) in &messages {
            handle(agent, me, fields);
            last = id.clone();
        }
        agent.metrics.fleet_lag_seconds.set(now_ms().saturating_sub(id_key(&last).0) as f64 / 1000.0);
        store.set_meta(LAST_ID, &last)?;
    }
}
