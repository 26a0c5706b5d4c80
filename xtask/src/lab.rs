//! `cargo xtask lab [--duration S] [--no-tui]`: setup, build, then replace this process with the
//! lab (`helo-lab`, the `lab` crate), which builds its namespaces, runs the agent, Postfix and
//! a mix of traffic, shows `helo top`, and removes everything it made when it ends.

use std::{os::unix::process::CommandExt, process::Command};

use anyhow::Result;

use crate::{compile, proc, run::target_dir, setup};

pub fn run(args: &[String]) -> Result<()> {
    proc::require_root("`cargo xtask lab` (namespaces and XDP)")?;
    setup::run(setup::Scope::Everything)?;
    compile::release()?;
    proc::run(proc::cargo().args(["build", "--release", "-p", "helo-lab", "--bin", "helo-lab"]))?;
    let mut cmd = Command::new(target_dir().join("release/helo-lab"));
    cmd.args(args);
    println!("$ {}", proc::display(&cmd));
    let err = cmd.exec();
    Err(anyhow::Error::new(err).context(format!("cannot exec `{}`", proc::display(&cmd))))
}
