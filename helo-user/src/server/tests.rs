//! The accept loop in process, without root: its caps and its graceful stop, with real clients on
//! loopback sockets.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};

use crate::agent_state::in_process::{self, nowhere, InProcess};

use super::reserve;

/// An agent accepting on a loopback port; its address, the stop switch and the accept loop.
async fn serving(env: &InProcess) -> Result<(std::net::SocketAddr, watch::Sender<bool>, JoinHandle<Result<()>>)> {
    let listener = super::reserve("127.0.0.1:0".parse()?, false)?.listen(16)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(super::serve(Arc::clone(&env.agent.sessions), vec![listener], stopped, None));
    Ok((addr, stop, server))
}

/// A client connected to `addr`, and the first line it reads.
async fn client(addr: std::net::SocketAddr) -> Result<(BufReader<TcpStream>, String)> {
    let mut c = BufReader::new(TcpStream::connect(addr).await?);
    let first = read_line(&mut c).await?;
    Ok((c, first))
}

async fn read_line(c: &mut BufReader<TcpStream>) -> Result<String> {
    let mut l = String::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_line(&mut l)).await??;
    Ok(l)
}

#[tokio::test]
async fn a_source_over_its_cap_gets_421_and_a_closed_session_frees_its_slot() -> Result<()> {
    let env = in_process::agent(nowhere(), |c| c.max_sessions_per_source = 2)?;
    let (addr, _stop, _server) = serving(&env).await?;
    let (_one, banner) = client(addr).await?;
    assert_eq!(banner, "220 mx.example.net ESMTP\r\n");
    let (mut two, banner) = client(addr).await?;
    assert_eq!(banner, "220 mx.example.net ESMTP\r\n");
    let (mut three, refused) = client(addr).await?;
    assert_eq!(refused, "421 4.7.0 Too many connections\r\n");
    assert_eq!(read_line(&mut three).await?, "", "closed after the 421");
    two.write_all(b"QUIT\r\n").await?;
    assert_eq!(read_line(&mut two).await?, "221 2.0.0 Bye\r\n");
    assert_eq!(read_line(&mut two).await?, "");
    // The slot is given back when the session's task ends, just after its close.
    let mut banner = String::new();
    for _ in 0..50 {
        banner = client(addr).await?.1;
        if banner.starts_with("220 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(banner, "220 mx.example.net ESMTP\r\n", "the freed slot must take a new session");
    Ok(())
}

#[tokio::test]
async fn the_total_cap_refuses_the_session_beyond_it() -> Result<()> {
    let env = in_process::agent(nowhere(), |c| c.max_sessions = 1)?;
    let (addr, _stop, _server) = serving(&env).await?;
    let (_one, banner) = client(addr).await?;
    assert_eq!(banner, "220 mx.example.net ESMTP\r\n");
    assert_eq!(client(addr).await?.1, "421 4.7.0 Too many connections\r\n");
    Ok(())
}

#[tokio::test]
async fn a_stop_tells_waiting_clients_421_and_the_loop_returns() -> Result<()> {
    let env = in_process::agent(nowhere(), |_| {})?;
    let (addr, stop, server) = serving(&env).await?;
    let (mut waiting, banner) = client(addr).await?;
    assert_eq!(banner, "220 mx.example.net ESMTP\r\n");
    stop.send(true)?;
    assert_eq!(read_line(&mut waiting).await?, "421 4.3.2 Service shutting down, try later\r\n");
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    // The listener goes with the aborted accept task, at the runtime's next turn.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the port still takes connections after the stop");
    Ok(())
}

/// The session code no longer sets these per socket: it relies on Linux copying them from
/// the listener at accept.
#[tokio::test]
async fn accepted_sockets_inherit_nodelay_and_keepalive() {
    let listener = reserve("127.0.0.1:0".parse().unwrap(), false).unwrap().listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let sock = socket2::SockRef::from(&accepted);
    assert!(sock.tcp_nodelay().unwrap(), "TCP_NODELAY not inherited");
    assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE not inherited");
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
    assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(15));
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
}

/// Session threads each bind the same address; without `shared` the port stays exclusive.
#[tokio::test]
async fn a_shared_port_takes_more_listeners_an_exclusive_one_does_not() {
    let first = reserve("127.0.0.1:0".parse().unwrap(), true).unwrap();
    let addr = first.local_addr().unwrap();
    let _first = first.listen(16).unwrap();
    let _second = reserve(addr, true).unwrap().listen(16).unwrap();
    let exclusive = reserve("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let taken = exclusive.local_addr().unwrap();
    let _exclusive = exclusive.listen(16).unwrap();
    assert!(reserve(taken, true).is_err(), "a shared socket joined a port bound without SO_REUSEPORT");
    assert!(reserve(taken, false).is_err());
}

/// Several session threads: each binds its own socket into the port's group, the caps hold
/// across all of them, and a stop ends every thread.
#[tokio::test]
async fn session_threads_share_the_port_and_the_caps_and_all_stop() -> Result<()> {
    let env = in_process::agent(nowhere(), |c| {
        c.session_threads = 3;
        c.max_sessions_per_source = 8;
    })?;
    let listener = reserve("127.0.0.1:0".parse()?, true)?.listen(64)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(super::serve(Arc::clone(&env.agent.sessions), vec![listener], stopped, None));
    // The other threads bind after the call; until then the first socket takes every connection.
    let mut held = vec![];
    let mut refused = 0;
    for _ in 0..12 {
        let (c, first) = client(addr).await?;
        match first.as_str() {
            "220 mx.example.net ESMTP\r\n" => held.push(c),
            "421 4.7.0 Too many connections\r\n" => refused += 1,
            other => panic!("unexpected first line {other:?}"),
        }
    }
    assert_eq!((held.len(), refused), (8, 4), "the per-source cap counts sessions on every thread");
    stop.send(true)?;
    for c in &mut held {
        assert_eq!(read_line(c).await?, "421 4.3.2 Service shutting down, try later\r\n");
    }
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}
