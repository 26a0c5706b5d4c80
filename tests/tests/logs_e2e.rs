//! The agent's logs as an operator's tools read them: JSON lines that parse and carry the session
//! id and the event, and journald priorities when stderr is the journal.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use helo_testbed::{
    lab::{one_source_many_names, reply, Lab, LabOptions, CLIENT_SCRIPT},
    privilege::require_root,
};
use serde_json::Value;

#[test]
fn json_lines_parse_and_carry_the_session_and_the_event() -> Result<()> {
    if !require_root("json_lines_parse_and_carry_the_session_and_the_event") {
        return Ok(());
    }
    // No MTA behind: the clean session's hand-off fails, which is logged too.
    let mut lab =
        Lab::new(LabOptions { agent_args: vec!["--log-format".into(), "json".into()], with_postfix: false, ..Default::default() })?;
    assert_eq!(reply(&lab.dialog(&["EHLO localhost\r\n", "QUIT\r\n"])?, 0), "550 5.7.1 Bogus HELO\r\n");
    let _ = lab.dialog(&["EHLO ok.example.org\r\n", "QUIT\r\n"])?;
    lab.agent.stop()?;
    let text = lab.agent.log_text();
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}"))).collect::<Result<_>>()?;
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()), "{text}");
    // Every session's events, by session id.
    let mut sessions: HashMap<String, Vec<&Value>> = HashMap::new();
    for l in &lines {
        if let Some(id) = l["session"].as_str() {
            sessions.entry(id.to_owned()).or_default().push(l);
        }
    }
    let events = |s: &Vec<&Value>| s.iter().map(|l| l["event"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>();
    let rejected = sessions.values().find(|s| s.iter().any(|l| l["event"] == "reject")).context("no reject line")?;
    assert_eq!(events(rejected), ["connect", "reject", "close"], "{text}");
    let reject = rejected.iter().find(|l| l["event"] == "reject").unwrap();
    assert_eq!(
        (reject["rule"].as_str(), reject["helo"].as_str(), reject["level"].as_str()),
        (Some("bogus_helo"), Some("localhost"), Some("INFO"))
    );
    assert!(reject["client"].as_str().unwrap_or("").starts_with("198.18."), "{reject}");
    let handed = sessions.values().find(|s| s.iter().any(|l| l["event"] == "hand-off")).context("no hand-off line")?;
    assert_eq!(events(handed), ["connect", "hand-off", "close"], "{text}");
    let hand_off = handed.iter().find(|l| l["event"] == "hand-off").unwrap();
    // The session's own line stays at info; the outage is one warning of its own, not a session's.
    assert_eq!((hand_off["result"].as_str(), hand_off["level"].as_str()), (Some("failed"), Some("INFO")), "{hand_off}");
    let down: Vec<&Value> = lines.iter().filter(|l| l["event"] == "backend-down").collect();
    assert_eq!(down.len(), 1, "{text}");
    assert_eq!((down[0]["level"].as_str(), down[0]["session"].as_str()), (Some("WARN"), None), "{}", down[0]);
    // Lines that are not about a session keep their message.
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("XDP program "))), "{text}");
    Ok(())
}

/// Runs `helo ARGS` in `ns` with stderr to a file, `JOURNAL_STREAM` naming that file (as
/// systemd names the journal's stream) when `journal`, else naming another file; waits (bounded)
/// for it to exit and returns its stderr.
fn run_to_exit_logging(ns: &helo_testbed::netns::Netns, args: &[String], journal: bool) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let err_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&err_path)?;
    let named = if journal { stderr.metadata()? } else { std::fs::File::create(dir.path().join("elsewhere"))?.metadata()? };
    let mut child = ns
        .command(helo_testbed::agent::binary()?.to_str().unwrap())
        .args(args)
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", named.dev(), named.ino()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("helo did not exit within 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(std::fs::read_to_string(&err_path)?)
}

#[test]
fn under_journald_each_line_carries_its_syslog_priority() -> Result<()> {
    if !require_root("under_journald_each_line_carries_its_syslog_priority") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions { with_postfix: false, ..Default::default() })?;
    lab.agent.stop()?;
    assert!(lab.cli(&["detach", "--pin-dir", lab.pin_dir().to_str().unwrap()])?.status.success());
    // A start that fails (no such interface): the cause at error priority, the clean-up as a warning.
    let mut args = lab.args.clone();
    let i = args.iter().position(|a| a == "--iface").unwrap();
    args[i + 1] = "nosuch0".into();
    let err = run_to_exit_logging(&lab.edge, &args, true)?;
    assert!(err.lines().any(|l| l.starts_with("<3>") && l.contains("no interface named nosuch0")), "{err}");
    assert!(err.lines().any(|l| l.starts_with("<4>") && l.contains("start failed")), "{err}");
    assert!(err.lines().all(|l| l.starts_with('<')), "a line without its priority: {err}");
    // journald stamps lines itself: no timestamp of ours.
    assert!(!err.contains(" ERROR ") || err.lines().all(|l| !l[3..].starts_with("20")), "{err}");
    // JOURNAL_STREAM inherited, but stderr is not that stream: plain lines.
    let err = run_to_exit_logging(&lab.edge, &args, false)?;
    assert!(err.contains("no interface named nosuch0") && !err.contains("<3>"), "{err}");
    Ok(())
}

#[test]
fn a_flood_of_bad_commands_and_greetings_cannot_choose_the_level_or_the_volume_of_its_lines() -> Result<()> {
    if !require_root("a_flood_of_bad_commands_and_greetings_cannot_choose_the_level_or_the_volume_of_its_lines") {
        return Ok(());
    }
    const SESSIONS: usize = 150;
    const PER_MINUTE: usize = 50;
    let dir = tempfile::tempdir()?;
    let mut agent_args = one_source_many_names(dir.path())?;
    agent_args.extend(["--log-client-lines-per-minute".into(), PER_MINUTE.to_string()]);
    let mut lab = Lab::new(LabOptions { agent_args, with_postfix: false, ..Default::default() })?;
    // Each session: a bad command (quoted), an over-long line, then a bogus greeting (quoted in
    // its reject line): three lines' worth of client input each.
    let long = format!("NOOP {}\r\n", "x".repeat(2000));
    let out = lab
        .client
        .command("python3")
        .arg(CLIENT_SCRIPT)
        .args(["flood", "--server", &lab.edge_end.v4, "--count", &SESSIONS.to_string(), "--timeout", "10"])
        .args(["--helo-template", "flood{i}", "--line", "XYZZY <script>\r\n", "--line", &long])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replies: Value = serde_json::from_slice(&out.stdout)?;
    let refused =
        replies["replies"].as_array().context("no replies")?.iter().filter(|r| r.as_str().is_some_and(|r| r.starts_with("550"))).count();
    assert_eq!(refused, SESSIONS, "{replies}");
    // The summary of what was held back is written at stop (and each minute).
    lab.agent.stop()?;
    let log = lab.agent.log_text();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // Every decision is logged, whatever the budget.
    assert_eq!(lines(" reject client="), SESSIONS, "{log}");
    let quoted = lines(" helo=") + lines(" protocol-error ");
    let held_back: usize = log
        .lines()
        .find_map(|l| l.split(" INFO  ").nth(1)?.split(" log lines about what clients sent").next()?.parse().ok())
        .with_context(|| format!("no summary of held-back lines: {log}"))?;
    println!("{SESSIONS} sessions of client junk: {quoted} lines quoted clients, {held_back} held back or shortened");
    assert_eq!(quoted + held_back, 3 * SESSIONS, "{log}");
    // One budget a minute; a run across a minute's boundary gets two.
    assert!((PER_MINUTE..=2 * PER_MINUTE).contains(&quoted), "{quoted} lines quoted clients");
    // Nothing a client sent is logged above info.
    for l in log.lines().filter(|l| l.contains("flood") || l.contains("XYZZY") || l.contains("protocol-error")) {
        assert!(l.contains(" INFO ") || l.contains(" DEBUG "), "{l}");
    }
    assert_eq!(lines(" ERROR "), 0, "{log}");
    Ok(())
}
