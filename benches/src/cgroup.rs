//! CPU time of a whole server (every process of it, forked workers included), through a cgroup v1
//! `cpuacct` group: Postfix forks smtpd processes, so one pid's utime would undercount it.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

const ROOT: &str = "/sys/fs/cgroup/cpuacct";

/// A cpuacct group, removed on drop (once its processes are gone).
pub struct CpuGroup {
    path: PathBuf,
}

impl CpuGroup {
    pub fn new(name: &str) -> Result<Self> {
        if !std::path::Path::new(ROOT).join("cpuacct.usage").exists() {
            bail!("{ROOT} is not a cgroup v1 cpuacct hierarchy: the session benchmarks need it to measure CPU per session");
        }
        let path = PathBuf::from(ROOT).join(format!("helo-bench-{}-{name}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Moves every process of network namespace `ns` into the group; what they fork later is
    /// born in it.
    pub fn adopt_namespace(&self, ns: &str) -> Result<usize> {
        let out = Command::new("ip").args(["netns", "pids", ns]).output()?;
        let mut n = 0;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            // A process may have exited since it was listed.
            if fs::write(self.path.join("cgroup.procs"), pid).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// CPU time used by the group's processes so far, user and system, in nanoseconds.
    pub fn usage_ns(&self) -> Result<u64> {
        let text = fs::read_to_string(self.path.join("cpuacct.usage"))?;
        Ok(text.trim().parse()?)
    }
}

impl Drop for CpuGroup {
    /// Hands any process still inside back to the root group (a server may outlive its group by
    /// a moment), then removes the group.
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(PathBuf::from(ROOT).join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}
