//! The agent on the terms of its systemd unit (helo-user/packaging/debian/helo.service), with no
//! systemd running: it tells `$NOTIFY_SOCKET` READY=1 only once the filter is attached and SMTP is
//! listened on (and never from a start that fails), RELOADING=1/READY=1 around a SIGHUP and
//! STOPPING=1 at SIGTERM; and it does its whole job with only the capabilities the unit's
//! `CapabilityBoundingSet=` leaves it (run through `setpriv`, as root, like the unit).

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use helo_testbed::{
    agent::{binary, Launch},
    lab::{reply, Lab, LabOptions},
    privilege::require_root,
};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helo-user/packaging/debian/helo.service");

/// What systemd would listen on: a datagram socket the agent finds through `$NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Result<Self> {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        Ok(Self { socket, path })
    }

    fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    /// The next message, waiting at most `within`.
    fn next(&self, within: Duration) -> Result<Option<String>> {
        self.socket.set_read_timeout(Some(within))?;
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Messages until one holds `wanted` (returned), for at most `within`.
    fn wait_for(&self, wanted: &str, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        let mut seen = vec![];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left)? {
                Some(m) if m.lines().any(|l| l == wanted) => return Ok(m),
                Some(m) => seen.push(m),
                None => break,
            }
        }
        anyhow::bail!("no {wanted} within {within:?}; got {seen:?}")
    }
}

fn xdp_attached(lab: &Lab) -> Result<bool> {
    Ok(String::from_utf8_lossy(&lab.edge.ip(&["link", "show", &lab.edge_end.ifname])?.stdout).contains("prog/xdp"))
}

/// `args` with the value after `flag` replaced.
fn with_flag(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    let i = out.iter().position(|a| a == flag).expect("flag present") + 1;
    out[i] = value.to_owned();
    out
}

#[test]
fn the_agent_says_ready_only_once_it_filters_and_listens() -> Result<()> {
    if !require_root("the_agent_says_ready_only_once_it_filters_and_listens") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let notify = NotifySocket::bind(dir.path())?;
    let mut lab = Lab::new(LabOptions {
        with_postfix: false,
        launch: Launch { env: vec![notify.env()], ..Default::default() },
        ..Default::default()
    })?;
    let ready = notify.wait_for("READY=1", Duration::from_secs(10))?;
    // Lab::new returned once port 25 answered; the filter was attached before READY=1 was sent.
    assert!(xdp_attached(&lab)?, "READY=1 but no XDP program on {}", lab.edge_end.ifname);
    assert!(ready.contains(&format!("STATUS=XDP on {} (native)", lab.edge_end.ifname)), "{ready}");
    // A SIGHUP's reload is bracketed, so `systemctl reload` (or a SIGHUP) shows "reloading".
    // SAFETY: kill on our own child.
    unsafe { libc::kill(lab.agent.pid() as i32, libc::SIGHUP) };
    notify.wait_for("RELOADING=1", Duration::from_secs(10))?;
    notify.wait_for("READY=1", Duration::from_secs(10))?;
    lab.agent.stop()?;
    notify.wait_for("STOPPING=1", Duration::from_secs(5))?;
    assert!(lab.cli(&["detach", "--pin-dir", lab.pin_dir().to_str().unwrap()])?.status.success());

    // A start that fails (no such interface: after the kernel was touched) never says READY=1.
    let args = with_flag(&lab.args, "--iface", "nosuch0");
    let mut child = lab
        .edge
        .command(binary()?.to_str().unwrap())
        .args(&args)
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the agent with a missing interface did not exit within 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut after_failure = vec![];
    while let Some(m) = notify.next(Duration::from_millis(300))? {
        after_failure.push(m);
    }
    assert!(!after_failure.iter().any(|m| m.lines().any(|l| l == "READY=1")), "a failed start said READY=1: {after_failure:?}");
    Ok(())
}

/// `CAP_BPF CAP_NET_ADMIN …` from the unit, as setpriv spells them (`bpf`, `net_admin`).
fn unit_capabilities() -> Result<Vec<String>> {
    let unit = std::fs::read_to_string(UNIT)?;
    let line = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).context("the unit has no CapabilityBoundingSet=")?;
    Ok(line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()).collect())
}

#[test]
fn the_agent_does_its_job_with_only_the_units_capabilities() -> Result<()> {
    if !require_root("the_agent_does_its_job_with_only_the_units_capabilities") {
        return Ok(());
    }
    let caps = unit_capabilities()?;
    assert!(!caps.is_empty() && !caps.iter().any(|c| c == "sys_admin"), "{caps:?}");
    let set = format!("-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","));
    let dir = tempfile::tempdir()?;
    let notify = NotifySocket::bind(dir.path())?;
    let lab = Lab::new(LabOptions {
        with_postfix: false,
        launch: Launch {
            env: vec![notify.env()],
            // Root, as in the unit, with the bounding set the unit gives (so that is all root's
            // capabilities are) and NoNewPrivileges.
            wrapper: ["setpriv", &format!("--bounding-set={set}"), "--inh-caps=-all", "--no-new-privs"].map(String::from).to_vec(),
        },
        ..Default::default()
    })?;
    notify.wait_for("READY=1", Duration::from_secs(10))?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", lab.agent.pid()))?;
    let effective = status.lines().find(|l| l.starts_with("CapEff:")).context("no CapEff")?.to_owned();
    assert!(xdp_attached(&lab)?);
    let log = lab.agent.log_text();
    assert!(!log.contains("vanish"), "pins judged private under bounded capabilities: {log}");
    // The kernel side works: a name listed through the admin socket is dropped by the XDP program
    // (the agent then answers the dropped greeting with the entry's reply).
    let listed = lab.blocklist(&["add", "capped.example", "--reply", "550 5.7.1 listed under bounded capabilities"])?;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let before = lab.counters()?.get(helo_common::maps::counter::DROP_HELO);
    let answer = reply(&lab.dialog(&["EHLO capped.example\r\n", "QUIT\r\n"])?, 0);
    assert!(answer.starts_with("550 5.7.1 listed under bounded capabilities"), "{answer}");
    assert_eq!(lab.counters()?.get(helo_common::maps::counter::DROP_HELO), before + 1);
    // And the filter watch in /metrics can see its own program attached.
    let metrics = lab.scrape()?;
    assert!(
        metrics.lines().any(|l| l == "helo_xdp_attached 1"),
        "{effective}\n{}",
        metrics.lines().filter(|l| l.contains("xdp")).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}
