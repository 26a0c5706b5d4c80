//! What the agent tells its service manager (systemd's `Type=notify`, through `$NOTIFY_SOCKET`):
//! ready once the filter is attached and SMTP is accepted, reloading around a SIGHUP, stopping at
//! the end. Without `$NOTIFY_SOCKET` (a shell, a test) each call does nothing.

use sd_notify::NotifyState;

/// The start is complete: the XDP program is attached (or `--no-xdp`), the SMTP sockets listen
/// and the admin socket answers. `status` is what `systemctl status` shows beside the state.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP's reload begins; [`reloaded`] ends it.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// The reload ended, applied or refused: either way the agent runs on and is ready.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// The agent is draining its sessions and will exit.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A lost notification must not stop the agent: systemd then times the start out and says so,
/// which is the right place for the error to show.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("telling the service manager ({states:?}) failed: {e}");
    }
}
