//! The agent end to end: a client namespace, an edge namespace running `helo` with XDP attached
//! natively to its veth, and a real Postfix behind it (PROXY v2 port), started by the test.
//! Clients are real: Python's smtplib and raw sockets, swaks, Postfix's smtp-source.

use std::{
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use helo_common::maps::counter;
use helo_testbed::{
    lab::{as_wire, backend_config, one_source_many_names, reply, Lab, LabOptions, CLIENT_SCRIPT, DOMAIN, HOSTNAME, USER},
    postfix::Postfix,
    privilege::require_root,
};
use serde_json::Value;

#[test]
fn clean_mail_is_delivered_byte_for_byte_with_the_client_address() -> Result<()> {
    if !require_root("clean_mail_is_delivered_byte_for_byte_with_the_client_address") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    let sent_path: PathBuf = lab.dir.path().join("sent.eml");
    let r = lab.py("send", &["--out", sent_path.to_str().unwrap(), "--attach-bytes", "100000"])?;
    assert_eq!(r["ok"], true, "{r}\n{}", lab.agent.log_text());
    let files = lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    let delivered = std::fs::read(&files[0])?;
    let sent = std::fs::read(&sent_path)?;
    let wire = as_wire(&delivered);
    assert!(
        wire.ends_with(&sent),
        "the delivered message does not end with the bytes sent ({} sent, {} delivered)",
        sent.len(),
        wire.len()
    );
    let text = String::from_utf8_lossy(&delivered);
    let received = text.lines().find(|l| l.starts_with("Received:")).unwrap_or_default();
    assert!(text.contains(&format!("[{}]", lab.client_end.v4)), "the Received header does not show the client's address: {received}");
    Ok(())
}

#[test]
fn each_documented_rejection_gets_its_exact_reply_again_for_the_helo_fallback_and_a_close() -> Result<()> {
    if !require_root("each_documented_rejection_gets_its_exact_reply_again_for_the_helo_fallback_and_a_close") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    let my_ip = format!("[{}]", lab.edge_end.v4);
    let cases = [
        ("203.0.113.9".to_string(), "550 5.7.1 Bogus HELO\r\n".to_string()),
        ("rad.internal".to_string(), "550 5.7.1 Bogus HELO\r\n".to_string()),
        (my_ip.clone(), format!("550 5.7.1 Bogus HELO ({})\r\n", lab.edge_end.v4)),
        (DOMAIN.to_string(), "550 5.7.1 Bogus HELO matches RCPT\r\n".to_string()),
    ];
    for (name, want) in &cases {
        // What Postfix, swaks and smtplib do: EHLO, then HELO after the 5xx (RFC 5321 4.1.4), then QUIT.
        let ehlo = format!("EHLO {name}\r\n");
        let helo = format!("HELO {name}\r\n");
        let r = lab.dialog(&[&ehlo, &helo, "QUIT\r\n"])?;
        assert_eq!(r["banner"], format!("220 {HOSTNAME} ESMTP\r\n"));
        assert_eq!(reply(&r, 0), *want, "for {ehlo:?}");
        assert_eq!(reply(&r, 1), *want, "the HELO fallback after {ehlo:?} must read the same reply");
        assert_eq!(reply(&r, 2), "221 2.0.0 Bye\r\n");
        assert_eq!(r["closed"], true, "the agent did not close after QUIT");
    }
    // A client that goes silent after the rejection is let go after the linger (10 s).
    let r = lab.py("dialog", &["--line", "EHLO rad.internal\r\n", "--close-wait", "15"])?;
    assert_eq!(reply(&r, 0), "550 5.7.1 Bogus HELO\r\n");
    assert_eq!(r["closed"], true);
    // The RCPT-time form: a greeting that is fine until the client sends to the domain it claims.
    let r = lab.dialog(&[
        "EHLO shop.example.net\r\n",
        "MAIL FROM:<a@shop.example.net>\r\n",
        "RCPT TO:<someone@shop.example.net>\r\n",
        "QUIT\r\n",
    ])?;
    assert!(reply(&r, 0).starts_with("250"), "{r}");
    assert_eq!(reply(&r, 2), "550 5.7.1 Bogus HELO matches RCPT\r\n", "{r}");
    assert_eq!(reply(&r, 3), "221 2.0.0 Bye\r\n", "{r}");
    assert_eq!(r["closed"], true);
    Ok(())
}

#[test]
fn a_repeated_bogus_greeting_is_dropped_in_the_kernel_and_still_answered() -> Result<()> {
    if !require_root("a_repeated_bogus_greeting_is_dropped_in_the_kernel_and_still_answered") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions::default())?;
    let first = lab.dialog(&["EHLO localhost\r\n"])?;
    assert_eq!(reply(&first, 0), "550 5.7.1 Bogus HELO\r\n");
    let rejected_by_agent = lab.agent.log_text().matches("rule=bogus_helo scope=").count();
    let before = lab.counters()?;

    let started = Instant::now();
    let second =
        lab.py("dialog", &["--line", "EHLO LOCALHOST.\r\n", "--line", "HELO LOCALHOST.\r\n", "--timeout", "5", "--close-wait", "3"])?;
    // The kernel dropped the EHLO, and so the HELO behind it: the agent writes the reply twice,
    // one for each, and closes. (Both copies may arrive in one read.)
    let read: String = second["replies"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(read, "550 5.7.1 Bogus HELO\r\n550 5.7.1 Bogus HELO\r\n", "the kernel-dropped sender must still read why, twice");
    assert_eq!(second["closed"], true);
    assert!(started.elapsed() < Duration::from_secs(5));
    let after = lab.counters()?.since(&before);
    assert!(after.get(counter::DROP_HELO) >= 1, "the kernel did not drop the second greeting");
    assert_eq!(lab.agent.log_text().matches("rule=bogus_helo scope=").count(), rejected_by_agent, "the second greeting reached the agent");
    let port = second["local_port"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while lab.agent_holds(port)? {
        assert!(Instant::now() < deadline, "the agent still holds the dropped flow's socket after 1 s");
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn silent_kernel_drops_send_nothing() -> Result<()> {
    if !require_root("silent_kernel_drops_send_nothing") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--kernel-drop-reply".into(), "silent".into()],
        with_postfix: false,
        ..Default::default()
    })?;
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let second = lab.py("dialog", &["--line", "EHLO localhost\r\n", "--timeout", "3"])?;
    let got = &second["replies"][0];
    assert!(got.is_null() || got == "TIMEOUT", "a silent drop wrote something: {second}");
    Ok(())
}

#[test]
fn starttls_passes_through_to_postfix() -> Result<()> {
    if !require_root("starttls_passes_through_to_postfix") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { tls: true, ..Default::default() })?;
    let out = lab
        .client
        .command("swaks")
        .args(["--server", &lab.edge_end.v4, "--port", "25", "--tls"])
        .args(["--helo", "client.example.org", "--from", "a@client.example.org", "--to", USER])
        .args(["--body", "over TLS", "--timeout", "20"])
        .output()?;
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks --tls failed:\n{transcript}\n{}", lab.agent.log_text());
    let files = lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    let text = std::fs::read_to_string(&files[0])?;
    assert!(text.contains("over TLS"));
    assert!(text.contains("TLS"), "Postfix did not record TLS in the Received header");
    Ok(())
}

#[test]
fn protocol_errors_get_the_right_codes() -> Result<()> {
    if !require_root("protocol_errors_get_the_right_codes") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions {
        agent_args: vec!["--command-timeout-s".into(), "2".into(), "--pregreet-ms".into(), "300".into()],
        ..Default::default()
    })?;
    // Commands before the greeting.
    let r = lab.dialog(&["MAIL FROM:<a@b.example>\r\n", "NOOP\r\n", "RSET\r\n", "QUIT\r\n"])?;
    assert_eq!(reply(&r, 0), "503 5.5.1 Send HELO/EHLO first\r\n");
    assert!(reply(&r, 1).starts_with("250"));
    assert!(reply(&r, 2).starts_with("250"));
    assert!(reply(&r, 3).starts_with("221"));
    // A line over 512 bytes (CRLF included), then a good one.
    let long = format!("EHLO {}\r\n", "a".repeat(510));
    let r = lab.dialog(&[&long, "QUIT\r\n"])?;
    assert_eq!(reply(&r, 0), "500 5.5.2 Line too long\r\n");
    assert!(reply(&r, 1).starts_with("221"));
    // A slow client is timed out with a 421.
    let r = lab.py("dialog", &["--line", "NOOP\r\n", "--line", "NOOP\r\n", "--slow", "3", "--timeout", "5"])?;
    assert!(reply(&r, 0).starts_with("421 4.4.2") || r["banner"].as_str().unwrap_or("").contains("421 4.4.2"), "{r}");
    // Pregreet: talking before the banner is recorded, and the session still works.
    let r = lab.py("dialog", &["--pregreet", "--line", "EHLO client.example.org\r\n", "--line", "QUIT\r\n"])?;
    assert!(r["banner"].as_str().unwrap_or("").starts_with("220"), "{r}");
    assert!(lab.agent.log_text().contains("pregreet"), "the pregreet was not recorded");
    // Too many errors.
    let bad: Vec<&str> = std::iter::repeat_n("FOO\r\n", 11).collect();
    let r = lab.dialog(&bad)?;
    assert!(r["replies"].as_array().unwrap().iter().any(|v| v.as_str().unwrap_or("").contains("421 4.7.0 Too many errors")), "{r}");
    assert_eq!(r["closed"], true);
    Ok(())
}

#[test]
fn a_missing_backend_gets_421_its_outage_is_logged_once_and_nothing_crashes() -> Result<()> {
    if !require_root("a_missing_backend_gets_421_its_outage_is_logged_once_and_nothing_crashes") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    for _ in 0..3 {
        let r = lab.dialog(&["EHLO client.example.org\r\n"])?;
        assert_eq!(reply(&r, 0), "421 4.3.2 Service not available, try later\r\n");
        assert_eq!(r["closed"], true);
    }
    // The outage is one warning (each session still has its own line at info), and a gauge.
    let log = lab.agent.log_text();
    assert_eq!(log.matches("backend-down").count(), 1, "{log}");
    assert_eq!(log.matches("result=failed").count(), 3, "{log}");
    assert!(lab.scrape()?.contains("helo_backend_up 0"), "the gauge does not say the MTA is down");

    // The MTA comes up: the next hand-off reaches it, and that is logged once too.
    let postfix = Postfix::start(&lab.edge, backend_config(&lab.edge_end))?;
    for _ in 0..2 {
        let r = lab.dialog(&["EHLO client.example.org\r\n", "QUIT\r\n"])?;
        assert!(reply(&r, 0).starts_with("250"), "{r}");
    }
    let log = lab.agent.log_text();
    assert_eq!(log.matches("backend-up").count(), 1, "{log}");
    assert!(log.contains("failed_hand_offs=3"), "{log}");
    assert!(lab.scrape()?.contains("helo_backend_up 1"), "the gauge does not say the MTA is back");
    drop(postfix);
    let status = lab.agent.stop()?;
    assert!(status.success(), "the agent did not exit cleanly on SIGTERM: {status}\n{}", lab.agent.log_text());
    Ok(())
}

#[test]
fn smtp_source_delivers_1000_messages_over_50_sessions_exactly_once() -> Result<()> {
    if !require_root("smtp_source_delivers_1000_messages_over_50_sessions_exactly_once") {
        return Ok(());
    }
    // smtp-source reconnects the moment a session ends, which can beat the agent's release of
    // that session's per-source slot: give the one source room above its 50 sessions.
    let lab = Lab::new(LabOptions { agent_args: vec!["--max-sessions-per-source".into(), "100".into()], ..Default::default() })?;
    let started = Instant::now();
    let out = lab
        .client
        .command("/usr/sbin/smtp-source")
        .args(["-s", "50", "-m", "1000", "-M", "client.example.org", "-f", "load@client.example.org"])
        .args(["-t", USER, "-c"])
        .arg(format!("{}:25", lab.edge_end.v4))
        .output()?;
    assert!(out.status.success(), "smtp-source failed: {}", String::from_utf8_lossy(&out.stderr));
    let files = lab.postfix().wait_for_messages(USER, 1000, Duration::from_secs(120))?;
    thread::sleep(Duration::from_secs(2));
    let files_later = lab.postfix().maildir_messages(USER);
    assert_eq!(files.len(), 1000);
    assert_eq!(files_later.len(), 1000, "more than 1000 messages arrived: duplicates");
    println!("1000 messages over 50 sessions delivered in {:?}", started.elapsed());
    Ok(())
}

#[test]
fn two_hundred_concurrent_bogus_sessions_are_rejected_while_clean_mail_flows() -> Result<()> {
    if !require_root("two_hundred_concurrent_bogus_sessions_are_rejected_while_clean_mail_flows") {
        return Ok(());
    }
    // One source sends all 200 bogus sessions and the clean one: with the offender ladder on, it
    // would (rightly) be listed after 10 of them. Here the point is the agent under concurrency.
    let dir = tempfile::tempdir()?;
    let lab = Lab::new(LabOptions { agent_args: one_source_many_names(dir.path())?, ..Default::default() })?;
    let client_ns = lab.client.name.clone();
    let server = lab.edge_end.v4.clone();
    let flood = thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &client_ns, "python3", CLIENT_SCRIPT, "flood", "--server", &server])
            .args(["--count", "200", "--timeout", "20"])
            .output()
    });
    // A clean session meanwhile.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = lab.py("send", &["--attach-bytes", "1000"])?;
    assert_eq!(r["ok"], true, "the clean session failed during the flood: {r}");
    let clean_took = started.elapsed();
    let out = flood.join().unwrap()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let replies = v["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 200);
    let rejected = replies.iter().filter(|r| r.as_str() == Some("550 5.7.1 Bogus HELO\r\n")).count();
    assert_eq!(rejected, 200, "not every bogus session was rejected: {replies:?}");
    println!("clean session during the flood took {clean_took:?}");
    lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn without_xdp_the_agent_rejects_in_user_space_and_hands_off() -> Result<()> {
    if !require_root("without_xdp_the_agent_rejects_in_user_space_and_hands_off") {
        return Ok(());
    }
    let lab = Lab::new(LabOptions { no_xdp: true, ..Default::default() })?;
    let link = lab.edge.command("ip").args(["-d", "link", "show", &lab.edge_end.ifname]).output()?;
    assert!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"), "--no-xdp attached a program");
    // Both greetings reach the agent: the second is not dropped in the kernel, but the agent finds
    // it in its blocklist and refuses it with the entry's reply, without classifying it again.
    for _ in 0..2 {
        assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n", "QUIT\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    }
    assert_eq!(lab.agent.log_text().matches(" scope=").count(), 1, "{}", lab.agent.log_text());
    assert_eq!(lab.agent.log_text().matches("rule=listed_helo").count(), 1, "{}", lab.agent.log_text());
    let r = lab.py("send", &[])?;
    assert_eq!(r["ok"], true, "{r}\n{}", lab.agent.log_text());
    lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    assert!(lab.scrape()?.contains(r#"helo_xdp_info{mode="off""#));
    // The listing is still kept, for when XDP is turned on.
    let out = lab.blocklist(&["get", "localhost"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
