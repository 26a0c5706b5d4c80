//! Sessions in process, without root, as mini-redis tests its server: a real agent over
//! [`InMemoryKernel`] and a store in a temporary directory, a session on a loopback socket driven
//! by a client, and paused tokio time where a timeout is the point.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{tcp::OwnedWriteHalf, TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    agent_state::in_process::{self, nowhere, InProcess},
    blocklist::kernel_side::helo_hash,
    kernel::{BlockTables, Kernel},
    listing::{Kind, Origin},
    registry::EndSession,
};

/// An in-process agent and the shutdown its sessions watch.
struct Edge {
    env: InProcess,
    _shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

fn edge(backend: SocketAddr) -> Result<Edge> {
    let (tx, rx) = watch::channel(false);
    Ok(Edge { env: in_process::agent(backend, |_| {})?, _shutdown: tx, shutdown_rx: rx })
}

impl Edge {
    /// A client connected to a new session; its reader and writer.
    async fn connect(&self) -> Result<(BufReader<tokio::net::tcp::OwnedReadHalf>, OwnedWriteHalf)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(super::run(Arc::clone(&self.env.agent.sessions), stream, peer, self.shutdown_rx.clone()));
        let (r, w) = client.into_split();
        Ok((BufReader::new(r), w))
    }
}

async fn line(r: &mut (impl AsyncBufReadExt + Unpin)) -> Result<String> {
    let mut l = String::new();
    r.read_line(&mut l).await?;
    Ok(l)
}

#[tokio::test(start_paused = true)]
async fn a_client_silent_after_the_banner_gets_421_when_the_command_timeout_ends() -> Result<()> {
    let e = edge(nowhere())?;
    let (mut r, _w) = e.connect().await?;
    let began = tokio::time::Instant::now();
    assert_eq!(line(&mut r).await?, "220 mx.example.net ESMTP\r\n");
    assert_eq!(line(&mut r).await?, "421 4.4.2 Timeout exceeded\r\n");
    let waited = began.elapsed();
    assert!(waited >= e.env.agent.config.command_timeout(), "421 after {waited:?}");
    assert!(waited < e.env.agent.config.command_timeout() + Duration::from_secs(1), "421 only after {waited:?}");
    assert_eq!(line(&mut r).await?, "", "the session must close after the 421");
    Ok(())
}

#[tokio::test]
async fn a_bogus_greeting_gets_its_reply_again_for_the_helo_fallback_221_to_quit_and_is_listed() -> Result<()> {
    let e = edge(nowhere())?;
    let (mut r, mut w) = e.connect().await?;
    assert_eq!(line(&mut r).await?, "220 mx.example.net ESMTP\r\n");
    w.write_all(b"EHLO rad.internal\r\n").await?;
    assert_eq!(line(&mut r).await?, "550 5.7.1 Bogus HELO\r\n");
    w.write_all(b"HELO rad.internal\r\n").await?;
    assert_eq!(line(&mut r).await?, "550 5.7.1 Bogus HELO\r\n", "the HELO fallback must read the same reply");
    w.write_all(b"QUIT\r\n").await?;
    assert_eq!(line(&mut r).await?, "221 2.0.0 Bye\r\n");
    assert_eq!(line(&mut r).await?, "", "closed after QUIT");
    // The reply waited for the listing to be durable: it is in the store and in the kernel.
    let stored = e.env.store.get("helo/rad.internal")?.expect("the bogus name is stored");
    assert_eq!((stored.kind(), stored.origin), (Kind::Helo, Origin::Agent));
    let hash = helo_hash(&e.env.store.hash_key()?, "rad.internal");
    assert!(e.env.kernel.lock().unwrap().helo_entry(hash).is_some(), "the bogus name is in the kernel");
    Ok(())
}

#[tokio::test]
async fn a_clean_greeting_is_handed_to_the_mta_behind_a_proxy_v2_header() -> Result<()> {
    let mta = TcpListener::bind("127.0.0.1:0").await?;
    let e = edge(mta.local_addr()?)?;
    let (mut r, mut w) = e.connect().await?;
    let client_addr = w.local_addr()?;
    assert_eq!(line(&mut r).await?, "220 mx.example.net ESMTP\r\n");
    w.write_all(b"EHLO mail.example.org\r\n").await?;
    // The MTA's side: a PROXY v2 header naming the real client, then the replayed greeting.
    let (backend, _) = tokio::time::timeout(Duration::from_secs(10), mta.accept()).await??;
    let (br, mut bw) = backend.into_split();
    let mut br = BufReader::new(br);
    let mut fixed = [0u8; 16];
    br.read_exact(&mut fixed).await?;
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n", "PROXY v2 signature");
    assert_eq!((fixed[12], fixed[13]), (0x21, 0x11), "PROXY command, TCP over IPv4");
    let mut rest = vec![0u8; u16::from_be_bytes([fixed[14], fixed[15]]) as usize];
    br.read_exact(&mut rest).await?;
    assert_eq!(&rest[..4], &[127, 0, 0, 1], "the client's address");
    assert_eq!(u16::from_be_bytes([rest[8], rest[9]]), client_addr.port(), "the client's port");
    bw.write_all(b"220 mta.example.net ESMTP\r\n").await?;
    assert_eq!(line(&mut br).await?, "EHLO mail.example.org\r\n", "the greeting replayed to the MTA");
    bw.write_all(b"250 mta.example.net\r\n").await?;
    // From here the client talks to the MTA through the agent.
    assert_eq!(line(&mut r).await?, "250 mta.example.net\r\n");
    w.write_all(b"QUIT\r\n").await?;
    assert_eq!(line(&mut br).await?, "QUIT\r\n");
    bw.write_all(b"221 2.0.0 Bye\r\n").await?;
    bw.shutdown().await?;
    assert_eq!(line(&mut r).await?, "221 2.0.0 Bye\r\n");
    assert!(e.env.store.entries()?.is_empty(), "nothing listed for a clean greeting");
    Ok(())
}

#[tokio::test]
async fn a_kernel_dropped_greeting_is_answered_twice_and_its_flow_released() -> Result<()> {
    let e = edge(nowhere())?;
    let (mut r, w) = e.connect().await?;
    let (client, server) = (w.local_addr()?, w.peer_addr()?);
    e.env.kernel.lock().unwrap().remember_flow(client, server);
    assert_eq!(line(&mut r).await?, "220 mx.example.net ESMTP\r\n");
    // What the drop-event follower does when the kernel dropped this flow's greeting.
    let told = e.env.agent.registry.end_session(client, EndSession { reply: Some("550 5.7.1 Bogus HELO".into()), server });
    assert!(told, "the session waiting for its first bytes is registered");
    // One reply for the EHLO the kernel dropped, one for the HELO fallback behind it.
    assert_eq!(line(&mut r).await?, "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(line(&mut r).await?, "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(line(&mut r).await?, "", "closed after the two replies");
    // The session released the flow as it closed (in the same step, before it next waits), so the
    // client's retransmitted greeting can reach the socket: nothing is left to release.
    assert!(!e.env.kernel.lock().unwrap().release_flow(client, server)?, "the session did not release its flow");
    drop(w);
    Ok(())
}

#[tokio::test]
async fn with_no_pregreet_wait_bytes_already_there_before_the_banner_are_seen() -> Result<()> {
    let e = edge(nowhere())?;
    assert_eq!(e.env.agent.config.pregreet_ms, 0, "the default: no wait, one peek");
    let pregreets =
        || e.env.agent.sessions.metrics.observations.get_or_create(&crate::metrics::ObservationLabel { kind: "pregreet".into() }).get();
    let (mut r, mut w) = e.connect().await?;
    // Written before the session first runs (this test's runtime has one thread).
    w.write_all(b"EHLO early.example.org\r\n").await?;
    assert_eq!(line(&mut r).await?, "220 mx.example.net ESMTP\r\n");
    assert_eq!(pregreets(), 1, "the greeting that came before the banner was not seen");
    // A client that waits for the banner is no pregreet.
    let (mut r2, _w2) = e.connect().await?;
    assert_eq!(line(&mut r2).await?, "220 mx.example.net ESMTP\r\n");
    assert_eq!(pregreets(), 1);
    drop(w);
    Ok(())
}
