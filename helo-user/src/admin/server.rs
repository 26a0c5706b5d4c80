//! The agent's admin socket: root-only (mode 0600 in a 0700 directory), one request per
//! connection line.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
};

use super::{
    ops::{self, Where},
    protocol::{Request, Response, Stats, IMPORT_PREFIX, MAX_IMPORT_BYTES, MAX_REQUEST_BYTES},
};
use crate::agent_state::Agent;

pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        crate::state::ensure_dir(dir)?;
    }
    // A socket left by a killed agent: nobody listens on it any more.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn stats(agent: &Agent) -> Result<Stats> {
    let kernel = agent.kernel.lock().unwrap();
    let counters = kernel.counters()?;
    let (helo, source) = agent.blocklist.counts();
    Ok(Stats {
        kernel: counters.named().map(|(n, v)| (n.to_owned(), v)).collect(),
        sessions_total: agent.metrics.sessions.get(),
        sessions_active: agent.metrics.sessions_active.get() as u64,
        helo_entries: helo as u64,
        source_entries: source as u64,
        changes: agent.blocklist.changes(),
        xdp_mode: kernel.attach_mode().map(|m| m.as_str()).unwrap_or("detached").to_owned(),
        program_id: kernel.program_id().unwrap_or(0),
        verdicts: agent.metrics.verdict_counts(),
        hand_offs: agent.metrics.hand_offs.get(),
        backend_errors: agent.metrics.backend_errors.get(),
        top: agent.recent.top(10),
    })
}

fn answer(agent: &Agent, line: &str) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::error(anyhow::anyhow!("bad request: {e}")),
    };
    let result = match req {
        Request::Stats => stats(agent).map(|s| Response { ok: true, stats: Some(s), ..Default::default() }),
        Request::Reload => {
            crate::reload::reload_logged(agent).map(|o| Response { ok: true, message: Some(o.to_string()), ..Default::default() })
        }
        Request::AllowList => Ok(Response { ok: true, allowed: Some(crate::allow::live::list(agent)), ..Default::default() }),
        Request::AllowAdd { value, kind } => crate::allow::AllowEntry::parse(&value, kind, crate::listing::clock::unix_now())
            .and_then(|e| crate::allow::live::add(agent, e))
            .map(|c| Response { ok: true, message: Some(c.message), ..Default::default() }),
        Request::AllowDel { value, kind } => crate::allow::AllowEntry::parse(&value, kind, 0)
            .and_then(|e| crate::allow::live::del(agent, e))
            .map(|c| Response { ok: true, message: Some(c.message), ..Default::default() }),
        req => ops::handle(Where::Live(&agent.blocklist), req),
    };
    result.unwrap_or_else(Response::error)
}

/// One request line, at most [`MAX_REQUEST_BYTES`] (an import: [`MAX_IMPORT_BYTES`]); `None` at
/// the end of the stream.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let n = (&mut *reader).take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    let mut limit = MAX_REQUEST_BYTES;
    if !buf.ends_with(b"\n") && buf.len() > MAX_REQUEST_BYTES && buf.starts_with(IMPORT_PREFIX) {
        limit = MAX_IMPORT_BYTES;
        let more = (MAX_IMPORT_BYTES - buf.len()) as u64 + 1;
        (&mut *reader).take(more).read_until(b'\n', &mut buf).await?;
    }
    if buf.len() > limit || (buf.len() == limit && !buf.ends_with(b"\n")) {
        anyhow::bail!("request over {limit} bytes: refused");
    }
    Ok(Some(String::from_utf8(buf).context("request is not UTF-8")?.trim_end().to_owned()))
}

pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut reader = BufReader::new(r);
            loop {
                let line = match read_request(&mut reader).await {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => {
                        let mut text = serde_json::to_string(&Response::error(e)).unwrap_or_default();
                        text.push('\n');
                        let _ = w.write_all(text.as_bytes()).await;
                        break;
                    }
                };
                // Store and kernel updates block briefly (an fsync): off the async threads.
                let agent = Arc::clone(&agent);
                let response =
                    tokio::task::spawn_blocking(move || answer(&agent, &line)).await.unwrap_or_else(|e| Response::error(e.into()));
                let mut text = serde_json::to_string(&response).unwrap_or_default();
                text.push('\n');
                if w.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: Vec<u8>) -> Result<Option<String>> {
        let mut r = tokio::io::BufReader::new(std::io::Cursor::new(input));
        read_request(&mut r).await
    }

    #[tokio::test]
    async fn requests_are_bounded_and_imports_get_more_room() {
        assert_eq!(read(b"{\"op\":\"list\"}\n".to_vec()).await.unwrap().as_deref(), Some(r#"{"op":"list"}"#));
        assert_eq!(read(vec![]).await.unwrap(), None);
        let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        long.push(b'\n');
        assert!(read(long).await.unwrap_err().to_string().contains("request over 65536 bytes"));
        let mut import = IMPORT_PREFIX.to_vec();
        import.extend(std::iter::repeat_n(b' ', 1 << 20));
        import.extend(b",\"entries\":[]}\n");
        assert!(read(import).await.unwrap().is_some());
        let mut huge = IMPORT_PREFIX.to_vec();
        huge.extend(std::iter::repeat_n(b' ', MAX_IMPORT_BYTES));
        assert!(read(huge).await.unwrap_err().to_string().contains("request over 16777216 bytes"));
    }
}
