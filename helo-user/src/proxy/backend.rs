//! Opening the MTA session for a client: connect, PROXY v2 header, wait for the MTA's banner,
//! replay the client's greeting, read the MTA's reply to it.
//!
//! The MTA's 220 banner is swallowed (the client already has ours). Any other banner is the MTA
//! refusing this client (Postfix's `554 5.7.1 ... Client host rejected`, `421 ... too many
//! connections`): that is the MTA's word to the client, so it is handed back as it is, to be
//! relayed as the reply to the client's greeting.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use tokio::{io::AsyncReadExt, net::TcpStream, time::Instant};

use super::header;
use crate::smtp::{line::RELAY_LINE, reply, response::ReplyScanner};

/// The MTA's side of a session that is ready for the relay.
pub struct Backend {
    pub stream: TcpStream,
    /// The MTA's reply to the replayed greeting (its capabilities), to go to the client as is.
    pub greeting_reply: BytesMut,
    /// Anything the MTA sent after that reply.
    pub read_ahead: BytesMut,
}

/// What came of opening the MTA session.
pub enum Opened {
    Ready(Backend),
    /// The MTA's banner was not 220: its whole reply, unchanged (and the socket, for a QUIT).
    Refused {
        stream: TcpStream,
        reply: BytesMut,
    },
}

/// Keepalive for both sockets of a relayed session: a peer that vanished without a FIN is found
/// within about two minutes even while the session waits on the other side.
pub fn tcp_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(15)).with_retries(4)
}

/// Reads one whole reply (all its lines) from `stream`, keeping what follows it in `buf`.
pub async fn read_reply(stream: &mut TcpStream, buf: &mut BytesMut, deadline: Instant) -> Result<(u16, BytesMut)> {
    loop {
        let mut scanner = ReplyScanner::default();
        let mut end = None;
        for (i, b) in buf.iter().enumerate() {
            scanner.feed(std::slice::from_ref(b), |code| end = Some((i + 1, code)));
            if end.is_some() {
                break;
            }
        }
        if let Some((len, code)) = end {
            return Ok((code, buf.split_to(len)));
        }
        if buf.len() > RELAY_LINE {
            bail!("the MTA sent a reply over {RELAY_LINE} bytes");
        }
        let n = tokio::time::timeout_at(deadline, stream.read_buf(buf)).await.context("timed out waiting for the MTA")??;
        if n == 0 {
            bail!("the MTA closed the connection");
        }
    }
}

/// Connects to `backend` for `client` (who reached `server`), the session known as `unique_id`
/// (sent in the PROXY header), and replays `greeting`.
pub async fn open(
    backend: SocketAddr,
    client: SocketAddr,
    server: SocketAddr,
    unique_id: &[u8],
    greeting: &[u8],
    connect_timeout: Duration,
    reply_timeout: Duration,
) -> Result<Opened> {
    let mut stream =
        tokio::time::timeout(connect_timeout, TcpStream::connect(backend)).await.context("connect timed out")?.context("connect failed")?;
    stream.set_nodelay(true)?;
    // The client's socket has it from the listener (`crate::server::reserve`).
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&tcp_keepalive());
    let write_limit = connect_timeout.max(reply::WRITE_TIMEOUT);
    reply::write_within(&mut stream, &header::encode(client, server, unique_id), write_limit).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let (code, banner) = read_reply(&mut stream, &mut buf, Instant::now() + reply_timeout).await.context("no banner")?;
    if code != 220 {
        return Ok(Opened::Refused { stream, reply: banner });
    }
    reply::write_within(&mut stream, greeting, write_limit).await?;
    let (_, greeting_reply) =
        read_reply(&mut stream, &mut buf, Instant::now() + reply_timeout).await.context("no reply to the greeting")?;
    Ok(Opened::Ready(Backend { stream, greeting_reply, read_ahead: buf }))
}
