//! A size-limited tmpfs in a test's own directory, for running the store on a filesystem that
//! fills up; unmounted on drop.

use std::{io::Write, path::PathBuf, process::Command};

use anyhow::Result;

pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `4m`) at `path`.
    pub fn mount(path: PathBuf, size: &str) -> Result<Self> {
        std::fs::create_dir_all(&path)?;
        crate::netns::run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(&path))?;
        Ok(Self { path })
    }

    /// Writes a file until the filesystem is full; returns its path (remove it to free the space).
    pub fn fill(&self) -> Result<PathBuf> {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler)?;
        let chunk = vec![0xa5u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let _ = f.sync_all();
        Ok(filler)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
