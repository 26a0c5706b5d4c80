//! The command line's side: talk to the running agent, or work on the store when none runs.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{bail, Context, Result};

use super::{
    ops::{self, Where},
    protocol::{Request, Response},
};
use crate::{
    allow::{offline::OfflineAllow, AllowEntry},
    blocklist::offline::Offline,
    listing::clock::unix_now,
};

fn allow_offline(mut target: OfflineAllow<'_>, req: Request) -> Result<Response> {
    let changed = |note: String| Response { ok: true, note: Some(note), ..Default::default() };
    match req {
        Request::AllowList => Ok(Response { ok: true, allowed: Some(target.list()?), ..Default::default() }),
        Request::AllowAdd { value, kind } => Ok(changed(target.add(AllowEntry::parse(&value, kind, unix_now())?)?)),
        Request::AllowDel { value, kind } => Ok(changed(target.del(AllowEntry::parse(&value, kind, 0)?)?)),
        _ => unreachable!("only allow requests come here"),
    }
}

/// [`call_with_pins`] with the default pin directory.
pub fn call(socket: &Path, state_dir: &Path, req: Request) -> Result<Response> {
    call_with_pins(socket, state_dir, Path::new(crate::config::DEFAULT_PIN_DIR), req)
}

/// Sends `req` to the agent at `socket`; with no agent there, runs it on the store in
/// `state_dir` and the maps pinned in `pin_dir`. A caller without permission gets told so, never
/// a silent fallback.
pub fn call_with_pins(socket: &Path, state_dir: &Path, pin_dir: &Path, req: Request) -> Result<Response> {
    call_with_config(socket, state_dir, pin_dir, None, req)
}

/// [`call_with_pins`], and with no agent running, `file` (the config file's classifier section,
/// when the command was given `--config`) tells the allow commands which entries are the file's.
pub fn call_with_config(
    socket: &Path,
    state_dir: &Path,
    pin_dir: &Path,
    file: Option<&crate::classify::ClassifierConfig>,
    req: Request,
) -> Result<Response> {
    match UnixStream::connect(socket) {
        Ok(mut stream) => {
            let mut line = serde_json::to_string(&req)?;
            line.push('\n');
            stream.write_all(line.as_bytes())?;
            let mut reply = String::new();
            BufReader::new(&stream).read_line(&mut reply)?;
            let resp: Response = serde_json::from_str(&reply).context("the agent's answer is not JSON")?;
            match resp.error {
                Some(e) if !resp.ok => bail!("{e}"),
                _ => Ok(resp),
            }
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            bail!("permission denied on {}: blocklist and stats commands need root", socket.display())
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            if matches!(req, Request::Reload | Request::Stats) {
                bail!("no agent listens on {}: is it running, and is --admin-socket (or --config) right?", socket.display());
            }
            match std::fs::metadata(state_dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!("no agent at {} and the state directory {} is not a directory", socket.display(), state_dir.display()),
                Err(err) if err.kind() == ErrorKind::NotFound => bail!(
                    "no agent at {} and no state directory {}: is --state-dir (or --config) right?",
                    socket.display(),
                    state_dir.display()
                ),
                Err(err) if err.kind() == ErrorKind::PermissionDenied => {
                    bail!("permission denied on {}: blocklist commands need root", state_dir.display())
                }
                Err(err) => return Err(err).with_context(|| format!("reading {}", state_dir.display())),
            }
            let mut offline = Offline::open(state_dir, pin_dir).map_err(|err| {
                if err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::PermissionDenied)) {
                    anyhow::anyhow!("permission denied on {}: blocklist commands need root", state_dir.display())
                } else {
                    err.context(format!("no agent at {} and the store could not be opened", socket.display()))
                }
            })?;
            match req {
                Request::AllowList | Request::AllowAdd { .. } | Request::AllowDel { .. } => {
                    allow_offline(OfflineAllow { blocklist: &mut offline, file }, req)
                }
                req => ops::handle(Where::Offline(&mut offline), req),
            }
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {}", socket.display())),
    }
}
