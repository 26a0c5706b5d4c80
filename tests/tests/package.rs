//! The Debian package `cargo xtask package` builds (and `cargo xtask test` builds before the
//! tests run), unpacked into a scratch root with `dpkg-deb -x` (and installed on the machine with
//! `dpkg -i`, then purged): every file where Debian, man,
//! the shells and systemd look for it, `/etc/helo/helo.toml` a conffile that `helo
//! check-config` refuses until `iface` is set, as `run` does, and passes with it (its commented
//! examples too), and the unit accepted by `systemd-analyze verify`
//! and rated by `systemd-analyze security`, both offline (no systemd runs here).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{ensure, Context, Result};

/// The newest `target/debian/helo_*.deb`, refused if older than the release binary (then it is
/// not this build's).
fn package() -> Result<PathBuf> {
    let binary = helo_testbed::agent::binary()?;
    let target = binary.parent().and_then(Path::parent).context("no target directory")?;
    let dir = target.join("debian");
    let newest = std::fs::read_dir(&dir)
        .with_context(|| format!("{} is missing: build the package first (`cargo xtask package`)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("helo_") && n.ends_with(".deb")))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("no helo_*.deb in {}: run `cargo xtask package`", dir.display()))?;
    let built = |p: &Path| p.metadata().and_then(|m| m.modified());
    ensure!(
        built(&newest)? >= built(&binary)?,
        "{} is older than {}: run `cargo xtask package` (cargo xtask test does)",
        newest.display(),
        binary.display()
    );
    Ok(newest)
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The package unpacked under a fresh directory (kept alive by the returned guard).
fn unpacked() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(package()?).arg(&root))?;
    Ok((dir, root))
}

fn control_file(name: &str) -> Result<String> {
    let out = run(Command::new("dpkg-deb").arg("--info").arg(package()?).arg(name))?;
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_package_puts_every_file_where_it_belongs() -> Result<()> {
    let (_dir, root) = unpacked()?;
    let version = run(Command::new(root.join("usr/bin/helo")).arg("--version"))?;
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("helo {}", env!("CARGO_PKG_VERSION")));
    for file in [
        "usr/lib/systemd/system/helo.service",
        "etc/helo/helo.toml",
        "usr/share/bash-completion/completions/helo",
        "usr/share/zsh/vendor-completions/_helo",
        "usr/share/fish/vendor_completions.d/helo.fish",
        "usr/share/doc/helo/copyright",
        "usr/share/doc/helo/examples/helo-alerts.yml",
        "usr/share/doc/helo/examples/helo-dashboard.json",
    ] {
        assert!(root.join(file).is_file(), "{file} is not in the package");
    }
    // The licence files, as in the repository.
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let shipped = std::fs::read(root.join("usr/share/doc/helo").join(licence))?;
        assert_eq!(shipped, std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(licence))?, "{licence}");
    }
    // A man page for the command and each subcommand, compressed, readable by man.
    let man1 = root.join("usr/share/man/man1");
    for page in [
        "helo",
        "helo-run",
        "helo-reload",
        "helo-check-config",
        "helo-blocklist",
        "helo-blocklist-add",
        "helo-allow",
        "helo-allow-add",
        "helo-stats",
        "helo-top",
    ] {
        let path = man1.join(format!("{page}.1.gz"));
        let text = run(Command::new("man").arg("-l").arg(&path).env("MANWIDTH", "100"))?;
        let text = String::from_utf8_lossy(&text.stdout);
        let named = text.lines().skip_while(|l| l.trim() != "NAME").nth(1).and_then(|l| l.split_whitespace().next());
        assert_eq!(named, Some(page), "{text}");
    }
    assert!(!man1.join("helo-generate.1.gz").exists(), "the hidden packaging command got a man page");
    // The bash completion parses and completes subcommands.
    let bash = root.join("usr/share/bash-completion/completions/helo");
    let completed = run(Command::new("bash")
        .arg("-c")
        .arg(format!("source {}; COMP_WORDS=(helo re); COMP_CWORD=1; _helo helo re helo; echo \"${{COMPREPLY[@]}}\"", bash.display())))?;
    assert_eq!(String::from_utf8_lossy(&completed.stdout).trim(), "reload");
    // Debian's view: the config is a conffile (an upgrade keeps the operator's edits), the
    // library dependencies were worked out, installing neither enables nor starts the unit.
    assert_eq!(control_file("conffiles")?.trim(), "/etc/helo/helo.toml");
    let control = control_file("control")?;
    assert!(control.contains("Package: helo\n"), "{control}");
    assert!(control.lines().any(|l| l.starts_with("Depends:") && l.contains("libc6") && l.contains("libssl3")), "{control}");
    let postinst = control_file("postinst")?;
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "installing starts the unit:\n{postinst}");
    Ok(())
}

#[test]
fn the_shipped_config_waits_for_an_interface_and_then_passes_check_config() -> Result<()> {
    let (dir, root) = unpacked()?;
    let helo = root.join("usr/bin/helo");
    let config = root.join("etc/helo/helo.toml");
    // As shipped, check-config says what `run` would: the interface is not set yet (exit 2, one line).
    let unset = Command::new(&helo).arg("check-config").arg(&config).output()?;
    assert_eq!(unset.status.code(), Some(2), "{}", String::from_utf8_lossy(&unset.stderr));
    assert!(String::from_utf8_lossy(&unset.stderr).contains("--iface is required"), "{}", String::from_utf8_lossy(&unset.stderr));
    // With the interface set, it checks and resolves the rest. First run: observe.
    let with_iface = dir.path().join("with-iface.toml");
    std::fs::write(&with_iface, std::fs::read_to_string(&config)?.replace("#iface = ", "iface = "))?;
    let checked = run(Command::new(&helo).arg("check-config").arg(&with_iface))?;
    let resolved = String::from_utf8_lossy(&checked.stdout);
    assert!(resolved.lines().any(|l| l == "mode = \"observe\""), "{resolved}");
    // Every commented-out key (`#key = …`, `#[table]`; prose is `# …`) is valid as written.
    let text = std::fs::read_to_string(&config)?;
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.contains("\niface = "), "no commented-out iface to check:\n{uncommented}");
    let every_key = dir.path().join("every-key.toml");
    std::fs::write(&every_key, &uncommented)?;
    run(Command::new(&helo).arg("check-config").arg(&every_key))?;
    // As shipped, the agent refuses to start (exit 2, nothing touched) until the interface is set.
    let started = Command::new(&helo).args(["run", "--config"]).arg(&config).output()?;
    assert_eq!(started.status.code(), Some(2), "{}", String::from_utf8_lossy(&started.stderr));
    assert!(String::from_utf8_lossy(&started.stderr).contains("--iface is required"), "{}", String::from_utf8_lossy(&started.stderr));
    Ok(())
}

#[test]
fn systemd_analyze_accepts_the_unit() -> Result<()> {
    let (dir, root) = unpacked()?;
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/helo.service"))?;
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/helo run --config /etc/helo/helo.toml",
        "ExecReload=/usr/bin/helo reload --config /etc/helo/helo.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=helo",
        "RuntimeDirectory=helo",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // verify checks that ExecStart's program exists and Documentation='s man pages open: point
    // both at the unpacked package (the unit is otherwise unchanged).
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units)?;
    let local = units.join("helo.service");
    std::fs::write(&local, unit.replace("/usr/bin/helo", &root.join("usr/bin/helo").display().to_string()))?;
    let verified = Command::new("systemd-analyze").arg("verify").arg(&local).env("MANPATH", root.join("usr/share/man")).output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success() && !said.contains("helo.service"), "systemd-analyze verify:\n{said}");
    // The sandbox, as systemd rates it: "OK" is below 4.0 on its 0 (locked down) to 10 scale.
    let security = run(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&local))?;
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for helo.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no exposure level in:\n{report}"))?;
    assert!(exposure <= 3.0, "exposure {exposure}:\n{report}");
    Ok(())
}

/// Whether dpkg has a package called `helo` on this machine.
fn installed() -> Result<bool> {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Status}", "helo"]).output()?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "installed")
}

/// Installs the package on this machine with `dpkg -i` (its maintainer scripts run for real),
/// checks what dpkg and the system then see, and purges it: nothing of it is left behind.
#[test]
fn dpkg_installs_the_package_and_purges_it_without_a_trace() -> Result<()> {
    if !helo_testbed::privilege::require_root("dpkg_installs_the_package_and_purges_it_without_a_trace") {
        return Ok(());
    }
    // A helo installed by someone else is not ours to remove.
    ensure!(!installed()?, "a package named helo is already installed here; this test installs and purges its own");
    let deb = package()?;
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["--purge", "helo"]).output();
        }
    }
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb))?;
    ensure!(installed()?, "dpkg -i succeeded but dpkg does not list helo as installed");
    // The installed binary, from the path an operator types.
    let version = run(Command::new("/usr/bin/helo").arg("--version"))?;
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("helo {}", env!("CARGO_PKG_VERSION")));
    // dpkg keeps the config as a conffile (an upgrade asks before replacing the operator's edits).
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "helo"]))?;
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/helo/helo.toml"), "{conffiles:?}");
    // As installed, the config waits for its interface: check-config says so as `run` would.
    let checked = Command::new("/usr/bin/helo").args(["check-config", "/etc/helo/helo.toml"]).output()?;
    assert_eq!(checked.status.code(), Some(2), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stderr).contains("--iface is required"), "{}", String::from_utf8_lossy(&checked.stderr));
    let listed = run(Command::new("dpkg").args(["-L", "helo"]))?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in ["/usr/bin/helo", "/usr/lib/systemd/system/helo.service", "/usr/share/man/man1/helo.1.gz"] {
        assert!(listed.lines().any(|l| l == file), "dpkg -L helo does not list {file}:\n{listed}");
        assert!(Path::new(file).is_file(), "{file} is not on the disk");
    }
    // Installing neither enabled nor started it: no unit link in multi-user.target.wants.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/helo.service").exists(), "installing enabled the unit");
    run(Command::new("dpkg").args(["--purge", "helo"]))?;
    ensure!(!installed()?, "helo is still installed after --purge");
    for file in ["/usr/bin/helo", "/usr/lib/systemd/system/helo.service", "/etc/helo/helo.toml"] {
        assert!(!Path::new(file).exists(), "{file} is left after --purge");
    }
    Ok(())
}
