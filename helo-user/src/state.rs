//! The agent's state directory. For now it holds the SipHash key: chosen at random on first start
//! and kept, so a restarted agent hashes names exactly as the kernel map it finds was filled.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use anyhow::{bail, Context, Result};
use helo_common::HashKey;

const KEY_FILE: &str = "hash.key";

/// Reads the key, or makes and stores a new one. The file is written to a temporary name, synced
/// and renamed, so a crash never leaves a half-written key behind.
pub fn load_or_create_key(state_dir: &Path) -> Result<HashKey> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let path = state_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let Ok(bytes) = <[u8; 16]>::try_from(bytes.as_slice()) else {
                bail!("{} is not a 16-byte key; remove it to make a new one", path.display());
            };
            return Ok(HashKey::from_bytes(bytes));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let bytes: [u8; 16] = rand::random();
    let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(state_dir)?.sync_all()?;
    Ok(HashKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("helo-key-test-{}", std::process::id()));
        let a = load_or_create_key(&dir).unwrap();
        let b = load_or_create_key(&dir).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, HashKey::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
