//! The agent's state directory: root-only, it holds the store (see [`crate::store`]).

use std::{fs, os::unix::fs::DirBuilderExt, path::Path};

use anyhow::{Context, Result};

/// Creates the directory (mode 0700) if it is missing.
pub fn ensure_dir(state_dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))
}
