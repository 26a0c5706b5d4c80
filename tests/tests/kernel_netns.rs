//! The real XDP program attached in native mode to a veth, between a real TCP client in one
//! namespace and a listener in another: what it drops never reaches the listener's socket.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use helo_common::{
    hash_helo_arg,
    maps::{counter, reason, BlockEntry},
    HashKey,
};
use helo_testbed::{
    netns::{link, Netns},
    privilege::require_root,
};
use helo_user::{
    kernel::{BlockTables, KernelFilter, LoadOptions},
    modes::{AttachMode, FilterMode},
};
use socket2::{Domain, Socket, Type};

/// What the listener got from one connection: the first line, or `None` if nothing came.
type Received = (SocketAddr, Option<String>);

fn serve(listener: TcpListener, tx: mpsc::Sender<Received>) {
    for stream in listener.incoming().take(32) {
        let Ok(mut stream) = stream else { break };
        let tx = tx.clone();
        thread::spawn(move || {
            let peer = stream.peer_addr().unwrap();
            let _ = stream.write_all(b"220 listener ESMTP\r\n");
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut line = String::new();
            let got = match BufReader::new(&stream).read_line(&mut line) {
                Ok(n) if n > 0 => Some(line),
                _ => None,
            };
            let _ = tx.send((peer, got));
        });
    }
}

/// Connects from `src`, reads the banner and sends `greeting`.
fn greet(src: IpAddr, dst: SocketAddr, greeting: &str) -> Result<SocketAddr> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&dst.into(), Duration::from_secs(2)).context("connect")?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut banner = String::new();
    BufReader::new(&stream).read_line(&mut banner)?;
    assert!(banner.starts_with("220 "), "banner: {banner:?}");
    stream.write_all(greeting.as_bytes())?;
    let local = stream.local_addr()?;
    // Keep the connection open while the listener waits for the greeting.
    thread::spawn(move || {
        thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    Ok(local)
}

fn wait_for(rx: &mpsc::Receiver<Received>, peer: SocketAddr) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((p, got)) if p == peer => return got,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("the listener never reported on {peer}");
}

#[test]
fn native_xdp_on_a_veth_drops_listed_greetings_and_sources() -> Result<()> {
    if !require_root("native_xdp_on_a_veth_drops_listed_greetings_and_sources") {
        return Ok(());
    }
    let client = Netns::new("c")?;
    let edge = Netns::new("e")?;
    let (c_end, e_end) = link(&client, &edge, 10)?;
    for extra in ["198.18.10.3/24", "198.18.10.4/24"] {
        client.ip(&["addr", "add", extra, "dev", &c_end.ifname])?;
    }
    let key = HashKey { k0: rand::random(), k1: rand::random() };
    let ifname = e_end.ifname.clone();
    let (mut filter, mode) = edge.enter(move || -> Result<_> {
        let mut f = KernelFilter::load(LoadOptions::default())?;
        f.configure(key, FilterMode::Enforce, &[25])?;
        let mode = f.attach(&ifname, AttachMode::Native)?;
        Ok((f, mode))
    })??;
    assert_eq!(mode, AttachMode::Native, "native XDP must attach to a veth here");

    let listener = edge.enter(|| TcpListener::bind("198.18.10.2:25"))??;
    let server: SocketAddr = "198.18.10.2:25".parse()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || serve(listener, tx));

    let entry = BlockEntry { reason: reason::OPERATOR, ..Default::default() };
    filter.block_helo(hash_helo_arg(&key, b"blocked.example.com"), entry)?;
    filter.block_source("198.18.10.3".parse()?, entry)?;
    filter.maps.allow("198.18.10.4".parse()?, 32)?;
    filter.block_source("198.18.10.4".parse()?, entry)?; // allow-listed: must still pass
    let before = filter.maps.counters()?;

    let normal: IpAddr = "198.18.10.1".parse()?;
    // A listed greeting, in another spelling: the segment is dropped before the socket sees it.
    let peer = client.enter(move || greet(normal, server, "EHLO Blocked.Example.COM.\r\n"))??;
    assert_eq!(wait_for(&rx, peer), None, "a listed greeting reached the listener");

    // Another greeting goes through.
    let peer = client.enter(move || greet(normal, server, "EHLO mail.example.org\r\n"))??;
    assert_eq!(wait_for(&rx, peer).as_deref(), Some("EHLO mail.example.org\r\n"));

    // A listed source cannot even connect: its SYN is dropped.
    let blocked: IpAddr = "198.18.10.3".parse()?;
    let attempt = client.enter(move || greet(blocked, server, "EHLO mail.example.org\r\n"))?;
    assert!(attempt.is_err(), "a listed source completed a handshake");

    // An allow-listed source passes even though both its address and its greeting are listed.
    let allowed: IpAddr = "198.18.10.4".parse()?;
    let peer = client.enter(move || greet(allowed, server, "EHLO blocked.example.com\r\n"))??;
    assert_eq!(wait_for(&rx, peer).as_deref(), Some("EHLO blocked.example.com\r\n"));

    let seen = filter.maps.counters()?.since(&before);
    for (name, n) in seen.named().filter(|(_, n)| *n > 0) {
        println!("  {name:<24} {n}");
    }
    assert!(seen.get(counter::DROP_HELO) >= 1, "drop_helo did not count the dropped greeting");
    assert!(seen.get(counter::DROP_SOURCE) >= 1, "drop_source did not count the refused SYN");
    assert!(seen.get(counter::PASS_ALLOW_LISTED) >= 1, "pass_allow_listed did not count");
    assert!(seen.get(counter::PASS_NOT_LISTED) >= 1, "pass_not_listed did not count the clean greeting");
    let hits = filter.helo_entry(hash_helo_arg(&key, b"blocked.example.com")).unwrap().hits;
    assert!(hits >= 1);
    drop(filter);
    Ok(())
}
