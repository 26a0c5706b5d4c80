//! `cargo xtask run -- ARGS`: setup (the build tools only), release build, then replace this
//! process with `target/release/helo ARGS`, so signals (Ctrl-C, SIGTERM) reach the agent
//! directly and it can detach the filter cleanly.

use std::{os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::Result;

use crate::{compile, proc, setup};

/// helo's subcommands take flags; a first argument that is a flag means the agent, `run`.
pub fn run(args: &[String]) -> Result<()> {
    // Checked first: attaching XDP needs root, and there is no point building for a minute first.
    proc::require_root("`cargo xtask run` (attaching the XDP program)")?;
    setup::run(setup::Scope::Build)?;
    compile::release()?;

    let mut cmd = Command::new(target_dir().join("release/helo"));
    if args.first().is_none_or(|a| a.starts_with("--")) {
        cmd.arg("run");
    }
    cmd.args(args);
    println!("$ {}", proc::display(&cmd));
    let err = cmd.exec();
    Err(anyhow::Error::new(err).context(format!("cannot exec `{}`", proc::display(&cmd))))
}

pub fn target_dir() -> PathBuf {
    // Relative CARGO_TARGET_DIR is relative to where cargo ran, the workspace root for us.
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => proc::workspace_root().join(d),
        None => proc::workspace_root().join("target"),
    }
}
