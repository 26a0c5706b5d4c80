//! `cargo xtask package`: the Debian package, `target/debian/helo_<version>-1_<arch>.deb`.
//!
//! cargo-deb reads `[package.metadata.deb]` in helo-user/Cargo.toml and runs with `--no-build`:
//! the release build is ours (it needs the eBPF toolchain), and so are the assets cargo cannot
//! make, the man pages and completions, which the built binary writes from its own clap
//! definitions (`helo generate`).

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{compile, proc, run::target_dir, setup};

/// Setup, release build, then the package. Returns its path.
pub fn run() -> Result<PathBuf> {
    setup::run(setup::Scope::Build)?;
    setup::packaging()?;
    compile::release()?;
    build()
}

/// The package from the release binary already built.
pub fn build() -> Result<PathBuf> {
    let release = target_dir().join("release");
    // Where the metadata's `target/release/package/...` assets point.
    let assets = release.join("package");
    if assets.exists() {
        std::fs::remove_dir_all(&assets).with_context(|| format!("removing {}", assets.display()))?;
    }
    proc::run(Command::new(release.join("helo")).arg("generate").arg(&assets).stdout(std::process::Stdio::null()))?;
    // Debian ships man pages compressed; -n keeps the name and time out, so equal input gives
    // equal bytes.
    let pages: Vec<PathBuf> = std::fs::read_dir(assets.join("man"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    if pages.is_empty() {
        bail!("`helo generate` wrote no man pages");
    }
    proc::run(Command::new("gzip").args(["-9nf"]).args(&pages))?;

    let out = proc::cargo()
        .args(["deb", "-p", "helo-user", "--no-build"])
        .output()
        .context("cannot start `cargo deb` (setup installs it: cargo install cargo-deb)")?;
    if !out.status.success() {
        bail!("`cargo deb -p helo-user --no-build` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // cargo-deb prints the package's path as its last line.
    let path = String::from_utf8_lossy(&out.stdout).lines().last().map(PathBuf::from).context("cargo deb printed no path")?;
    println!("package: {}", path.display());
    Ok(path)
}
