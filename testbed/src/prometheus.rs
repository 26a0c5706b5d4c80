//! Debian's real Prometheus server and `promtool`, for checking that the agent's `/metrics` is
//! what stock Prometheus accepts. The server runs in a test namespace, scrapes once a second,
//! and is killed on drop.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::netns::{enter_named, Netns};

pub struct Prometheus {
    child: std::sync::Mutex<Child>,
    ns_name: String,
    pub web: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// A plain HTTP/1.0 GET from inside `ns_name`; returns (head, body).
pub fn http_get(ns_name: &str, addr: SocketAddr, path: &str, headers: &str) -> Result<(String, String)> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n");
    let text = enter_named(ns_name, move || -> Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    Ok((head.to_owned(), body.to_owned()))
}

impl Prometheus {
    /// Starts `prometheus` in `ns`, listening on `web`, scraping `target` every second.
    pub fn start(ns: &Netns, web: SocketAddr, target: SocketAddr) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: helo\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        Ok(Self { child: std::sync::Mutex::new(child), ns_name: ns.name.clone(), web, dir })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API; the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let encoded: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (_, body) = http_get(&self.ns_name, self.web, &format!("/api/v1/query?query={encoded}"), "")?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("query {promql} failed: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits (bounded) until `promql` returns a sample whose value satisfies `ok`; that value.
    pub fn wait_for(&self, promql: &str, within: Duration, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Some(status) = self.child_status() {
                bail!("prometheus exited ({status}): {}", self.log_text());
            }
            match self.query(promql) {
                Ok(result) => {
                    let value = result.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok());
                    if let Some(v) = value.filter(|v| ok(*v)) {
                        return Ok(v);
                    }
                    last = format!("{result:?}");
                }
                Err(e) => last = format!("{e:#}"),
            }
            thread::sleep(Duration::from_millis(250));
        }
        bail!("{promql}: not satisfied within {within:?} (last: {last}); prometheus log:\n{}", self.log_text())
    }

    fn child_status(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait().ok().flatten()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `promtool ARGS` with `stdin` fed in; (success, stdout + stderr).
pub fn promtool(args: &[&str], stdin: &str) -> Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool (Debian package `prometheus`)")?;
    child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)))
}
