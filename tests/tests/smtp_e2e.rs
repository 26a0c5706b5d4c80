//! SMTP as real MTAs see it: a real sending Postfix (and smtplib, swaks) reads every rejection and
//! bounces at once; the relay is transparent (long command lines, pipelined groups in order, the
//! MTA's own refusal); no session outlives its timeouts.

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use helo_common::maps::counter;
use helo_testbed::{
    lab::{one_source_many_names, reply, Lab, LabOptions, DOMAIN, USER},
    privilege::require_root,
    sender::{self, Route, BOUNCE_USER, SUBMIT_PORT},
};
use serde_json::Value;

/// A 245-octet address (RFC 5321 allows 64 + 1 + 255): with Postfix's ORCPT its RCPT line is over
/// 512 octets.
fn long_address() -> (String, String) {
    let domain = format!("{}.{}.{}.example.com", "d".repeat(60), "e".repeat(60), "f".repeat(46));
    let address = format!("{}@{domain}", "a".repeat(64));
    assert_eq!(address.len(), 245);
    (address, domain)
}

/// Submits a small message from [`BOUNCE_USER`] to `rcpt` through the sending Postfix.
fn submit(lab: &Lab, sender_ip: &str, rcpt: &str) -> Result<()> {
    let r = lab.py(
        "send",
        &[
            "--server",
            sender_ip,
            "--port",
            &SUBMIT_PORT.to_string(),
            "--helo",
            "submitter.sender-isp.net",
            "--mail-from",
            BOUNCE_USER,
            "--rcpt",
            rcpt,
            "--attach-bytes",
            "100",
        ],
    )?;
    anyhow::ensure!(r["ok"] == true, "submission to the sending Postfix failed: {r}");
    Ok(())
}

#[test]
fn a_sending_postfix_reads_every_rejection_and_bounces_at_once() -> Result<()> {
    if !require_root("a_sending_postfix_reads_every_rejection_and_bounces_at_once") {
        return Ok(());
    }
    let (long_rcpt, long_domain) = long_address();
    let lab =
        Lab::new(LabOptions { backend_domains: vec![long_domain.clone()], backend_users: vec![long_rcpt.clone()], ..Default::default() })?;
    let edge_ip: std::net::Ipv4Addr = lab.edge_end.v4.parse()?;
    let clean_helo = "mta.sender-isp.net";
    let routes = [
        Route::new("bogus-name.test", "rad.internal"),
        Route::new("my-ip.test", &format!("[{edge_ip}]")),
        Route::new("my-domain.test", DOMAIN),
        Route::new(DOMAIN, clean_helo),
        Route::new(&long_domain, clean_helo),
        Route::new("shop.example.net", "shop.example.net"),
    ];
    let sending = sender::start(&lab.client, &lab.client_end.v4, edge_ip, &routes)?;
    let cases = [
        ("bogus-name.test", "550 5.7.1 Bogus HELO".to_owned()),
        ("my-ip.test", format!("550 5.7.1 Bogus HELO ({edge_ip})")),
        ("my-domain.test", "550 5.7.1 Bogus HELO matches RCPT".to_owned()),
    ];
    let check = |rcpt: &str, want: &str| -> Result<()> {
        let outcome = sending.wait_for_outcome(rcpt, Duration::from_secs(30))?;
        assert_eq!(outcome.status, "bounced", "{rcpt} was not bounced at once: {}", outcome.line);
        assert!(
            outcome.line.contains(&format!("refused to talk to me: {want}")),
            "the sender's log does not carry the exact reply {want:?}: {}",
            outcome.line
        );
        Ok(())
    };

    // First seen: the agent classifies each greeting.
    for (domain, want) in &cases {
        submit(&lab, &lab.client_end.v4, &format!("first@{domain}"))?;
        check(&format!("first@{domain}"), want)?;
    }
    let rejected = lab.agent.log_text().matches(" scope=").count();
    assert_eq!(rejected, 3, "{}", lab.agent.log_text());

    // Repeats: the kernel drops each EHLO; the agent answers it, and the HELO fallback, anyway.
    let before = lab.counters()?;
    for (domain, want) in &cases {
        submit(&lab, &lab.client_end.v4, &format!("again@{domain}"))?;
        check(&format!("again@{domain}"), want)?;
    }
    let dropped = lab.counters()?.since(&before).get(counter::DROP_HELO);
    assert!(dropped >= 3, "the kernel dropped {dropped} greetings, not the 3 repeats");
    assert_eq!(lab.agent.log_text().matches(" scope=").count(), rejected, "a repeat reached the classifier");

    // The bounces reach the sender's own mailbox, reason included.
    let bounces = sending.wait_for_messages(BOUNCE_USER, 6, Duration::from_secs(30))?;
    let all: String = bounces.iter().map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned()).collect();
    for (_, want) in &cases {
        assert!(all.contains(want.as_str()), "no bounce says {want:?}");
    }

    // Clean mail goes through, the 245-octet recipient included (its RCPT line is over 512 octets).
    submit(&lab, &lab.client_end.v4, USER)?;
    submit(&lab, &lab.client_end.v4, &long_rcpt)?;
    for rcpt in [USER, long_rcpt.as_str()] {
        let outcome = sending.wait_for_outcome(rcpt, Duration::from_secs(30))?;
        assert_eq!(outcome.status, "sent", "{}", outcome.line);
    }
    lab.postfix().wait_for_messages(&long_rcpt, 1, Duration::from_secs(20))?;
    lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    assert!(sending.maillog().contains("ORCPT="), "the sender did not send ORCPT: the long line was not exercised");

    // The RCPT-time rejection: bounced with the agent's words, in reply to RCPT TO.
    submit(&lab, &lab.client_end.v4, "someone@shop.example.net")?;
    let outcome = sending.wait_for_outcome("someone@shop.example.net", Duration::from_secs(30))?;
    assert_eq!(outcome.status, "bounced", "{}", outcome.line);
    assert!(outcome.line.contains("said: 550 5.7.1 Bogus HELO matches RCPT (in reply to RCPT TO command)"), "{}", outcome.line);
    Ok(())
}

#[test]
fn smtplib_and_swaks_read_the_rejection_first_seen_and_kernel_dropped() -> Result<()> {
    if !require_root("smtplib_and_swaks_read_the_rejection_first_seen_and_kernel_dropped") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    for round in ["first seen", "kernel dropped"] {
        let r = lab.py("send", &["--helo", "rad.internal", "--timeout", "15"])?;
        let error = r["error"].as_str().unwrap_or_default();
        assert!(error.contains("550") && error.contains("Bogus HELO"), "{round}: smtplib raised no 550 Bogus HELO: {r}");
        let out = lab
            .client
            .command("swaks")
            .args(["--server", &lab.edge_end.v4, "--helo", "rad.internal", "--to", USER, "--timeout", "15"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("<** 550 5.7.1 Bogus HELO"), "{round}: swaks shows no rejection:\n{text}");
    }
    assert_eq!(lab.agent.log_text().matches(" scope=").count(), 1, "{}", lab.agent.log_text());
    Ok(())
}

/// The reply codes of a pipelined group: MAIL, RCPT bob, a 534-octet RCPT carol, DATA.
fn pipelined_codes(lab: &Lab, port: u16) -> Result<Value> {
    let carol_head = "RCPT TO:<carol@example.com> ORCPT=rfc822;";
    let carol = format!("{carol_head}{}\\r\\n", "x".repeat(534 - carol_head.len() - 2));
    let port = port.to_string();
    lab.py(
        "pipeline",
        &[
            "--port",
            &port,
            "--line",
            "EHLO mta.sender-isp.net\\r\\n",
            "--line",
            "MAIL FROM:<a@sender-isp.net>\\r\\n",
            "--line",
            "RCPT TO:<bob@example.com>\\r\\n",
            "--line",
            &carol,
            "--line",
            "DATA\\r\\n",
        ],
    )
}

fn codes(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|r| r.as_str().unwrap_or("none").get(..3).unwrap_or("?").to_owned()).collect()
}

#[test]
fn a_pipelined_group_with_a_long_rcpt_gets_the_mtas_replies_in_order() -> Result<()> {
    if !require_root("a_pipelined_group_with_a_long_rcpt_gets_the_mtas_replies_in_order") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { backend_users: vec!["bob@example.com".into()], ..Default::default() })?;
    // Straight to Postfix (its plain port, from the client namespace), then through helo.
    let direct = pipelined_codes(&lab, 10026)?;
    let through = pipelined_codes(&lab, 25)?;
    assert_eq!(codes(&direct["replies"]), ["250", "250", "550", "354"], "Postfix itself: {direct}");
    assert_eq!(codes(&through["replies"]), codes(&direct["replies"]), "through helo: {through}\ndirect: {direct}");
    let carol_reply = through["replies"][2].as_str().unwrap_or_default();
    assert!(carol_reply.contains("carol@example.com") && !carol_reply.contains("Line too long"), "{carol_reply}");
    assert_eq!(codes(&through["end"]), ["250", "221"]);
    lab.postfix().wait_for_messages("bob@example.com", 2, Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn the_mtas_refusal_at_connect_reaches_the_client_unchanged() -> Result<()> {
    if !require_root("the_mtas_refusal_at_connect_reaches_the_client_unchanged") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions {
        // The client namespace's address (the lab's link is 198.18.30.0/24, client .1): Postfix
        // sees it in the PROXY header. Its own readiness probe comes from .2 and is let in.
        backend_main_cf: vec![
            "smtpd_delay_reject = no".into(),
            "smtpd_client_restrictions = check_client_access inline:{ {198.18.30.1=REJECT} }".into(),
        ],
        ..Default::default()
    })?;
    let r = lab.dialog(&["EHLO mta.sender-isp.net\r\n", "HELO mta.sender-isp.net\r\n", "QUIT\r\n"])?;
    let refusal = reply(&r, 0);
    assert!(refusal.starts_with("554 5.7.1 ") && refusal.contains("Client host rejected"), "{r}");
    assert_eq!(reply(&r, 1), refusal, "the HELO fallback reads the MTA's refusal again");
    assert_eq!(reply(&r, 2), "221 2.0.0 Bye\r\n");
    let metrics = lab.scrape()?;
    assert!(metrics.contains("helo_backend_refusals_total 1"), "{metrics}");
    assert!(metrics.contains("helo_backend_errors_total 0"), "{metrics}");
    assert!(lab.agent.log_text().contains("the MTA refused the client"));
    Ok(())
}

/// Short timeouts for the hanging-session cases.
fn quick_timeouts(lab_dir: &std::path::Path) -> Result<String> {
    let path = lab_dir.join("quick.toml");
    std::fs::write(&path, "[timeouts]\ncommand-s = 3\ndata-s = 3\nreply-s = 5\nwrite-s = 3\nlinger-s = 2\n")?;
    Ok(path.display().to_string())
}

/// Sockets the agent process holds that are not listening.
fn agent_sockets(lab: &Lab) -> Result<usize> {
    let out = lab.edge.command("ss").args(["-tnpH"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| helo_testbed::agent::ss_line_is_agent(l)).count())
}

#[test]
fn no_session_outlives_its_timeouts_and_clean_mail_still_flows() -> Result<()> {
    if !require_root("no_session_outlives_its_timeouts_and_clean_mail_still_flows") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = quick_timeouts(dir.path())?;
    let lab = Lab::new(LabOptions { agent_args: vec!["--config".into(), config], ..Default::default() })?;

    // A client that stalls in the middle of its message, socket open.
    let stalled_in_data = {
        let client_ns = lab.client.name.clone();
        let server = lab.edge_end.v4.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &client_ns, "python3", helo_testbed::lab::CLIENT_SCRIPT, "stall", "--server", &server])
                .args(["--line", "EHLO mta.sender-isp.net\\r\\n", "--line", "MAIL FROM:<a@sender-isp.net>\\r\\n"])
                .args(["--line", &format!("RCPT TO:<{USER}>\\r\\n"), "--line", "DATA\\r\\n", "--partial", "Subject: half"])
                .args(["--timeout", "20"])
                .output()
        })
    };
    // One that never sends its greeting but keeps sending NOOP.
    let noops: Vec<&str> = std::iter::repeat_n("NOOP\r\n", 25).collect();
    let r = lab.dialog(&noops)?;
    let replies: Vec<String> = (0..25).map(|i| reply(&r, i)).collect();
    assert!(replies[..20].iter().all(|r| r == "250 2.0.0 OK\r\n"), "{r}");
    assert_eq!(replies[20], "421 4.7.0 Too many commands before HELO/EHLO\r\n", "{r}");
    assert_eq!(r["closed"], true);

    // Clean mail meanwhile.
    let sent = lab.py("send", &["--attach-bytes", "1000"])?;
    assert_eq!(sent["ok"], true, "{sent}");

    let out = stalled_in_data.join().unwrap()?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    assert!(reply(&v, 3).starts_with("354"), "{v}");
    let after = v["closed_after"].as_f64().context("the agent never let go of a client stalled in DATA")?;
    assert!(after < 3.0 + 3.0, "a client stalled in DATA was held {after:.1} s (data-s = 3)");

    // A client that vanishes without a FIN after its greeting: from then on nothing it sends
    // reaches the edge (dropped on its way out), and its socket stays open.
    let vanishing = {
        let client_ns = lab.client.name.clone();
        let server = lab.edge_end.v4.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &client_ns, "python3", helo_testbed::lab::CLIENT_SCRIPT, "stall", "--server", &server])
                .args(["--line", "EHLO mta.sender-isp.net\\r\\n", "--timeout", "20"])
                .output()
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let mut nft = lab.client.command("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn()?;
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(b"table inet vanish {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 25 drop\n }\n}\n")?;
    assert!(nft.wait()?.success(), "nft failed");
    let started = Instant::now();
    // Nothing left: both sockets of every session are gone.
    while agent_sockets(&lab)? > 0 {
        assert!(started.elapsed() < Duration::from_secs(3 + 5), "the agent still holds sockets 5 s past command-s = 3");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = vanishing.join().unwrap()?;
    let v: Value = serde_json::from_slice(&gone.stdout)?;
    assert!(v["replies"][0].as_str().unwrap_or("").starts_with("250"), "{v}");
    lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn at_shutdown_an_idle_client_is_told_421() -> Result<()> {
    if !require_root("at_shutdown_an_idle_client_is_told_421") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    let server: SocketAddr = format!("{}:25", lab.edge_end.v4).parse()?;
    let waiting = lab.client.spawn(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut all = String::new();
        s.read_to_string(&mut all)?;
        Ok(all)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let status = lab.agent.stop()?;
    assert!(status.success(), "{status}");
    let read = waiting.join().unwrap()?;
    assert!(read.starts_with("220 "), "{read}");
    assert!(read.ends_with("421 4.3.2 Service shutting down, try later\r\n"), "{read:?}");
    Ok(())
}

#[test]
fn a_bot_that_keeps_coming_back_is_told_why_then_dropped_at_syn() -> Result<()> {
    if !require_root("a_bot_that_keeps_coming_back_is_told_why_then_dropped_at_syn") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ladder.toml");
    std::fs::write(&config, "[ladder]\nstrikes = 3\nwindow-s = 60\nanswers = 2\nttl-s = 600\n")?;
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--config".into(), config.display().to_string()],
        with_postfix: false,
        ..Default::default()
    })?;
    let client = lab.client_end.v4.clone();
    // Strike 1: refused by the agent (first seen); strikes 2 and 3: dropped by the kernel, which
    // lists the source itself at the third.
    for _ in 0..3 {
        let r = lab.dialog(&["EHLO rad.internal\r\n", "QUIT\r\n"])?;
        assert_eq!(reply(&r, 0), "550 5.7.1 Bogus HELO\r\n", "{r}");
    }
    // The agent learns the kernel's listing: store, `blocklist list`, with its origin.
    let started = Instant::now();
    let text = loop {
        let out = lab.blocklist(&["get", &client])?;
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the ladder listing never reached the store");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("ladder") && text.contains("offender_ladder"), "{text}");
    // Its next 2 connections are told why, as RFC 5321 3.1 has it: a 554 banner, 503 until QUIT.
    for _ in 0..2 {
        let r = lab.dialog(&["EHLO rad.internal\r\n", "QUIT\r\n"])?;
        assert_eq!(r["banner"], "554 5.7.1 Bogus HELO\r\n", "{r}");
        assert_eq!(reply(&r, 0), "503 5.7.1 Bogus HELO\r\n", "{r}");
        assert_eq!(reply(&r, 1), "221 2.0.0 Bye\r\n", "{r}");
    }
    // Then its SYNs are dropped: no handshake at all.
    let server: SocketAddr = format!("{}:25", lab.edge_end.v4).parse()?;
    let refused = lab.client.enter(move || TcpStream::connect_timeout(&server, Duration::from_secs(2)).is_err())?;
    assert!(refused, "a listed source past its answers still got a handshake");
    let counters = lab.counters()?;
    assert_eq!(counters.get(counter::PASS_SOURCE_ANSWERED), 2);
    assert!(counters.get(counter::DROP_SOURCE) >= 1);
    Ok(())
}

/// Sockets in the states a half-finished close leaves behind, in `ns`.
fn lingering_sockets(ns: &helo_testbed::netns::Netns) -> Result<usize> {
    let out = ns.command("ss").args(["-tanH"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter(|l| ["FIN-WAIT-1", "FIN-WAIT-2", "LAST-ACK", "CLOSE-WAIT", "CLOSING"].iter().any(|s| l.starts_with(s))).count())
}

#[test]
fn kernel_dropped_sessions_leave_no_socket_retransmitting_behind() -> Result<()> {
    if !require_root("kernel_dropped_sessions_leave_no_socket_retransmitting_behind") {
        return Ok(());
    }
    // The ladder would list this one source after 10 refusals: here every session must reach the
    // agent and have its greeting dropped in the kernel.
    let dir = tempfile::tempdir()?;
    let lab = Lab::new(LabOptions { agent_args: one_source_many_names(dir.path())?, with_postfix: false, ..Default::default() })?;
    let first = lab.py("bots", &["--count", "1", "--helo", "rad.internal"])?;
    assert_eq!(first["read_twice"], 1, "{first}");
    let before = lab.counters()?;
    let sessions = 300;
    let r = lab.py("bots", &["--count", &sessions.to_string(), "--threads", "20", "--helo", "rad.internal", "--timeout", "10"])?;
    assert_eq!(r["read_twice"], sessions, "every kernel-dropped sender reads the refusal for EHLO and HELO: {r}");
    let dropped = lab.counters()?.since(&before).get(counter::DROP_HELO);
    assert!(dropped >= sessions as u64, "{dropped} greetings dropped in the kernel for {sessions} sessions");
    let started = Instant::now();
    loop {
        let (client, edge) = (lingering_sockets(&lab.client)?, lingering_sockets(&lab.edge)?);
        if client == 0 && edge == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after 60 s: {client} client and {edge} edge sockets still closing (FIN-WAIT, LAST-ACK, CLOSE-WAIT, CLOSING)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("{sessions} kernel-dropped sessions: socket tables back to baseline {:?} after the last one", started.elapsed());
    assert_eq!(agent_sockets(&lab)?, 0);
    Ok(())
}

#[test]
fn a_listed_name_is_refused_however_its_greeting_is_framed() -> Result<()> {
    if !require_root("a_listed_name_is_refused_however_its_greeting_is_framed") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    let out = lab.blocklist(&["add", "listed.example.net", "--reply", "550 5.7.1 Bogus HELO (listed by the operator)"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = "550 5.7.1 Bogus HELO (listed by the operator)\r\n";
    // A NOOP first, in the same segment: the kernel judges only the first payload, so the
    // greeting reaches the agent, which refuses it from its blocklist.
    let r = lab.dialog(&["NOOP\r\nEHLO listed.example.net\r\n", "QUIT\r\n"])?;
    let first_read = r["replies"][0].as_str().unwrap_or_default();
    assert!(first_read.starts_with("250 2.0.0 OK\r\n"), "{r}");
    let second = if first_read.len() > "250 2.0.0 OK\r\n".len() { first_read["250 2.0.0 OK\r\n".len()..].to_owned() } else { reply(&r, 1) };
    assert_eq!(second, want, "{r}");
    // The greeting split over two segments.
    let r = lab.py("dialog", &["--line", "EH", "--line", "LO listed.example.net\r\n", "--line", "QUIT\r\n", "--timeout", "1"])?;
    assert_eq!(reply(&r, 1), want, "{r}");
    // A second greeting after a clean one, in the relay.
    let r = lab.dialog(&["EHLO mta.sender-isp.net\r\n", "EHLO listed.example.net\r\n", "QUIT\r\n"])?;
    assert!(reply(&r, 0).starts_with("250"), "{r}");
    assert_eq!(reply(&r, 1), want, "{r}");
    assert_eq!(lab.postfix().maildir_messages(USER).len(), 0);
    Ok(())
}

#[test]
fn the_reply_footer_ends_every_rejection_and_follows_a_reload() -> Result<()> {
    if !require_root("the_reply_footer_ends_every_rejection_and_follows_a_reload") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("helo.toml");
    std::fs::write(&conf, "reply-footer = \"Why: https://isp.example/bogus-helo\"\n")?;
    let lab = Lab::new(LabOptions { agent_args: vec!["--config".into(), conf.display().to_string()], ..Default::default() })?;
    let footed = "550-5.7.1 Bogus HELO\r\n550 5.7.1 Why: https://isp.example/bogus-helo\r\n";
    // First seen, and its HELO fallback.
    let r = lab.dialog(&["EHLO localhost\r\n", "HELO localhost\r\n", "QUIT\r\n"])?;
    assert_eq!((reply(&r, 0).as_str(), reply(&r, 1).as_str()), (footed, footed), "{r}");
    // Dropped in the kernel, answered by the agent: the footer too.
    let r = lab.dialog(&["EHLO localhost\r\n"])?;
    assert_eq!(reply(&r, 0), footed, "{r}");
    // Real clients read the whole multiline reply.
    let r = lab.py("send", &["--helo", "rad.internal", "--timeout", "15"])?;
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("550") && error.contains("Bogus HELO") && error.contains("isp.example/bogus-helo"), "smtplib: {r}");
    let out = lab
        .client
        .command("swaks")
        .args(["--server", &lab.edge_end.v4, "--helo", "rad2.internal", "--to", USER, "--timeout", "15"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("<** 550-5.7.1 Bogus HELO") && text.contains("<** 550 5.7.1 Why: https://isp.example/bogus-helo"),
        "swaks:\n{text}"
    );
    // A sending Postfix bounces at once and logs the reason with the footer.
    let edge_ip: std::net::Ipv4Addr = lab.edge_end.v4.parse()?;
    let sending = sender::start(&lab.client, &lab.client_end.v4, edge_ip, &[Route::new("bogus-name.test", "rad3.internal")])?;
    submit(&lab, &lab.client_end.v4, "someone@bogus-name.test")?;
    let outcome = sending.wait_for_outcome("someone@bogus-name.test", Duration::from_secs(30))?;
    assert_eq!(outcome.status, "bounced", "{}", outcome.line);
    assert!(outcome.line.contains("Bogus HELO") && outcome.line.contains("https://isp.example/bogus-helo"), "{}", outcome.line);
    println!("the sending Postfix logged: {}", outcome.line);
    // A reload changes it, and takes it away.
    let reload = |footer: &str| -> Result<()> {
        std::fs::write(&conf, footer)?;
        let out = lab.cli(&["reload", "--admin-socket", lab.admin_socket().to_str().unwrap()])?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    reload("reply-footer = \"See https://isp.example/v2\\\\nor call us\"\n")?;
    let r = lab.dialog(&["EHLO bogus-one\r\n"])?;
    assert_eq!(reply(&r, 0), "550-5.7.1 Bogus HELO\r\n550-5.7.1 See https://isp.example/v2\r\n550 5.7.1 or call us\r\n", "{r}");
    reload("")?;
    let r = lab.dialog(&["EHLO bogus-two\r\n"])?;
    assert_eq!(reply(&r, 0), "550 5.7.1 Bogus HELO\r\n", "{r}");
    Ok(())
}
