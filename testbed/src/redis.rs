//! A real redis-server from Debian in its own test namespace, with ACLs on (the default user
//! off, an `agent` user with a password), stopped on drop.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::{enter_named, Netns};

pub const USER: &str = "agent";
pub const PASSWORD: &str = "s3cret-fleet";
/// The ACL the README gives an edge box: only the `helo:` keys and the commands the agent uses.
pub const ACL: &str = "~helo:* resetchannels -@all +get +set +del +mget +scan +xadd +xread +xrange +xrevrange +multi +exec +ping +hello +auth +client|setname";

pub struct Redis {
    child: Option<Child>,
    ns_name: String,
    binds: Vec<String>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server in `ns` (listening on all of that namespace's addresses, which may be
    /// added later); `binds[0]` is the address clients and `cli` use.
    pub fn start(ns: &Netns, binds: &[String]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut r = Self { child: None, ns_name: ns.name.clone(), binds: binds.to_vec(), dir };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 0.0.0.0\nport 6379\nprotected-mode yes\ndaemonize no\ndir {}\nsave \"\"\nappendonly no\n\
                 user default off\nuser {USER} on >{PASSWORD} {ACL}\n",
                self.dir.path().display()
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "redis-server"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let addr: SocketAddr = format!("{}:6379", self.binds[0]).parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = loop {
            let ok = enter_named(&self.ns_name, move || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
            if ok.unwrap_or(false) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(50));
        };
        if !up {
            bail!("redis-server did not listen on {addr}");
        }
        Ok(())
    }

    /// `redis-cli ARGS` as the agent user, in Redis's namespace; its output (redis-cli exits 0
    /// even on errors, so callers check the text).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "redis-cli",
                "-h",
                &self.binds[0],
                "--user",
                USER,
                "--pass",
                PASSWORD,
                "--no-auth-warning",
            ])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child (ip netns exec became redis-server).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts it again, empty (no persistence): what a restart or a failover to an empty replica
    /// looks like to the boxes.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn url(&self, bind_index: usize, password: &str) -> String {
        format!("redis://{USER}:{password}@{}:6379/0", self.binds[bind_index])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
