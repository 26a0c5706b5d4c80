//! `helo allow add|del|list` end to end: a real agent with native XDP on a veth in front of a real
//! Postfix. A client whose bogus greeting is refused (and then dropped by the kernel) is delivered
//! once its address is allowed, without a restart; refused again once the entry is deleted; the
//! entry outlives a restart; changes made while the agent is stopped reach the pinned allow trie
//! and the next start. And names: an allowed name comes off the blocklist, and the config file's
//! entries are listed as such and cannot be deleted with `allow del`.

use std::{process::Output, time::Duration};

use anyhow::Result;
use aya::maps::{LpmTrie, Map, MapData};
use helo_common::maps::{counter, names};
use helo_testbed::{
    lab::{reply, Lab, LabOptions, USER},
    privilege::require_root,
};
use serde_json::Value;

/// `helo allow ARGS` against this lab's agent, or its store and pins when it is down.
fn allow(lab: &Lab, args: &[&str]) -> Result<Output> {
    let (socket, state, pins) = (lab.admin_socket(), lab.state_dir(), lab.pin_dir());
    let mut full = vec!["allow", "--admin-socket", socket.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    full.extend(["--pin-dir", pins.to_str().unwrap()]);
    full.extend(args);
    lab.cli(&full)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One message from the client namespace greeting as `localhost` (bogus: not a FQDN).
fn send_as_localhost(lab: &Lab) -> Result<bool> {
    Ok(lab.py("send", &["--helo", "localhost", "--attach-bytes", "1000", "--timeout", "5"])?["ok"] == true)
}

/// Networks in the pinned allow trie.
fn pinned_allow_entries(lab: &Lab) -> Result<usize> {
    let data = MapData::from_pin(lab.pin_dir().join(names::ALLOW))?;
    let trie: LpmTrie<MapData, [u8; 16], u8> = LpmTrie::try_from(Map::LpmTrie(data))?;
    Ok(trie.keys().count())
}

fn listed(out: &Output) -> Vec<Value> {
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn an_allowed_address_is_delivered_at_once_refused_after_del_and_kept_across_restarts() -> Result<()> {
    if !require_root("an_allowed_address_is_delivered_at_once_refused_after_del_and_kept_across_restarts") {
        return Ok(());
    }
    let mut lab = Lab::new(LabOptions::default())?;
    let client = lab.client_end.v4.clone();
    let net = format!("{client}/32");
    // Refused by the agent, then dropped by the kernel: the name is listed.
    assert!(!send_as_localhost(&lab)?, "a bogus greeting was delivered");
    assert!(!send_as_localhost(&lab)?, "a listed greeting was delivered");
    // The source listed as well: the allow list must win over both lists.
    ok(&lab.blocklist(&["add", &client, "--reason", "test"])?);
    assert!(!send_as_localhost(&lab)?, "a listed source was delivered");

    let before = lab.counters()?;
    let said = ok(&allow(&lab, &["add", &client])?);
    assert!(said.contains(&format!("allowed net {net}")), "{said}");
    assert!(send_as_localhost(&lab)?, "an allowed client was refused: {}", lab.agent.log_text());
    lab.postfix().wait_for_messages(USER, 1, Duration::from_secs(20))?;
    assert!(lab.counters()?.since(&before).get(counter::PASS_ALLOW_LISTED) >= 1, "the kernel's allow trie did not let the client by");
    let entries = listed(&allow(&lab, &["list", "--json"])?);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!((entries[0]["value"].as_str(), entries[0]["origin"].as_str()), (Some(net.as_str()), Some("operator")));
    assert!(entries[0]["added_unix_s"].as_u64().unwrap_or(0) > 0);
    assert_eq!(pinned_allow_entries(&lab)?, 1);

    // Deleted: refused again at once (the source taken off the blocklist first, so the greeting
    // is what refuses it).
    ok(&lab.blocklist(&["del", &client])?);
    let said = ok(&allow(&lab, &["del", &client])?);
    assert!(said.contains("removed net"), "{said}");
    assert!(!send_as_localhost(&lab)?, "a client no longer allowed was delivered");
    assert_eq!(pinned_allow_entries(&lab)?, 0);
    let out = allow(&lab, &["del", &client])?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not on the allow list"));

    // Added again, it survives a restart.
    ok(&allow(&lab, &["add", &client])?);
    lab.agent.stop()?;
    lab.restart_agent("agent2.log")?;
    assert!(lab.agent.log_text().contains("1 operator entries from the store"), "{}", lab.agent.log_text());
    assert!(send_as_localhost(&lab)?, "the allow entry did not survive the restart");
    lab.postfix().wait_for_messages(USER, 2, Duration::from_secs(20))?;

    // With the agent stopped: a delete reaches the store and the pinned trie, and the next start.
    lab.agent.stop()?;
    let out = allow(&lab, &["del", &client])?;
    ok(&out);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("no agent running") && note.contains("allow trie pinned in"), "{note}");
    assert_eq!(pinned_allow_entries(&lab)?, 0);
    assert!(listed(&allow(&lab, &["list", "--json"])?).is_empty());
    lab.restart_agent("agent3.log")?;
    assert!(!send_as_localhost(&lab)?, "an entry deleted offline still let the client through");
    // And an add.
    lab.agent.stop()?;
    ok(&allow(&lab, &["add", &client])?);
    assert_eq!(pinned_allow_entries(&lab)?, 1, "the offline add did not reach the pinned trie");
    lab.restart_agent("agent4.log")?;
    assert!(send_as_localhost(&lab)?, "an entry added offline was not seen by the next start");
    lab.postfix().wait_for_messages(USER, 3, Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn an_allowed_name_comes_off_the_blocklist_and_the_files_entries_stay() -> Result<()> {
    if !require_root("an_allowed_name_comes_off_the_blocklist_and_the_files_entries_stay") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("helo.toml");
    std::fs::write(&conf, "[classifier.allow]\nnames = [\"File.Example.\"]\ncidrs = [\"198.18.99.0/24\"]\n")?;
    let conf_s = conf.to_str().unwrap();
    let mut lab = Lab::new(LabOptions { agent_args: vec!["--config".into(), conf_s.into()], with_postfix: false, ..Default::default() })?;
    let greet = |lab: &Lab| -> Result<String> { Ok(reply(&lab.dialog(&["EHLO localhost\r\n", "QUIT\r\n"])?, 0)) };
    assert_eq!(greet(&lab)?, "550 5.7.1 Bogus HELO\r\n");
    let said = ok(&allow(&lab, &["add", "LocalHost."])?);
    assert!(said.contains("allowed name localhost") && said.contains("1 taken off the blocklist"), "{said}");
    let names = ok(&lab.blocklist(&["list", "--json"])?);
    assert!(!names.contains("\"localhost\""), "{names}");
    // No MTA behind this lab: an accepted greeting is handed off and gets a down backend's 421.
    assert!(greet(&lab)?.starts_with("421"), "an allowed name was refused");
    let entries = listed(&allow(&lab, &["list", "--json"])?);
    let origins: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["value"].as_str().unwrap_or(""), e["origin"].as_str().unwrap_or(""))).collect();
    assert_eq!(origins, vec![("198.18.99.0/24", "config"), ("file.example", "config"), ("localhost", "operator")]);
    // The file's entries are the file's.
    for value in ["file.example", "198.18.99.0/24"] {
        let out = allow(&lab, &["del", value])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("config file"), "{err}");
    }
    ok(&allow(&lab, &["del", "localhost"])?);
    assert_eq!(greet(&lab)?, "550 5.7.1 Bogus HELO\r\n");
    // Offline, with the config file given, the file's network is still known as the file's, and it
    // stays in the pinned trie through an operator entry's removal.
    lab.agent.stop()?;
    ok(&allow(&lab, &["add", "198.18.99.0/24", "--config", conf_s])?);
    let out = allow(&lab, &["del", "198.18.99.0/24", "--config", conf_s])?;
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && note.contains("still allows it"), "{note}");
    assert_eq!(pinned_allow_entries(&lab)?, 1, "the file's network left the pinned trie");
    let out = allow(&lab, &["del", "file.example", "--config", conf_s])?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("config file"));
    Ok(())
}
