//! Undoing a start that failed after the kernel was touched: the box is left as it was found.

use std::path::PathBuf;

use crate::{config::Config, kernel::pin};

/// Undoes a start that failed after the kernel was touched: pins this start created are removed
/// (a filter it attached and pinned is detached with them), and the admin socket goes.
pub(super) struct StartUndo {
    pin_dir: PathBuf,
    admin_socket: PathBuf,
    /// Nothing was pinned before: whatever is there now is this start's.
    pins_were_absent: bool,
    armed: bool,
}

impl StartUndo {
    pub(super) fn new(config: &Config) -> Self {
        let pins_were_absent = std::fs::read_dir(&config.pin_dir).map(|mut d| d.next().is_none()).unwrap_or(true);
        Self { pin_dir: config.pin_dir.clone(), admin_socket: config.admin_socket.clone(), pins_were_absent, armed: true }
    }

    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for StartUndo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = std::fs::remove_file(&self.admin_socket);
        if self.pins_were_absent {
            match pin::remove(&self.pin_dir) {
                Ok(true) => {
                    tracing::warn!("start failed: removed what it had pinned in {} (no filter is left attached)", self.pin_dir.display())
                }
                Ok(false) => {}
                Err(e) => tracing::error!("start failed, and removing its pins in {} failed too: {e:#}", self.pin_dir.display()),
            }
        } else {
            tracing::warn!(
                "start failed: the pins in {} were there before this start and stay (the filter keeps running on them)",
                self.pin_dir.display()
            );
        }
    }
}
