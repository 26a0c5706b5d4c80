//! The release build. Building `helo-user` (the `helo` binary) also builds the XDP program: its build.rs runs
//! aya-build, which compiles `helo-ebpf` with the nightly toolchain and bpf-linker and embeds it.

use anyhow::Result;

use crate::proc;

pub fn release() -> Result<()> {
    proc::run(proc::cargo().args(["build", "--release", "-p", "helo-user"]))
}
