//! Removing a key from a map: an absent key is an answer (`false`), not an error.

use anyhow::Result;

/// `Ok(false)` when the key was not there: removing an absent entry is not an error here.
pub(super) fn remove_if_present(r: Result<(), aya::maps::MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
