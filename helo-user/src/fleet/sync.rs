//! The two fleet tasks. Both reconnect with backoff; while Redis is away, filtering goes on from
//! the local store and kernel, and local blocks wait in the store's outbox.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use redis::{aio::MultiplexedConnection, Client};

use super::{
    consume::{self, StartAt, StreamMessage, EPOCH, LAST_ID},
    wire::{entry_key, Message, ENTRY_PREFIX, STREAM, STREAM_MAXLEN},
};
use crate::{
    agent_state::Agent,
    listing::{Entry, Origin},
    store::FleetChange,
};

/// The fleet's generation: a random token Redis keeps. A box that finds a token other than the
/// one it synced with knows Redis lost its data (a restart without persistence, a failover to an
/// empty replica) or that it is joining for the first time: it reloads and republishes its own.
const EPOCH_KEY: &str = "helo:epoch";
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
            loaded += values.into_iter().flatten().filter(|v| consume::load_entry(agent, me, v)).count();
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
    let first = first_id(con).await?;
    let start = consume::start_at(store.meta(EPOCH)?.as_deref(), &epoch, store.meta(LAST_ID)?.as_deref(), first.as_deref());
    let mut last = match start {
        StartAt::Join => {
            // New to this Redis, or Redis lost its data: load what is there, and publish this
            // box's own entries (again) so the fleet has them.
            tracing::info!("fleet: joining generation {epoch}; loading the current list and publishing this box's entries");
            consume::republish_own(agent)?;
            let head = load_state(agent, con, me).await?;
            store.set_meta(EPOCH, &epoch)?;
            head
        }
        StartAt::Reload => load_state(agent, con, me).await?,
        StartAt::Resume(id) => id,
    };
    store.set_meta(LAST_ID, &last)?;
    agent.metrics.fleet_connected.set(1);
    loop {
        let reply: Option<XreadReply> =
            redis::cmd("XREAD").arg("COUNT").arg(500).arg("BLOCK").arg(1000).arg("STREAMS").arg(STREAM).arg(&last).query_async(con).await?;
        let messages: Vec<StreamMessage> =
            reply.into_iter().flatten().flat_map(|(_, msgs)| msgs).map(|(id, flat)| (id, pairs(flat))).collect();
        last = consume::apply_batch(agent, me, &messages, &last)?;
    }
}
