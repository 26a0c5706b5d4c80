//! What an instance delivered (its Maildirs) and logged (its maillog).

use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::Postfix;

impl Postfix {
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
}
