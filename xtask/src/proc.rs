//! Small helpers shared by the commands: where the workspace is, running commands visibly, root.

use std::{
    env,
    ffi::OsStr,
    path::PathBuf,
    process::{Command, ExitStatus},
};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask always lives in `<root>/xtask`, so this holds for any clone.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// The cargo that runs us (cargo sets `CARGO` for `cargo run`), so nested builds use the same
/// toolchain; plain `cargo` otherwise.
pub fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// `$CARGO_HOME`, where `cargo install` puts binaries.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(h) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(h));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `cargo install` writes bpf-linker to `$CARGO_HOME/bin`, and rustc (run by aya-build) looks it
/// up on PATH; a machine whose cargo is on PATH by another route would otherwise never find it.
pub fn ensure_cargo_bin_on_path() {
    let Ok(bin) = cargo_home().map(|h| h.join("bin")) else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // Single-threaded at this point: nothing else reads the environment concurrently.
        env::set_var("PATH", joined);
    }
}

/// The command line as a shell would show it, for the `$ ...` line printed before each command.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> =
        cmd.get_envs().filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy()))).collect();
    let program = cmd.get_program().to_string_lossy();
    // Show `cargo`, not the toolchain's full path that `CARGO` holds.
    parts.push(if program.ends_with("/cargo") { "cargo".into() } else { program.into_owned() });
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints `$ CMD`, runs it with the terminal attached, and returns its status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    cmd.status().with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Like [`status`], but a failure is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", display(cmd));
    }
    Ok(())
}

/// Runs a command quietly (a check, not an action) and returns its stdout, or None if it could
/// not start or failed.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a clear message unless we are root.
pub fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!("{why} needs root: run it as root (e.g. `sudo -E cargo xtask ...`)");
    }
    Ok(())
}
