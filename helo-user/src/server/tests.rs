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

use crate::agent::in_process::{self, nowhere, InProcess};

/// An agent accepting on a loopback port; its address, the stop switch and the accept loop.
async fn serving(env: &InProcess) -> Result<(std::net::SocketAddr, watch::Sender<bool>, JoinHandle<Result<()>>)> {
    let listener = super::bind("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(super::serve(Arc::clone(&env.agent), vec![listener], stopped));
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
