//! The hand-off to the MTA and the relay after it.
//!
//! The MTA's own banner is swallowed (the client already has ours); the client's greeting is
//! replayed and the MTA's reply to it, with its real capabilities, goes back to the client. After
//! that, bytes flow both ways unchanged. Client commands are still read line by line until
//! STARTTLS, DATA or BDAT, so that each RCPT and any further greeting can be judged; from then on
//! the client's bytes are copied raw, which is what keeps a message byte for byte.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::Mutex,
    time::timeout,
};

use super::header;
use crate::session::{
    command::{self, Command},
    line::{Line, LineReader},
    reply,
};

pub struct HandOff<'a> {
    pub backend: SocketAddr,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The client's greeting line, exactly as it was sent.
    pub greeting: &'a [u8],
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// How a handed-off session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum HandOffEnd {
    /// Either side closed after a normal relay.
    Finished,
    /// The MTA could not be reached or did not greet; the client got a 421.
    BackendDown,
    /// A command was refused by `judge`: the client got its reply, the MTA a QUIT.
    Refused,
    /// The client went quiet for longer than the idle timeout.
    TimedOut,
}

/// What the relay asks the session about a client command: `Some(reply)` ends the session.
pub trait Judge {
    fn rcpt(&mut self, address: &str) -> Option<String>;
    fn greeting(&mut self, ehlo: bool, arg: &[u8]) -> Option<String>;
}

async fn read_reply(reader: &mut LineReader<OwnedReadHalf>) -> Result<Vec<u8>> {
    // A reply is one or more lines `ddd-text`, the last `ddd text`.
    let mut reply = Vec::new();
    loop {
        match reader.read_line().await? {
            Line::Complete(line) => {
                let last = line.get(3) != Some(&b'-');
                reply.extend_from_slice(&line);
                if last {
                    return Ok(reply);
                }
            }
            Line::TooLong => bail!("the MTA sent a reply line over 512 bytes"),
            Line::Closed => bail!("the MTA closed the connection"),
        }
    }
}

async fn connect(h: &HandOff<'_>) -> Result<(LineReader<OwnedReadHalf>, OwnedWriteHalf, Vec<u8>)> {
    let stream = timeout(h.connect_timeout, TcpStream::connect(h.backend))
        .await
        .context("timed out")?
        .context("connect failed")?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = LineReader::new(r);
    w.write_all(&header::encode(h.client, h.server)).await?;
    let banner = timeout(h.idle_timeout, read_reply(&mut r)).await.context("no banner")??;
    if !banner.starts_with(b"220") {
        bail!("the MTA's banner is not 220: {}", String::from_utf8_lossy(&banner).trim_end());
    }
    w.write_all(h.greeting).await?;
    let greeting_reply = timeout(h.idle_timeout, read_reply(&mut r)).await.context("no reply to the greeting")??;
    Ok((r, w, greeting_reply))
}

pub async fn hand_off(
    mut client_in: LineReader<OwnedReadHalf>,
    mut client_out: OwnedWriteHalf,
    h: HandOff<'_>,
    judge: &mut impl Judge,
) -> Result<HandOffEnd> {
    let (backend_in, mut backend_out, greeting_reply) = match connect(&h).await {
        Ok(parts) => parts,
        Err(e) => {
            log::warn!("hand-off of {} to {} failed: {e:#}", h.client, h.backend);
            let _ = client_out.write_all(format!("{}\r\n", reply::BACKEND_DOWN).as_bytes()).await;
            let _ = client_out.shutdown().await;
            return Ok(HandOffEnd::BackendDown);
        }
    };
    client_out.write_all(&greeting_reply).await?;

    // MTA → client runs on its own task; the client writer is shared so that a refusal can be
    // written after stopping it.
    let client_out = Arc::new(Mutex::new(client_out));
    let to_client = tokio::spawn(copy_to(backend_in.into_inner(), Arc::clone(&client_out)));

    let end = loop {
        let line = match timeout(h.idle_timeout, client_in.read_line()).await {
            Err(_) => break HandOffEnd::TimedOut,
            Ok(line) => line?,
        };
        let line = match line {
            Line::Closed => break HandOffEnd::Finished,
            Line::TooLong => {
                client_out.lock().await.write_all(format!("{}\r\n", reply::LINE_TOO_LONG).as_bytes()).await?;
                continue;
            }
            Line::Complete(line) => line,
        };
        let refusal = match command::parse(&line) {
            Command::Rcpt(address) => judge.rcpt(address),
            Command::Greeting { ehlo, arg } => judge.greeting(ehlo, arg),
            Command::StartTls | Command::Data | Command::Bdat => {
                backend_out.write_all(&line).await?;
                // Anything pipelined behind it is already in the reader's buffer; copying from the
                // reader itself sends that first.
                let _ = tokio::io::copy(&mut client_in.into_inner(), &mut backend_out).await;
                let _ = backend_out.shutdown().await;
                let _ = to_client.await;
                return Ok(HandOffEnd::Finished);
            }
            _ => None,
        };
        if let Some(text) = refusal {
            to_client.abort();
            let mut out = client_out.lock().await;
            let _ = out.write_all(format!("{text}\r\n").as_bytes()).await;
            let _ = out.shutdown().await;
            let _ = backend_out.write_all(b"QUIT\r\n").await;
            let _ = backend_out.shutdown().await;
            return Ok(HandOffEnd::Refused);
        }
        backend_out.write_all(&line).await?;
    };
    let _ = backend_out.shutdown().await;
    if end == HandOffEnd::TimedOut {
        to_client.abort();
        let mut out = client_out.lock().await;
        let _ = out.write_all(format!("{}\r\n", reply::TIMEOUT).as_bytes()).await;
        let _ = out.shutdown().await;
    } else {
        let _ = to_client.await;
    }
    Ok(end)
}

async fn copy_to(mut from: impl tokio::io::AsyncRead + Unpin, to: Arc<Mutex<OwnedWriteHalf>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.lock().await.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.lock().await.shutdown().await;
}
