//! The Postfix test backend on its own, before the agent stands in front of it: a self-contained
//! instance in an edge namespace, real clients in a client namespace, delivery checked in the
//! Maildir. Plain port with swaks, the PROXY v2 port with a hand-written client, and STARTTLS.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use helo_testbed::{
    netns::{link, Endpoint, Netns},
    postfix::{Postfix, PostfixConfig},
    privilege::require_root,
};

const USER: &str = "user@example.test";

/// A client namespace linked to an edge namespace running Postfix. Field order is drop order:
/// Postfix stops before the namespaces go.
struct Lab {
    postfix: Postfix,
    client: Netns,
    _edge: Netns,
    client_end: Endpoint,
    edge_end: Endpoint,
}

impl Lab {
    fn new(subnet: u8, tls: bool) -> Result<Self> {
        let client = Netns::new("c")?;
        let edge = Netns::new("e")?;
        let (client_end, edge_end) = link(&client, &edge, subnet)?;
        let started = Instant::now();
        let postfix = Postfix::start(
            &edge,
            PostfixConfig {
                listen_ip: edge_end.v4.clone(),
                proxy_port: 10025,
                plain_port: 10026,
                domains: vec!["example.test".into()],
                users: vec![USER.into(), "other@example.test".into()],
                myhostname: "mx.example.test".into(),
                tls,
                extra_main_cf: vec![],
                extra_master_cf: vec![],
            },
        )?;
        println!("Postfix (tls: {tls}) ready in {:?} at {}", started.elapsed(), postfix.dir().display());
        Ok(Self { postfix, client, _edge: edge, client_end, edge_end })
    }

    fn swaks(&self, port: u16, to: &str, body: &str, extra: &[&str]) -> Result<Output> {
        let out = self
            .client
            .command("swaks")
            .args(["--server", &self.edge_end.v4, "--port", &port.to_string()])
            .args(["--from", "a@client.example", "--to", to, "--helo", "mail.client.example"])
            .args(["--body", body, "--timeout", "10"])
            .args(extra)
            .output()
            .context("running swaks")?;
        Ok(out)
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The body of a delivered message: everything after the first empty line, without the final newline.
fn body_of(message: &str) -> &str {
    message.split_once("\n\n").map(|(_, b)| b).unwrap_or("").trim_end_matches('\n')
}

/// The first Received header, unfolded.
fn first_received(message: &str) -> String {
    let mut out = String::new();
    let mut lines = message.lines().skip_while(|l| !l.starts_with("Received:"));
    if let Some(first) = lines.next() {
        out.push_str(first);
        for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
            out.push(' ');
            out.push_str(l.trim());
        }
    }
    out
}

#[test]
fn swaks_delivers_to_the_plain_port() -> Result<()> {
    if !require_root("swaks_delivers_to_the_plain_port") {
        return Ok(());
    }
    let lab = Lab::new(41, false)?;
    let body = "helo-tests: plain port, swaks\nsecond line";
    let sent = Instant::now();
    let out = lab.swaks(10026, USER, body, &[])?;
    ensure!(out.status.success(), "swaks failed: {}", text(&out));
    let files = lab.postfix.wait_for_messages(USER, 1, Duration::from_secs(10))?;
    println!("delivered in {:?}", sent.elapsed());
    assert_eq!(files.len(), 1);
    let message = fs::read_to_string(&files[0])?;
    assert_eq!(body_of(&message), body, "{message}");
    let received = first_received(&message);
    assert!(received.contains(&format!("[{}]", lab.client_end.v4)), "{received}");
    assert!(lab.postfix.maildir_messages("other@example.test").is_empty());
    // Only configured addresses exist.
    let out = lab.swaks(10026, "nobody@example.test", "x", &[])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("550 5.1.1"), "{}", text(&out));
    // Nothing but the test domains is accepted, even from mynetworks it is never delivered outside.
    let log = lab.postfix.maillog();
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");

    // Drop stops the instance and its processes are gone.
    let pid = lab.postfix.master_pid().context("no master pid")?;
    let stopping = Instant::now();
    drop(lab);
    println!("stopped in {:?}", stopping.elapsed());
    // Gone, or a zombie until whoever inherited the daemonized master reaps it.
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        let rest = s[s.rfind(')')? + 1..].trim_start().to_string();
        rest.chars().next()
    });
    assert!(matches!(state, None | Some('Z' | 'X')), "master {pid} is still running ({state:?})");
    Ok(())
}

/// A PROXY protocol v2 header (PROXY command, TCP), encoded by hand, independently of the agent.
fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Reads one (possibly multiline) SMTP reply.
fn reply(r: &mut impl BufRead) -> Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed; got so far: {all:?}");
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

/// One SMTP session behind a PROXY v2 header; returns the transcript.
fn proxied_session(server: SocketAddr, claimed: SocketAddr, body: &str) -> Result<Vec<String>> {
    let stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut transcript = Vec::new();
    w.write_all(&proxy_v2_header(claimed, server))?;
    // Wait for the banner before EHLO: no pipelining after CONNECT.
    let expect = |r: &mut BufReader<TcpStream>, code: &str, transcript: &mut Vec<String>| -> Result<()> {
        let got = reply(r)?;
        transcript.push(got.clone());
        ensure!(got.starts_with(code), "expected {code}, got {got:?}; transcript {transcript:?}");
        Ok(())
    };
    expect(&mut r, "220 ", &mut transcript)?;
    for (cmd, code) in [
        ("EHLO mail.client.example\r\n", "250"),
        ("MAIL FROM:<a@client.example>\r\n", "250 "),
        (&format!("RCPT TO:<{USER}>\r\n"), "250 "),
        ("DATA\r\n", "354 "),
    ] {
        w.write_all(cmd.as_bytes())?;
        transcript.push(cmd.to_string());
        expect(&mut r, code, &mut transcript)?;
    }
    let message = format!("From: <a@client.example>\r\nTo: <{USER}>\r\nSubject: proxy port\r\n\r\n{}\r\n.\r\n", body.replace('\n', "\r\n"));
    w.write_all(message.as_bytes())?;
    expect(&mut r, "250 ", &mut transcript)?;
    w.write_all(b"QUIT\r\n")?;
    expect(&mut r, "221 ", &mut transcript)?;
    Ok(transcript)
}

#[test]
fn the_proxy_port_takes_the_client_address_from_a_proxy_v2_header() -> Result<()> {
    if !require_root("the_proxy_port_takes_the_client_address_from_a_proxy_v2_header") {
        return Ok(());
    }
    let lab = Lab::new(42, false)?;
    let server: SocketAddr = format!("{}:10025", lab.edge_end.v4).parse()?;
    let claimed: SocketAddr = "198.18.77.7:4242".parse()?;
    let body = "helo-tests: proxy port\nbehind a PROXY v2 header";
    let sent = Instant::now();
    let transcript = lab.client.enter(move || proxied_session(server, claimed, body))??;
    let files = lab.postfix.wait_for_messages(USER, 1, Duration::from_secs(10))?;
    println!("delivered in {:?}", sent.elapsed());
    let message = fs::read_to_string(&files[0])?;
    assert_eq!(body_of(&message), body, "{message}");
    let received = first_received(&message);
    assert!(received.contains("from mail.client.example (unknown [198.18.77.7])"), "{received}\n{transcript:?}");
    assert!(!received.contains(&lab.client_end.v4), "{received}");
    assert!(lab.postfix.maillog().contains("connect from unknown[198.18.77.7]"));

    // An IPv6 source in the header works too (inet_protocols = all).
    let claimed6: SocketAddr = "[2001:2:0:77::7]:4243".parse()?;
    lab.client.enter(move || proxied_session(server, claimed6, "v6"))??;
    let files = lab.postfix.wait_for_messages(USER, 2, Duration::from_secs(10))?;
    let both: Vec<String> = files.iter().map(fs::read_to_string).collect::<Result<_, _>>()?;
    assert!(
        both.iter().any(|m| first_received(m).contains("[IPv6:2001:2:0:77::7]")),
        "{:?}",
        both.iter().map(|m| first_received(m)).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn swaks_delivers_over_starttls() -> Result<()> {
    if !require_root("swaks_delivers_over_starttls") {
        return Ok(());
    }
    let lab = Lab::new(43, true)?;
    let body = "helo-tests: STARTTLS";
    let sent = Instant::now();
    let out = lab.swaks(10026, USER, body, &["--tls"])?;
    ensure!(out.status.success(), "swaks --tls failed: {}", text(&out));
    assert!(text(&out).contains("TLS started"), "{}", text(&out));
    let files = lab.postfix.wait_for_messages(USER, 1, Duration::from_secs(10))?;
    println!("delivered over TLS in {:?}", sent.elapsed());
    let message = fs::read_to_string(&files[0])?;
    assert_eq!(body_of(&message), body, "{message}");
    let received = first_received(&message);
    assert!(received.contains("(using TLS"), "{received}");
    Ok(())
}

#[test]
fn a_failed_start_or_a_panic_leaves_no_postfix_behind() -> Result<()> {
    if !require_root("a_failed_start_or_a_panic_leaves_no_postfix_behind") {
        return Ok(());
    }
    let edge = Netns::new("e")?;
    let client = Netns::new("c")?;
    let (_client_end, edge_end) = link(&client, &edge, 44)?;
    let masters_before = masters();

    // An address the namespace does not have: the master refuses to start, with a clear error.
    let started = Instant::now();
    let err = Postfix::start(&edge, PostfixConfig { listen_ip: "198.18.99.1".into(), ..Default::default() })
        .err()
        .context("Postfix started on an address the namespace does not have")?;
    println!("failed start took {:?}: {err:#}", started.elapsed());
    assert!(format!("{err:#}").contains("failed to start"), "{err:#}");
    assert_eq!(masters(), masters_before);

    // A panic while an instance runs: unwinding stops it.
    let listen_ip = edge_end.v4.clone();
    let edge_ref = &edge;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pf = Postfix::start(edge_ref, PostfixConfig { listen_ip, ..Default::default() }).unwrap();
        let pid = pf.master_pid().unwrap();
        assert_eq!(masters().len(), masters_before.len() + 1, "pid {pid}");
        panic!("deliberate panic with Postfix running");
    }));
    assert!(outcome.is_err());
    assert_eq!(masters(), masters_before, "a master survived the panic");
    Ok(())
}

/// Running (non-zombie) processes named `master`.
fn masters() -> Vec<i32> {
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains("(master)") && s.rfind(')').is_some_and(|i| !s[i + 1..].trim_start().starts_with(['Z', 'X'])))
        })
        .collect();
    out.sort();
    out
}
