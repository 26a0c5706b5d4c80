//! One hand-off, start to end: open the MTA session, pass the MTA's reply to the greeting (or its
//! refusal) to the client, relay.

use std::{net::SocketAddr, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::AsyncWriteExt,
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::watch,
};

use super::{
    backend::{self, Opened},
    relay::{self, Judge, RelayEnd, Timeouts},
};
use crate::{
    load::Load,
    smtp::{
        line::{LineReader, COMMAND_LINE},
        refused, reply,
    },
};

pub struct HandOff<'a> {
    pub backend: SocketAddr,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The session's id, for the MTA's log (PROXY v2 `PP2_TYPE_UNIQUE_ID`).
    pub session: crate::session_id::SessionId,
    /// The client's greeting line, exactly as it was sent.
    pub greeting: &'a [u8],
    pub connect_timeout: Duration,
    pub timeouts: Timeouts,
}

/// How a handed-off session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum HandOffEnd {
    /// The MTA could not be reached or did not greet in time; the client got a 421.
    BackendDown(String),
    /// The MTA refused the client at connect; the client got the MTA's own reply.
    BackendRefused(String),
    Relayed(RelayEnd),
}

/// Hands the client (its read half, what it sent past the greeting, its write half) to the MTA.
pub async fn hand_off(
    client_in: OwnedReadHalf,
    client_buf: BytesMut,
    mut client_out: OwnedWriteHalf,
    h: HandOff<'_>,
    judge: &mut impl Judge,
    load: &Load,
    shutdown: watch::Receiver<bool>,
) -> HandOffEnd {
    let t = h.timeouts;
    let id = h.session.text();
    let opened = backend::open(h.backend, h.client, h.server, id.as_bytes(), h.greeting, h.connect_timeout, t.reply).await;
    match opened {
        Err(e) => {
            let _ = reply::send(&mut client_out, reply::BACKEND_DOWN, t.write).await;
            let _ = client_out.shutdown().await;
            HandOffEnd::BackendDown(format!("{e:#}"))
        }
        Ok(Opened::Refused { mut stream, reply: refusal }) => {
            // The MTA's word, as the reply to the greeting; its HELO fallback reads it again.
            relay::quit(&mut stream, t.write).await;
            drop(stream);
            let text = String::from_utf8_lossy(&refusal).trim_end().to_owned();
            if reply::write_within(&mut client_out, &refusal, t.write).await.is_ok() {
                let mut input = LineReader::with_buffered(client_in, client_buf, COMMAND_LINE);
                refused::answer_until_quit(&mut input, &mut client_out, &refusal, t.linger).await;
            }
            HandOffEnd::BackendRefused(text)
        }
        Ok(Opened::Ready(b)) => {
            if reply::write_within(&mut client_out, &b.greeting_reply, t.write).await.is_err() {
                return HandOffEnd::Relayed(RelayEnd::Finished);
            }
            let (mta_in, mta_out) = b.stream.into_split();
            let end = relay::relay(client_in, client_buf, client_out, mta_in, b.read_ahead, mta_out, judge, load, t, shutdown).await;
            HandOffEnd::Relayed(end)
        }
    }
}
