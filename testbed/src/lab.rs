//! A whole edge box in namespaces, for the end-to-end tests: a client namespace and an edge
//! namespace joined by a veth, `helo run` in the edge namespace with XDP attached natively to
//! its veth, its pins on a private bpffs, and (optionally) a real Postfix behind it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    agent::{AgentProcess, Launch},
    kernel_state,
    netns::{link, Endpoint, Netns},
    postfix::{Postfix, PostfixConfig},
    tmpfs::Tmpfs,
};

pub const HOSTNAME: &str = "mx.example.com";
pub const DOMAIN: &str = "example.com";
pub const USER: &str = "user@example.com";
pub const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/smtp_client.py");

pub struct Lab {
    // Field order is drop order: the agent and Postfix stop before their namespaces go.
    pub agent: AgentProcess,
    /// The agent's state directory's own size-limited filesystem, if asked for.
    pub state_fs: Option<Tmpfs>,
    pub postfix: Option<Postfix>,
    pins: BpfFs,
    pub client: Netns,
    pub edge: Netns,
    pub client_end: Endpoint,
    pub edge_end: Endpoint,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
    pub launch: Launch,
}

/// A private bpf filesystem for one lab's pins, unmounted on drop (which also drops what was
/// pinned there, the XDP link included).
pub struct BpfFs {
    pub path: PathBuf,
}

impl BpfFs {
    pub fn mount(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        crate::netns::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
        Ok(Self { path })
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
    }
}

/// `helo run` for an agent on `end`: listening on port 25, handing clean sessions to a
/// Postfix on `end`:10025, with XDP attached natively to `end`'s interface (or `--no-xdp`), its
/// state and admin socket under `dir`, its pins on the bpffs to be mounted at `dir/bpffs`.
pub fn agent_args(end: &Endpoint, dir: &Path, xdp: bool) -> Vec<String> {
    let under = |rel: &str| dir.join(rel).display().to_string();
    let mut args: Vec<String> = vec!["run".into()];
    if xdp {
        args.extend(["--iface".into(), end.ifname.clone(), "--xdp-mode".into(), "native".into()]);
    } else {
        args.push("--no-xdp".into());
    }
    args.extend([
        "--listen".into(),
        format!("{}:25", end.v4),
        "--backend".into(),
        format!("{}:10025", end.v4),
        "--hostname".into(),
        HOSTNAME.into(),
        "--server-ip".into(),
        end.v4.clone(),
        "--server-ip".into(),
        end.v6.clone(),
        "--domain".into(),
        DOMAIN.into(),
        "--state-dir".into(),
        agent_state_dir(dir).display().to_string(),
        "--pin-dir".into(),
        under("bpffs/helo"),
        "--admin-socket".into(),
        agent_admin_socket(dir).display().to_string(),
        "--metrics".into(),
        format!("{}:9725", end.v4),
    ]);
    args
}

/// Agent arguments for a test that sends many bogus greetings from its one client address: room
/// for 500 sessions from it, the offender ladder off and the per-source quota of new listings out
/// of the way. The last two would (rightly) stop a real source doing this, but such a test is
/// about something else.
pub fn one_source_many_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join("one-source.toml");
    std::fs::write(&path, ONE_SOURCE_MANY_NAMES)?;
    Ok(vec!["--max-sessions-per-source".into(), "500".into(), "--config".into(), path.display().to_string()])
}

/// The config lines behind [`one_source_many_names`], for a test with a config file of its own.
pub const ONE_SOURCE_MANY_NAMES: &str = "learned-per-source-per-hour = 1000000\n[ladder]\nstrikes = 0\n";

/// The lab's backend Postfix on the edge: where the agent's `--backend` points (PROXY v2 on
/// 10025), [`DOMAIN`] and [`USER`], no TLS. A test that starts the MTA late starts this one.
pub fn backend_config(edge_end: &Endpoint) -> PostfixConfig {
    PostfixConfig {
        listen_ip: edge_end.v4.clone(),
        proxy_port: 10025,
        plain_port: 10026,
        domains: vec![DOMAIN.to_owned()],
        users: vec![USER.to_owned()],
        myhostname: "backend.example.com".into(),
        tls: false,
        extra_main_cf: vec![],
        extra_master_cf: vec![],
    }
}

pub fn agent_state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

pub fn agent_admin_socket(dir: &Path) -> PathBuf {
    dir.join("admin/admin.sock")
}

/// Work done on the edge namespace before the agent starts.
pub type EdgeSetup = Box<dyn FnOnce(&Netns) -> Result<()>>;

pub struct LabOptions {
    pub agent_args: Vec<String>,
    pub with_postfix: bool,
    pub tls: bool,
    /// Run the agent with `--no-xdp` instead of attaching to the edge veth.
    pub no_xdp: bool,
    /// Runs on the edge namespace before the agent starts (extra links, say).
    pub edge_setup: Option<EdgeSetup>,
    /// More domains and mailboxes for the backend Postfix, beside [`DOMAIN`] and [`USER`].
    pub backend_domains: Vec<String>,
    pub backend_users: Vec<String>,
    /// More `main.cf` lines for the backend Postfix.
    pub backend_main_cf: Vec<String>,
    /// Put the agent's state directory on a tmpfs of this size (`2m`), to fill it.
    pub state_fs: Option<String>,
    /// The agent's environment and wrapper (the systemd unit's tests).
    pub launch: Launch,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            agent_args: vec![],
            with_postfix: true,
            tls: false,
            no_xdp: false,
            edge_setup: None,
            backend_domains: vec![],
            backend_users: vec![],
            backend_main_cf: vec![],
            state_fs: None,
            launch: Launch::default(),
        }
    }
}

impl Lab {
    pub fn new(opts: LabOptions) -> Result<Self> {
        let client = Netns::new("c")?;
        let edge = Netns::new("e")?;
        let (client_end, edge_end) = link(&client, &edge, 30)?;
        let dir = tempfile::tempdir()?;
        let postfix = if opts.with_postfix {
            let mut cfg = backend_config(&edge_end);
            cfg.domains.extend(opts.backend_domains);
            cfg.users.extend(opts.backend_users);
            cfg.tls = opts.tls;
            cfg.extra_main_cf = opts.backend_main_cf;
            Some(Postfix::start(&edge, cfg)?)
        } else {
            None
        };
        let listen: SocketAddr = format!("{}:25", edge_end.v4).parse()?;
        let mut args = agent_args(&edge_end, dir.path(), !opts.no_xdp);
        args.extend(opts.agent_args);
        if let Some(setup) = opts.edge_setup {
            setup(&edge)?;
        }
        let pins = BpfFs::mount(dir.path().join("bpffs"))?;
        let state_fs = opts.state_fs.map(|size| Tmpfs::mount(agent_state_dir(dir.path()), &size)).transpose()?;
        let launch = opts.launch;
        let agent = AgentProcess::start_with(&edge, &args, listen, dir.path().join("agent.log"), "debug", &launch)?;
        Ok(Self { agent, state_fs, postfix, pins, client, edge, client_end, edge_end, dir, args, launch })
    }

    /// A box of a fleet: its edge namespace also gets a veth to `redis_ns` on subnet `subnet`
    /// (Redis is .1 there), and its agent follows that Redis as `name`.
    pub fn fleet_box(redis_ns: &Netns, subnet: u8, name: &str, password: &str, extra: Vec<String>) -> Result<Self> {
        let redis_ns_name = redis_ns.name.clone();
        let mut args = vec![
            "--fleet".to_string(),
            format!("redis://{}:{password}@198.18.{subnet}.1:6379/0", crate::redis::USER),
            "--fleet-name".into(),
            name.into(),
        ];
        args.extend(extra);
        Self::new(LabOptions {
            agent_args: args,
            with_postfix: false,
            edge_setup: Some(Box::new(move |edge: &Netns| link(&Netns::borrowed(redis_ns_name), edge, subnet).map(|_| ()))),
            ..Default::default()
        })
    }

    /// Starts the agent again with the same arguments (after a stop or a kill).
    pub fn restart_agent(&mut self, log_name: &str) -> Result<()> {
        let listen: SocketAddr = format!("{}:25", self.edge_end.v4).parse()?;
        self.agent = AgentProcess::start_with(&self.edge, &self.args, listen, self.dir.path().join(log_name), "debug", &self.launch)?;
        Ok(())
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.pins.path.join("helo")
    }

    pub fn admin_socket(&self) -> PathBuf {
        agent_admin_socket(self.dir.path())
    }

    pub fn state_dir(&self) -> PathBuf {
        agent_state_dir(self.dir.path())
    }

    /// `helo ARGS` from the root namespace (admin commands use the socket, not the network).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(crate::agent::binary()?).args(args).output()?)
    }

    /// `helo blocklist ARGS` against this lab's agent (or its store when it is down).
    pub fn blocklist(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec![
            "blocklist".to_string(),
            "--admin-socket".into(),
            self.admin_socket().display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            // With the agent down, changes go to this lab's pins, never the host's.
            "--pin-dir".into(),
            self.pin_dir().display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        Ok(Command::new(crate::agent::binary()?).args(&full).output()?)
    }

    /// `GET /metrics` from inside the edge namespace.
    pub fn scrape(&self) -> Result<String> {
        use std::io::{Read, Write};
        let addr: SocketAddr = format!("{}:9725", self.edge_end.v4).parse()?;
        self.edge.enter(move || -> Result<String> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: helo\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })?
    }

    pub fn postfix(&self) -> &Postfix {
        self.postfix.as_ref().expect("this lab has a Postfix")
    }

    /// Runs the Python client inside the client namespace and parses its JSON line.
    pub fn py(&self, mode: &str, args: &[&str]) -> Result<Value> {
        let out = self.client.command("python3").arg(CLIENT_SCRIPT).arg(mode).args(["--server", &self.edge_end.v4]).args(args).output()?;
        if !out.status.success() {
            bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn dialog(&self, lines: &[&str]) -> Result<Value> {
        let mut args = vec![];
        for l in lines {
            args.push("--line");
            args.push(l);
        }
        self.py("dialog", &args)
    }

    pub fn counters(&self) -> Result<helo_user::kernel::Counters> {
        let id = kernel_state::program_id_from_log(&self.agent.log_text()).context("agent logged no program id")?;
        kernel_state::counters(id)
    }

    /// Sockets on the agent's port that the agent still holds for `client_port`.
    pub fn agent_holds(&self, client_port: u64) -> Result<bool> {
        let out = self.edge.command("ss").args(["-tnpH"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().any(|l| l.contains(&format!(":{client_port} ")) && crate::agent::ss_line_is_agent(l)))
    }
}

/// The first whole reply of the `i`-th read of a dialog. A kernel-dropped greeting is answered
/// twice (once for the EHLO, once for the HELO fallback behind it), and both copies often arrive in
/// one read: this is the first.
pub fn reply(v: &Value, i: usize) -> String {
    let Some(read) = v["replies"][i].as_str() else { return "<none>".to_owned() };
    let mut first = String::new();
    for line in read.split_inclusive("\r\n") {
        first.push_str(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    first
}

/// Maildir files end lines with LF; the wire uses CRLF.
pub fn as_wire(maildir_file: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(maildir_file.len() + maildir_file.len() / 40);
    for &b in maildir_file {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
