//! One config vocabulary (issue 16): every TOML example in the README and the shipped
//! `/etc/helo/helo.toml` pass the real binary's `check-config` without a deprecation warning;
//! durations read the same in the file and on the command line; the snake_case spellings of
//! earlier versions still load, with a warning naming each.

use std::{path::Path, process::Command};

use anyhow::{bail, Result};
use clap::Parser;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helo-user/packaging/helo.toml");

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some((i + 1, String::new())),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// `helo check-config FILE`: (success, stdout, stderr).
fn check_config(path: &Path) -> Result<(bool, String, String)> {
    let out = Command::new(helo_testbed::agent::binary()?).arg("check-config").arg(path).output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A fragment gets the keys `check-config` requires if it has none of its own: `hostname`, and
/// `iface` unless it says `iface` or `no-xdp` (the shipped file leaves `iface` for the operator).
fn as_whole_file(fragment: &str) -> String {
    let top_level: Vec<&str> = fragment.lines().map(str::trim_start).take_while(|l| !l.starts_with('[')).collect();
    let has = |key: &str| top_level.iter().any(|l| l.starts_with(key));
    let mut whole = String::new();
    if !has("hostname") {
        whole.push_str("hostname = \"mx.example.com\"\n");
    }
    if !has("iface") && !has("no-xdp") {
        whole.push_str("iface = \"eth1\"\n");
    }
    whole + fragment
}

#[test]
fn every_readme_example_and_the_shipped_config_pass_check_config_in_the_new_style() -> Result<()> {
    let readme = std::fs::read_to_string(README)?;
    let blocks = toml_blocks(&readme);
    assert!(blocks.len() >= 3, "the README's TOML examples were not found: {}", blocks.len());
    let dir = tempfile::tempdir()?;
    let mut failures = Vec::new();
    for (line, block) in &blocks {
        let path = dir.path().join(format!("readme-{line}.toml"));
        std::fs::write(&path, as_whole_file(block))?;
        let (ok, _, err) = check_config(&path)?;
        if !ok || err.contains("deprecated") {
            failures.push(format!("README.md line {line}: {err}"));
        }
    }
    let shipped = dir.path().join("shipped.toml");
    std::fs::write(&shipped, as_whole_file(&std::fs::read_to_string(SHIPPED)?))?;
    let (ok, _, err) = check_config(&shipped)?;
    if !ok || err.contains("deprecated") {
        failures.push(format!("{SHIPPED}: {err}"));
    }
    if !failures.is_empty() {
        bail!("config examples that do not pass check-config:\n{}", failures.join("\n"));
    }
    Ok(())
}

#[test]
fn durations_read_the_same_in_the_file_and_on_the_command_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> Result<std::path::PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let words = write(
        "words.toml",
        "iface = \"eth1\"\nhostname = \"mx.example.com\"\nhelo-ttl-s = \"7d\"\nsource-ttl-s = \"90m\"\npregreet-ms = \"1s\"\n[timeouts]\ncommand-s = \"5m\"\n[ladder]\nmax-ttl-s = \"2d\"\n",
    )?;
    let numbers = write(
        "numbers.toml",
        "iface = \"eth1\"\nhostname = \"mx.example.com\"\nhelo-ttl-s = 604800\nsource-ttl-s = 5400\npregreet-ms = 1000\n[timeouts]\ncommand-s = 300\n[ladder]\nmax-ttl-s = 172800\n",
    )?;
    let (ok_w, out_w, err_w) = check_config(&words)?;
    let (ok_n, out_n, err_n) = check_config(&numbers)?;
    assert!(ok_w && ok_n, "{err_w}{err_n}");
    assert_eq!(out_w, out_n);
    assert!(out_w.contains("helo-ttl-s = 604800") && out_w.contains("source-ttl-s = 5400"), "{out_w}");
    let bad = write("bad.toml", "iface = \"eth1\"\nhostname = \"mx.example.com\"\nhelo-ttl-s = \"soon\"\n")?;
    let (ok, _, err) = check_config(&bad)?;
    assert!(!ok && err.contains("line 3") && err.contains("not a duration"), "{err}");
    // The command line takes the same words.
    let cli = helo_user::cli::Cli::try_parse_from([
        "helo",
        "run",
        "--no-xdp",
        "--hostname",
        "mx.example.com",
        "--helo-ttl-s",
        "7d",
        "--source-ttl-s",
        "5400",
        "--command-timeout-s",
        "5m",
        "--pregreet-ms",
        "1s",
    ])?;
    let helo_user::cli::Command::Run(args) = cli.command else { bail!("not run") };
    let c = args.config()?;
    assert_eq!((c.helo_ttl_s, c.source_ttl_s, c.timeouts.command_s, c.pregreet_ms), (604_800, 5400, 300, 1000));
    // And `blocklist add --ttl` reads both forms too.
    for ttl in ["1h", "3600"] {
        let cli = helo_user::cli::Cli::try_parse_from(["helo", "blocklist", "add", "x.example", "--ttl", ttl])?;
        let helo_user::cli::Command::Blocklist(b) = cli.command else { bail!("not blocklist") };
        let helo_user::cli::BlocklistCommand::Add { ttl, .. } = b.command else { bail!("not add") };
        assert_eq!(ttl, Some(3600));
    }
    Ok(())
}

#[test]
fn snake_case_keys_still_load_with_a_warning_for_each() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        "iface = \"eth1\"\nhostname = \"mx.example.com\"\n[classifier]\nrelay_cidrs = [\"198.18.0.0/15\"]\n[classifier.rules.bogus_helo]\nallow_underscore = false\n",
    )?;
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        "iface = \"eth1\"\nhostname = \"mx.example.com\"\n[classifier]\nrelay-cidrs = [\"198.18.0.0/15\"]\n[classifier.rules.bogus-helo]\nallow-underscore = false\n",
    )?;
    let (ok_old, out_old, err_old) = check_config(&old)?;
    let (ok_new, out_new, err_new) = check_config(&new)?;
    assert!(ok_old && ok_new, "{err_old}{err_new}");
    assert_eq!(out_old, out_new, "the old spelling must mean the same");
    assert!(out_new.contains("relay-cidrs = [\"198.18.0.0/15\"]") && out_new.contains("allow-underscore = false"), "{out_new}");
    assert!(err_new.is_empty(), "{err_new}");
    for key in ["classifier.relay_cidrs → classifier.relay-cidrs", "classifier.rules.bogus_helo", "allow_underscore"] {
        assert!(err_old.contains(key), "no warning for {key}: {err_old}");
    }
    assert_eq!(err_old.lines().count(), 3, "{err_old}");
    Ok(())
}
