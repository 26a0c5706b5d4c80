//! The instance directory: `main.cf`, `master.cf`, the virtual mailboxes and the TLS certificate.

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::{chown, PermissionsExt},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::netns::run;

use super::{Postfix, DAEMON_DIRECTORY, VIRTUAL_ID};

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

impl Postfix {
    pub(super) fn write_instance(&self) -> Result<()> {
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

    pub(super) fn make_certificate(&self) -> Result<()> {
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
}

pub(super) fn listen_addrs(cfg: &PostfixConfig) -> Result<Vec<IpAddr>> {
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

pub(super) fn lookup_user(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam with a valid C string; the result is read at once, single use.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        bail!("no user {name:?}: is Postfix installed?");
    }
    // SAFETY: non-null pointer returned by getpwnam.
    Ok(unsafe { (*pw).pw_uid })
}

pub(super) fn lookup_group(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: as in lookup_user.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        bail!("no group {name:?}: is Postfix installed?");
    }
    // SAFETY: non-null pointer returned by getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}
