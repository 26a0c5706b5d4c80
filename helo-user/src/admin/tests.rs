//! The admin protocol in process, without root: the real server on a Unix socket in a temporary
//! directory, in front of an agent over [`InMemoryKernel`] and a real store, and the real client
//! (`helo blocklist`, `allow`, `stats` all go through [`client::call_with_pins`]).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
};

use anyhow::Result;

use super::{
    client,
    protocol::{Request, Response, MAX_REQUEST_BYTES},
    server,
};
use crate::{
    agent_state::in_process::{self, nowhere, InProcess},
    allow::AllowKind,
    kernel::BlockTables,
    listing::{Entry, Kind, Origin, Target},
};

/// An agent with its admin socket served.
struct Admin {
    env: InProcess,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

async fn admin() -> Result<Admin> {
    let env = in_process::agent(nowhere(), |_| {})?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/admin.sock");
    let listener = server::bind(&socket)?;
    tokio::spawn(server::serve(listener, std::sync::Arc::clone(&env.agent)));
    Ok(Admin { env, socket, _dir: dir })
}

impl Admin {
    /// `req` through the real client, as the command line sends it (blocking: off the runtime).
    async fn call(&self, req: Request) -> Result<Response> {
        let (socket, state) = (self.socket.clone(), self.env.agent.config.state_dir.clone());
        tokio::task::spawn_blocking(move || client::call_with_pins(&socket, &state, Path::new("/nonexistent/pins"), req)).await?
    }

    /// Raw lines on one connection, and the response lines read back.
    async fn raw(&self, lines: Vec<Vec<u8>>) -> Result<Vec<String>> {
        let socket = self.socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut stream = UnixStream::connect(&socket)?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut out = Vec::new();
            for line in lines {
                if stream.write_all(&line).is_err() {
                    // The server closed the connection (after refusing a request).
                    out.push(String::new());
                    break;
                }
                let mut reply = String::new();
                match reader.read_line(&mut reply) {
                    // Closed; a reset when the server closed with bytes of ours unread (the rest
                    // of a refused line), which a request written before the close can meet too.
                    Ok(0) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Ok(_) => {
                        out.push(reply);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                out.push(String::new());
                break;
            }
            Ok(out)
        })
        .await?
    }

    fn in_kernel(&self, ip: &str) -> bool {
        self.env.kernel.lock().unwrap().source_entry(ip.parse().unwrap()).is_some()
    }
}

fn add(kind: Kind, name: &str) -> Request {
    Request::Add { kind, name: name.into(), ttl_s: None, reason: None, reply: None }
}

fn names(resp: &Response) -> Vec<String> {
    resp.entries.iter().flatten().map(|l| l.entry.key()).collect()
}

#[tokio::test]
async fn the_socket_is_for_root_alone() -> Result<()> {
    let a = admin().await?;
    assert_eq!(std::fs::metadata(&a.socket)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(a.socket.parent().unwrap())?.permissions().mode() & 0o777, 0o700);
    Ok(())
}

#[tokio::test]
async fn add_get_list_and_del_reach_store_and_kernel() -> Result<()> {
    let a = admin().await?;
    let resp = a.call(add(Kind::Helo, "Rad.Internal.")).await?;
    assert_eq!((resp.ok, resp.count, resp.note.as_deref()), (true, Some(1), None), "live: no offline note");
    a.call(Request::Add { kind: Kind::Source, name: "198.18.5.5/32".into(), ttl_s: Some(0), reason: Some("abuse".into()), reply: None })
        .await?;
    a.call(add(Kind::Source, "198.18.64.0/18")).await?;
    assert!(a.in_kernel("198.18.5.5"), "a /32 is one address, in the exact map");

    let listed = a.call(Request::List).await?;
    let mut keys = names(&listed);
    keys.sort();
    assert_eq!(keys, ["helo/rad.internal", "source/198.18.5.5", "source/198.18.64.0/18"], "names normalised");
    let source = listed.entries.iter().flatten().find(|l| l.entry.name() == "198.18.5.5").unwrap();
    assert_eq!((source.entry.reason.as_str(), source.entry.expires_unix_s, source.entry.origin.as_str()), ("abuse", 0, "operator"));
    let helo = listed.entries.iter().flatten().find(|l| l.entry.kind() == Kind::Helo).unwrap();
    let ttl = helo.entry.expires_unix_s - helo.entry.added_unix_s;
    assert_eq!(ttl, 3600, "the agent's default time to live for a greeting");

    let got = a.call(Request::Get { kind: Kind::Helo, name: "RAD.internal".into() }).await?;
    assert_eq!(names(&got), ["helo/rad.internal"]);
    let none = a.call(Request::Get { kind: Kind::Helo, name: "other.example".into() }).await?;
    assert!(none.ok && names(&none).is_empty());

    let del = a.call(Request::Del { kind: Kind::Source, name: "198.18.5.5".into(), fleet: false }).await?;
    assert_eq!(del.count, Some(1));
    assert!(!a.in_kernel("198.18.5.5"), "removed from the kernel too");
    assert!(a.env.store.get("source/198.18.5.5")?.is_none());
    let again = a.call(Request::Del { kind: Kind::Source, name: "198.18.5.5".into(), fleet: false }).await.unwrap_err();
    assert_eq!(again.to_string(), "source/198.18.5.5 is not listed");

    assert_eq!(a.call(Request::Flush).await?.count, Some(2));
    assert!(names(&a.call(Request::List).await?).is_empty());
    assert_eq!(a.env.kernel.lock().unwrap().blocklist_len(), 0);
    Ok(())
}

#[tokio::test]
async fn a_bad_value_gets_a_clear_error_and_changes_nothing() -> Result<()> {
    let a = admin().await?;
    let host_bits = a.call(add(Kind::Source, "198.18.5.5/24")).await.unwrap_err();
    assert_eq!(host_bits.to_string(), "198.18.5.5/24 has host bits set; did you mean 198.18.5.0/24?");
    let not_ip = a.call(add(Kind::Source, "mail.example")).await.unwrap_err();
    assert!(not_ip.to_string().contains("\"mail.example\" is not an address or a CIDR"), "{not_ip}");
    // An import is all or nothing: the second entry's fault keeps the first out too.
    let good = Entry {
        target: Target::greeting("a.example".into()),
        reason: "operator".into(),
        reply: "550 5.7.1 Bogus HELO".into(),
        added_unix_s: 1,
        expires_unix_s: 0,
        origin: Origin::Operator,
    };
    // Upper case: not the stored (normalised) form of any name.
    let bad = Entry { target: Target::greeting("Not.Normalised".into()), ..good.clone() };
    let import = a.call(Request::Import { entries: vec![good.clone(), bad] }).await.unwrap_err();
    assert!(import.to_string().starts_with("entry 2: "), "{import}");
    assert!(names(&a.call(Request::List).await?).is_empty());
    assert_eq!(a.call(Request::Import { entries: vec![good] }).await?.count, Some(1));
    Ok(())
}

#[tokio::test]
async fn the_allow_list_at_run_time() -> Result<()> {
    let a = admin().await?;
    let exempt = |a: &Admin| a.env.agent.classifier.current().exempt_networks().map(|n| n.to_string()).collect::<Vec<_>>();
    let added = a.call(Request::AllowAdd { value: "198.18.9.0/24".into(), kind: None }).await?;
    assert_eq!(added.message.as_deref(), Some("allowed net 198.18.9.0/24"));
    assert!(exempt(&a).contains(&"198.18.9.0/24".to_owned()), "in force at once: {:?}", exempt(&a));
    // A listed name, allowed: taken off the blocklist, kernel included.
    a.call(add(Kind::Helo, "friend.example")).await?;
    let name = a.call(Request::AllowAdd { value: "Friend.Example".into(), kind: Some(AllowKind::Name) }).await?;
    assert_eq!(name.message.as_deref(), Some("allowed name friend.example; 1 taken off the blocklist"));
    assert_eq!(a.env.kernel.lock().unwrap().blocklist_len(), 0);
    let listed = a.call(Request::AllowList).await?;
    let mut allowed: Vec<(String, String)> = listed.allowed.unwrap().into_iter().map(|e| (e.value, e.origin.as_str().to_owned())).collect();
    allowed.sort();
    assert_eq!(allowed, [("198.18.9.0/24".into(), "operator".into()), ("friend.example".into(), "operator".into())]);
    assert_eq!(a.env.store.allow_entries()?.len(), 2, "kept in the store: it survives a restart");
    let removed = a.call(Request::AllowDel { value: "198.18.9.0/24".into(), kind: None }).await?;
    assert_eq!(removed.message.as_deref(), Some("removed net 198.18.9.0/24 from the allow list"));
    assert!(!exempt(&a).contains(&"198.18.9.0/24".to_owned()));
    let gone = a.call(Request::AllowDel { value: "198.18.9.0/24".into(), kind: None }).await.unwrap_err();
    assert_eq!(gone.to_string(), "net 198.18.9.0/24 is not on the allow list");
    let bad = a.call(Request::AllowAdd { value: "198.18.9.7/24".into(), kind: None }).await.unwrap_err();
    assert!(bad.to_string().contains("198.18.9.7/24"), "{bad}");
    Ok(())
}

#[tokio::test]
async fn stats_count_what_the_agent_holds() -> Result<()> {
    let a = admin().await?;
    a.call(add(Kind::Helo, "rad.internal")).await?;
    a.call(add(Kind::Source, "198.18.5.5")).await?;
    let stats = a.call(Request::Stats).await?.stats.expect("stats");
    assert_eq!((stats.helo_entries, stats.source_entries), (1, 1));
    assert_eq!((stats.xdp_mode.as_str(), stats.program_id), ("detached", 0), "the in-memory kernel attaches nothing");
    assert_eq!(stats.sessions_total, 0);
    assert!(stats.changes.added >= 2, "{:?}", stats.changes);
    assert!(stats.kernel.keys().any(|k| k == "drop_helo"), "{:?}", stats.kernel.keys());
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_an_error_and_the_connection_goes_on() -> Result<()> {
    let a = admin().await?;
    let replies = a
        .raw(vec![
            b"not json\n".to_vec(),
            b"{\"op\":\"explode\"}\n".to_vec(),
            b"{\"op\":\"add\",\"kind\":\"helo\"}\n".to_vec(),
            b"{\"op\":\"add\",\"kind\":\"hash\",\"name\":\"x\"}\n".to_vec(),
            b"{\"op\":\"list\"}\n".to_vec(),
        ])
        .await?;
    let parsed: Vec<Response> = replies.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (r, expect) in parsed.iter().zip([
        "bad request: expected ident",
        "bad request: unknown variant `explode`",
        "bad request: missing field `name`",
        "bad request: unknown variant `hash`",
    ]) {
        assert!(!r.ok && r.error.as_deref().unwrap_or("").starts_with(expect), "{r:?} should start with {expect}");
    }
    assert!(parsed[4].ok && parsed[4].entries.is_some(), "a good request after bad ones is answered");
    Ok(())
}

#[tokio::test]
async fn an_overlong_request_is_refused_and_its_connection_closed() -> Result<()> {
    let a = admin().await?;
    let mut long = vec![b'x'; MAX_REQUEST_BYTES + 10];
    long.push(b'\n');
    let replies = a.raw(vec![long, b"{\"op\":\"list\"}\n".to_vec()]).await?;
    let refused: Response = serde_json::from_str(&replies[0])?;
    assert_eq!(refused.error.as_deref(), Some("request over 65536 bytes: refused"));
    assert_eq!(replies[1], "", "closed after the refusal");
    // The agent still answers others.
    assert!(a.call(Request::List).await?.ok);
    Ok(())
}

#[tokio::test]
async fn with_no_agent_the_client_works_on_the_store_and_says_so() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("admin.sock");
    let state = dir.path().join("state");
    let call = |req: Request| client::call_with_pins(&socket, &state, Path::new("/nonexistent/pins"), req);
    let missing = call(Request::List).unwrap_err();
    assert!(missing.to_string().contains("no state directory"), "{missing}");
    std::fs::create_dir(&state)?;
    let stats = call(Request::Stats).unwrap_err();
    assert!(stats.to_string().starts_with("no agent listens on"), "{stats}");
    let added = call(add(Kind::Helo, "rad.internal"))?;
    assert!(added.note.unwrap().contains("changed the store only"));
    assert_eq!(names(&call(Request::List)?), ["helo/rad.internal"]);
    Ok(())
}
