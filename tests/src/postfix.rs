//! A real Postfix as the backend: one self-contained instance per test, in its own directory,
//! listening inside a test namespace and delivering to Maildirs.
//!
//! Layout of the instance directory D (a temp dir; kept when `HELO_KEEP_TEST_DIRS=1`):
//!
//! ```text
//! D/etc/main.cf, master.cf, vmailbox   config_directory (+ key.pem, cert.pem with TLS)
//! D/queue/                               queue_directory: pid file, private/ and public/ sockets
//! D/data/                                data_directory: the master lock
//! D/maillog                              maillog_file (written by postlogd)
//! D/mail/<user@domain>/new/              one Maildir per configured address, owned by nobody
//! ```
//!
//! Two smtpd ports: `proxy_port` expects a PROXY header (`smtpd_upstream_proxy_protocol =
//! haproxy`), `plain_port` does not. Nothing is ever delivered outside: the only transports are
//! `virtual` (the Maildirs) and `error`. /etc/postfix is never touched. The instance stops on
//! drop, a panic included, and its processes are gone when the drop returns.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::{run, Netns};

const DAEMON_DIRECTORY: &str = "/usr/lib/postfix/sbin";
/// The uid and gid that own the Maildirs (nobody / nogroup).
const VIRTUAL_ID: u32 = 65534;
/// How long `start` waits for the master and for the ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `drop` waits for the processes to go after asking them to, before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What one instance serves.
#[derive(Clone, Debug)]
pub struct PostfixConfig {
    /// The namespace address(es) smtpd listens on (`inet_interfaces`): one address, or several
    /// separated by commas or spaces (v4 and v6 may be mixed).
    pub listen_ip: String,
    /// smtpd with `smtpd_upstream_proxy_protocol = haproxy`: for the agent.
    pub proxy_port: u16,
    /// Plain smtpd: for direct tests and clients that cannot send a PROXY header.
    pub plain_port: u16,
    /// `virtual_mailbox_domains`.
    pub domains: Vec<String>,
    /// Full addresses; each gets the Maildir `D/mail/<address>/`. Other recipients in `domains`
    /// are rejected with 550 5.1.1.
    pub users: Vec<String>,
    pub myhostname: String,
    /// Make a self-signed certificate (CN and SAN = `myhostname`) and offer STARTTLS on both ports.
    pub tls: bool,
    /// More `main.cf` lines, appended last (so they win): restrictions for a benchmark, say.
    pub extra_main_cf: Vec<String>,
    /// More `master.cf` lines, appended last: extra `smtp` transports of a sending instance.
    pub extra_master_cf: Vec<String>,
}

impl Default for PostfixConfig {
    /// Everything but `listen_ip`, which the test must set.
    fn default() -> Self {
        Self {
            listen_ip: String::new(),
            proxy_port: 10025,
            plain_port: 10026,
            domains: vec!["example.test".into()],
            users: vec!["user@example.test".into()],
            myhostname: "mx.example.test".into(),
            tls: false,
            extra_main_cf: vec![],
            extra_master_cf: vec![],
        }
    }
}

/// A running Postfix instance. Stopped on drop.
pub struct Postfix {
    // `Option` so that drop can keep it (`HELO_KEEP_TEST_DIRS=1`) after stopping the instance.
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    ns_name: String,
    cfg: PostfixConfig,
}

impl Postfix {
    /// Writes the instance's directory, starts the master inside `ns` and returns once every
    /// listen address accepts on both ports (probed from inside `ns`), or fails within about 10 s
    /// with the tail of the maillog.
    pub fn start(ns: &Netns, cfg: PostfixConfig) -> Result<Postfix> {
        let addrs = listen_addrs(&cfg)?;
        if cfg.proxy_port == cfg.plain_port {
            bail!("proxy_port and plain_port must differ (both {})", cfg.proxy_port);
        }
        for user in &cfg.users {
            let Some((_, domain)) = user.split_once('@') else {
                bail!("user {user:?} is not a full address");
            };
            if !cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                bail!("user {user:?} is not in one of the domains {:?}", cfg.domains);
            }
        }
        let tmp = tempfile::Builder::new().prefix("helo-postfix-").tempdir().context("creating the Postfix instance directory")?;
        let dir = tmp.path().to_path_buf();
        // From here on, drop cleans up whatever got started.
        let pf = Postfix { tmp: Some(tmp), dir, ns_name: ns.name.clone(), cfg };
        pf.write_instance().with_context(|| format!("preparing {}", pf.dir.display()))?;
        pf.start_master(ns)?;
        pf.wait_for_ports(ns, &addrs)?;
        Ok(pf)
    }

    /// The instance directory D.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &PostfixConfig {
        &self.cfg
    }

    /// `D/mail/<address>`, the Maildir for `user`: a full address, or the local part of exactly
    /// one configured address.
    pub fn maildir(&self, user: &str) -> PathBuf {
        let name = if user.contains('@') {
            user.to_string()
        } else {
            let prefix = format!("{user}@");
            let matches: Vec<&String> = self.cfg.users.iter().filter(|u| u.starts_with(&prefix)).collect();
            match matches.as_slice() {
                [one] => one.to_string(),
                _ => user.to_string(),
            }
        };
        self.dir.join("mail").join(name)
    }

    /// The delivered messages for `user` (files in its Maildir's `new/`), sorted by name, which
    /// starts with the delivery time in seconds.
    pub fn maildir_messages(&self, user: &str) -> Vec<PathBuf> {
        let new = self.maildir(user).join("new");
        let mut files: Vec<PathBuf> = match fs::read_dir(&new) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Waits until at least `n` messages were delivered to `user` and returns all of them.
    pub fn wait_for_messages(&self, user: &str, n: usize, timeout: Duration) -> Result<Vec<PathBuf>> {
        let deadline = Instant::now() + timeout;
        loop {
            let files = self.maildir_messages(user);
            if files.len() >= n {
                return Ok(files);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {n} messages delivered to {user} within {timeout:?} (in {}); maillog tail:\n{}",
                    files.len(),
                    self.maildir(user).join("new").display(),
                    self.maillog_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole maillog so far (empty if nothing was logged yet).
    pub fn maillog(&self) -> String {
        fs::read(self.dir.join("maillog")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the maillog.
    pub fn maillog_tail(&self, lines: usize) -> String {
        let log = self.maillog();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The master's pid, from `D/queue/pid/master.pid`, if it is our master and alive.
    pub fn master_pid(&self) -> Option<i32> {
        let pid = self.pid_file()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let etc = self.dir.join("etc");
        let ours = cmdline.split(|&b| b == 0).any(|arg| arg == etc.as_os_str().as_encoded_bytes());
        (ours && process_alive(pid)).then_some(pid)
    }

    fn pid_file(&self) -> Option<i32> {
        fs::read_to_string(self.dir.join("queue/pid/master.pid")).ok()?.trim().parse().ok()
    }

    fn write_instance(&self) -> Result<()> {
        let d = &self.dir;
        let cfg = &self.cfg;
        // Postfix's own users must reach into D: the temp dir is created 0700.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        let postfix = lookup_user("postfix")?;
        let postdrop = lookup_group("postdrop")?;

        let etc = d.join("etc");
        fs::create_dir(&etc)?;
        // The queue layout of /etc/postfix/postfix-files, which `postfix start` would create.
        let queue = d.join("queue");
        fs::create_dir(&queue)?;
        fs::set_permissions(&queue, fs::Permissions::from_mode(0o755))?;
        for (sub, mode, group) in [
            ("active", 0o700, None),
            ("bounce", 0o700, None),
            ("corrupt", 0o700, None),
            ("defer", 0o700, None),
            ("deferred", 0o700, None),
            ("flush", 0o700, None),
            ("hold", 0o700, None),
            ("incoming", 0o700, None),
            ("private", 0o700, None),
            ("saved", 0o700, None),
            ("trace", 0o700, None),
            ("maildrop", 0o730, Some(postdrop)),
            ("public", 0o710, Some(postdrop)),
        ] {
            let p = queue.join(sub);
            fs::create_dir(&p)?;
            chown(&p, Some(postfix), group)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
        fs::create_dir(queue.join("pid"))?; // root, 0755
        let data = d.join("data");
        fs::create_dir(&data)?;
        chown(&data, Some(postfix), None)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
        let mail = d.join("mail");
        fs::create_dir(&mail)?;
        chown(&mail, Some(VIRTUAL_ID), Some(VIRTUAL_ID))?;

        let mut vmailbox = String::new();
        for user in &cfg.users {
            vmailbox.push_str(&format!("{user} {user}/\n"));
        }
        fs::write(etc.join("vmailbox"), vmailbox)?;

        let dir = d.display();
        let mut main_cf = format!(
            "\
# Written by helo-tests: a self-contained instance; nothing is shared with /etc/postfix.
compatibility_level = 3.6
config_directory = {dir}/etc
queue_directory = {dir}/queue
data_directory = {dir}/data
command_directory = /usr/sbin
daemon_directory = {DAEMON_DIRECTORY}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = {myhostname}
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
inet_interfaces = {listen_ip}
inet_protocols = all
smtpd_peername_lookup = no
# No local delivery.
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
# Mail for the test domains goes to Maildirs; nothing else is ever delivered anywhere.
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = texthash:{dir}/etc/vmailbox
virtual_uid_maps = static:{VIRTUAL_ID}
virtual_gid_maps = static:{VIRTUAL_ID}
default_transport = error:5.7.1 helo-tests deliver nothing outside the test domains
relay_transport = error:5.7.1 helo-tests deliver nothing outside the test domains
# The test namespaces: no per-client limits (smtpd_client_event_limit_exceptions = $mynetworks).
mynetworks = 127.0.0.0/8 [::1]/128 198.18.0.0/15 [2001:2::]/48
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
",
            myhostname = cfg.myhostname,
            listen_ip = cfg.listen_ip,
            domains = cfg.domains.join(", "),
        );
        if cfg.tls {
            self.make_certificate()?;
            main_cf.push_str(&format!(
                "\
smtpd_tls_chain_files = {dir}/etc/key.pem, {dir}/etc/cert.pem
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
"
            ));
        }
        for line in &cfg.extra_main_cf {
            main_cf.push_str(line);
            main_cf.push('\n');
        }
        fs::write(etc.join("main.cf"), main_cf)?;

        // Every service with chroot n: nothing is copied into a jail.
        let master_cf = format!(
            "\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{proxy} inet    n       -       n       -       -       smtpd
  -o smtpd_upstream_proxy_protocol=haproxy
{plain} inet    n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
",
            proxy = cfg.proxy_port,
            plain = cfg.plain_port,
        );
        let mut master_cf = master_cf;
        for line in &cfg.extra_master_cf {
            master_cf.push_str(line);
            master_cf.push('\n');
        }
        fs::write(etc.join("master.cf"), master_cf)?;

        // A config file younger than a few seconds makes Postfix wait up to 2 s for it to settle.
        let main = etc.join("main.cf");
        let master = etc.join("master.cf");
        // The same holds for texthash: maps (measured: 2 s before smtpd answered its first client).
        let vmailbox = etc.join("vmailbox");
        run(Command::new("touch").args(["-d", "-1 min"]).arg(&main).arg(&master).arg(&vmailbox))?;
        Ok(())
    }

    fn make_certificate(&self) -> Result<()> {
        let etc = self.dir.join("etc");
        let name = &self.cfg.myhostname;
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-keyout")
            .arg(etc.join("key.pem"))
            .arg("-out")
            .arg(etc.join("cert.pem"))
            .stdin(Stdio::null()))
        .context("making the TLS certificate")?;
        fs::set_permissions(etc.join("key.pem"), fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// `master -w` daemonizes and returns once the master's sockets are bound (or it failed).
    fn start_master(&self, ns: &Netns) -> Result<()> {
        let mut child = ns
            .command(&format!("{DAEMON_DIRECTORY}/master"))
            .arg("-c")
            .arg(self.dir.join("etc"))
            .arg("-w")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the Postfix master")?;
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the Postfix master in {} did not report ready within {START_TIMEOUT:?}; maillog tail:\n{}",
                    self.dir.display(),
                    self.maillog_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            let out = child.wait_with_output()?;
            bail!(
                "the Postfix master in {} failed to start ({status}): {}{}\n`postfix check` says: {}\nmaillog tail:\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.check_output(),
                self.maillog_tail(30),
            );
        }
        Ok(())
    }

    /// Waits until both ports listen on every address (seen from inside the namespace, without
    /// connecting: a probe on the PROXY port would log a warning), then holds one real session
    /// on the plain port (banner, QUIT) so that smtpd is known to answer.
    /// What `postfix check` prints inside the namespace. Postfix writes its fatal errors at start
    /// (bad config, no such interface) to stderr only when stderr is a terminal, and not to the
    /// maillog, since postlogd is not running then: so run it under `script` for a pty.
    fn check_output(&self) -> String {
        let cmd = format!("/usr/sbin/postfix -c '{}' check", self.dir.join("etc").display());
        match Command::new("ip").args(["netns", "exec", &self.ns_name, "script", "-qec", &cmd, "/dev/null"]).stdin(Stdio::null()).output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
                if text.trim().is_empty() {
                    format!("nothing ({})", out.status)
                } else {
                    text.trim().to_string()
                }
            }
            Err(e) => format!("(could not run it: {e})"),
        }
    }

    fn wait_for_ports(&self, ns: &Netns, addrs: &[IpAddr]) -> Result<()> {
        let ports = [self.cfg.plain_port, self.cfg.proxy_port];
        let expected: Vec<SocketAddr> = addrs.iter().flat_map(|&ip| ports.map(|port| SocketAddr::new(ip, port))).collect();
        let probe = SocketAddr::new(addrs[0], self.cfg.plain_port);
        let deadline = Instant::now() + START_TIMEOUT;
        let outcome = ns.enter(move || -> std::result::Result<(), String> {
            loop {
                let listening = listening_sockets();
                let missing: Vec<&SocketAddr> = expected
                    .iter()
                    .filter(|a| !listening.iter().any(|l| l.port() == a.port() && (l.ip() == a.ip() || l.ip().is_unspecified())))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("nothing listens on {missing:?}"));
                }
                thread::sleep(Duration::from_millis(10));
            }
            smtp_banner_and_quit(probe, deadline).map_err(|e| format!("the plain port {probe} does not answer: {e:#}"))
        })?;
        if let Err(e) = outcome {
            bail!(
                "Postfix in {} (namespace {}) not ready after {START_TIMEOUT:?}: {e}; maillog tail:\n{}",
                self.dir.display(),
                self.ns_name,
                self.maillog_tail(30)
            );
        }
        Ok(())
    }

    /// Stops the instance: `postfix stop` inside the namespace, then SIGTERM and finally SIGKILL
    /// by pid if the master is still there, and waits until none of its processes is left.
    fn stop(&mut self) -> Result<()> {
        let Some(pid) = self.pid_file() else {
            return Ok(()); // never started
        };
        if self.master_pid().is_none() && group_members(pid).is_empty() {
            return Ok(()); // already gone
        }
        // `postfix stop` checks inet_interfaces, so it only works inside the namespace.
        if self.master_pid().is_some() && Path::new(&format!("/run/netns/{}", self.ns_name)).exists() {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns_name, "/usr/sbin/postfix", "-c"])
                .arg(self.dir.join("etc"))
                .arg("stop")
                .stdin(Stdio::null())
                .output();
        }
        // `postfix stop` only sends the master SIGTERM; do it ourselves if that did not work.
        if !wait_until(Duration::from_secs(2), || self.master_pid().is_none()) {
            // SAFETY: plain kill(2) on the pid of our own master (checked by master_pid).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let group_gone = wait_until(STOP_TIMEOUT, || group_members(pid).is_empty());
        if !group_gone {
            // The master is the leader of its session and process group; so are its children.
            // SAFETY: kill(2) on the process group the master led; members exist (checked above).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            if !wait_until(STOP_TIMEOUT, || group_members(pid).is_empty()) {
                bail!("Postfix processes {:?} of {} survived SIGKILL", group_members(pid), self.dir.display());
            }
            bail!("Postfix in {} did not stop within {STOP_TIMEOUT:?}; killed", self.dir.display());
        }
        Ok(())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("postfix: {e:#}");
        }
        let keep = std::env::var("HELO_KEEP_TEST_DIRS").is_ok_and(|v| v == "1");
        if let Some(tmp) = self.tmp.take() {
            if keep {
                let path = tmp.keep();
                let _ = writeln!(std::io::stderr(), "postfix: kept the instance directory {}", path.display());
            }
        }
    }
}

fn listen_addrs(cfg: &PostfixConfig) -> Result<Vec<IpAddr>> {
    let addrs: Vec<IpAddr> = cfg
        .listen_ip
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches('[').trim_end_matches(']').parse().with_context(|| format!("listen_ip {s:?}")))
        .collect::<Result<_>>()?;
    if addrs.is_empty() {
        bail!("PostfixConfig::listen_ip is empty: set it to the namespace address");
    }
    Ok(addrs)
}

/// TCP sockets in LISTEN state in the calling thread's network namespace.
fn listening_sockets() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/thread-self/net/tcp", false), ("/proc/thread-self/net/tcp6", true)] {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "0A" {
                continue;
            }
            let Some((ip_hex, port_hex)) = fields[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port_hex, 16) else {
                continue;
            };
            // The kernel prints the address as 32-bit words in host (little-endian) order.
            let words: Vec<u32> = (0..ip_hex.len() / 8).filter_map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16).ok()).collect();
            let ip: IpAddr = match (v6, words.as_slice()) {
                (false, [w]) => std::net::Ipv4Addr::from(w.swap_bytes()).into(),
                (true, [a, b, c, d]) => {
                    let mut bytes = [0u8; 16];
                    for (i, w) in [a, b, c, d].into_iter().enumerate() {
                        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                    }
                    std::net::Ipv6Addr::from(bytes).into()
                }
                _ => continue,
            };
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

/// Connects, reads the 220 banner, says QUIT and reads the 221.
fn smtp_banner_and_quit(addr: SocketAddr, deadline: Instant) -> Result<()> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let stream = TcpStream::connect_timeout(&addr, left())?;
    stream.set_read_timeout(Some(left()))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).context("reading the banner")?;
    if !line.starts_with("220 ") {
        bail!("banner {line:?}");
    }
    w.write_all(b"QUIT\r\n")?;
    line.clear();
    r.read_line(&mut line).context("reading the reply to QUIT")?;
    if !line.starts_with("221 ") {
        bail!("reply to QUIT {line:?}");
    }
    Ok(())
}

fn lookup_user(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam with a valid C string; the result is read at once, single use.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        bail!("no user {name:?}: is Postfix installed?");
    }
    // SAFETY: non-null pointer returned by getpwnam.
    Ok(unsafe { (*pw).pw_uid })
}

fn lookup_group(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: as in lookup_user.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        bail!("no group {name:?}: is Postfix installed?");
    }
    // SAFETY: non-null pointer returned by getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

/// Alive and not a zombie.
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state_and_pgrp(&stat).is_some_and(|(state, _)| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Live (non-zombie) processes in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_state_and_pgrp(&s))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// State and process group from /proc/PID/stat (the command may contain spaces and parentheses).
fn stat_state_and_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
