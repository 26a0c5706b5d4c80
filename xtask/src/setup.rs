//! Idempotent setup of what a fresh Debian 12 machine of this kind lacks (see
//! ../shared/notes/toolchain.md): the nightly's rust-src, bpf-linker built against the nightly's
//! own libLLVM, and the Debian packages the tests use. Every step checks first, acts only if
//! needed, and prints one line saying which.

use std::{
    fs,
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::proc;

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Builds the Debian package from `[package.metadata.deb]`; 3.8.0 builds with our stable rustc.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// What packaging uses from Debian: dpkg-shlibdeps (dpkg-dev) for the package's library
/// dependencies, strip (binutils), and for the package test `systemd-analyze verify` (systemd;
/// it checks a unit offline, with no systemd running).
const PACKAGING_PACKAGES: &[&str] = &["dpkg-dev", "binutils", "systemd"];

/// What building the agent needs from Debian: OpenSSL's headers and pkg-config, for the fleet's
/// `rediss://` (redis-rs through native-tls and openssl-sys).
const BUILD_PACKAGES: &[&str] = &["libssl-dev", "pkg-config"];

/// What the tests and benches run besides the workspace's own code: Postfix as the real MTA (swaks
/// and its TLS modules as a client), Redis for fleet tests, the tools that build and inspect the
/// test namespaces, `setpriv` (util-linux) for the non-root admin test, and for the benchmarks a
/// font for the plots, trafgen (netsniff-ng), the socket-path generator, and HAProxy, the edge
/// an ISP would otherwise put in front of Postfix.
const TEST_PACKAGES: &[&str] = &[
    "postfix",
    "swaks",
    "libnet-ssleay-perl",
    "libio-socket-ssl-perl",
    "redis-server",
    "redis-tools",
    "iproute2",
    "nftables",
    "iptables",
    "tmux",
    "python3",
    "openssl",
    "procps",
    "fonts-dejavu-core",
    "util-linux",
    "ethtool",
    "netsniff-ng",
    "haproxy",
    // The system's Public Suffix List, which the agent reads in place of its compiled-in copy.
    "publicsuffix",
    // Debian's Prometheus 2.42 and promtool: the metrics tests scrape the agent with the real
    // server and check the exposition and the shipped alert rules with promtool.
    "prometheus",
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What building and running the agent needs: rust-src and bpf-linker.
    Build,
    /// That, plus the Debian packages the tests use.
    Everything,
}

pub fn run(scope: Scope) -> Result<()> {
    rust_src()?;
    if scope == Scope::Everything {
        lint_tools()?;
    }
    bpf_linker()?;
    debian_packages("building", BUILD_PACKAGES)?;
    if scope == Scope::Everything {
        debian_packages("the tests", TEST_PACKAGES)?;
        packaging()?;
    }
    Ok(())
}

/// What `cargo xtask package` (and the test of its package) needs beyond the build.
pub fn packaging() -> Result<()> {
    debian_packages("packaging", PACKAGING_PACKAGES)?;
    cargo_deb()
}

fn cargo_deb() -> Result<()> {
    let version = proc::probe(Command::new("cargo-deb").arg("--version")).unwrap_or_default();
    if version.split_whitespace().any(|w| w == CARGO_DEB_VERSION) {
        println!("setup: cargo-deb {CARGO_DEB_VERSION}: already installed");
        return Ok(());
    }
    let mut install = proc::cargo();
    // Outside the workspace, so its .cargo/config.toml does not apply to a crates.io build;
    // --force replaces another version.
    install.args(["install", &format!("cargo-deb@{CARGO_DEB_VERSION}"), "--locked", "--force"]).current_dir(std::env::temp_dir());
    proc::run(&mut install)?;
    println!("setup: cargo-deb {CARGO_DEB_VERSION}: built and installed");
    Ok(())
}

/// `-Z build-std=core` (used by aya-build for the bpfel target) needs the nightly's sources.
fn rust_src() -> Result<()> {
    let installed = proc::probe(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("`rustup component list --toolchain nightly` failed: is the nightly toolchain installed?")?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        println!("setup: rust-src (nightly): already installed");
        return Ok(());
    }
    proc::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    println!("setup: rust-src (nightly): installed");
    Ok(())
}

/// rustfmt and clippy for the default toolchain: `cargo xtask test` checks formatting and lints.
fn lint_tools() -> Result<()> {
    let installed = proc::probe(Command::new("rustup").args(["component", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = ["rustfmt", "clippy"].into_iter().filter(|c| !installed.lines().any(|l| l.trim().starts_with(c))).collect();
    if missing.is_empty() {
        println!("setup: rustfmt and clippy: already installed");
        return Ok(());
    }
    proc::run(Command::new("rustup").args(["component", "add"]).args(&missing))?;
    println!("setup: installed {}", missing.join(" "));
    Ok(())
}

/// bpf-linker links the eBPF object with LLVM, and must use the same LLVM as the nightly that
/// emits the bitcode. No prebuilt binary fits, so it is built from crates.io against the
/// nightly's own libLLVM, through a shim prefix that makes that library look like an LLVM
/// install (its build script links `-lLLVM` from `$LLVM_PREFIX/lib`).
fn bpf_linker() -> Result<()> {
    let lib = nightly_libllvm()?;
    let lib_name = file_name(&lib)?;
    let major = llvm_major(&lib_name)?;

    // The shim lives in $CARGO_HOME, next to the binary it serves: the build bakes the shim's
    // path into bpf-linker's RUNPATH, and bpf-linker is machine-wide (~/.cargo/bin), so the shim
    // must not go away with one clone's `cargo clean`.
    let shim = proc::cargo_home()?.join("helo-llvm-shim");
    let shim_lib = shim.join("lib");
    let marker = shim.join("bpf-linker.built-for");
    ensure_shim(&shim_lib, &lib, &lib_name)?;

    let version = proc::probe(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    let has_version = version.split_whitespace().any(|w| w == BPF_LINKER_VERSION);
    let built_for = fs::read_to_string(&marker).unwrap_or_default();
    if has_version && built_for.trim() == lib_name {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} (built for {lib_name}): already installed");
        return Ok(());
    }

    // The marker describes the installed binary; remove it first so a failed build cannot leave
    // a stale one claiming a match.
    let _ = fs::remove_file(&marker);
    let mut install = proc::cargo();
    install
        .env("LLVM_PREFIX", &shim)
        .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"])
        // --force: an existing 0.13.0 built for another LLVM counts as installed to cargo.
        .arg("--force")
        .args(["--no-default-features", "--features", &format!("llvm-{major}")])
        // Outside the workspace, so its .cargo/config.toml does not apply to a crates.io build.
        .current_dir(std::env::temp_dir());
    proc::run(&mut install)?;
    fs::write(&marker, format!("{lib_name}\n")).with_context(|| format!("writing {}", marker.display()))?;
    println!("setup: bpf-linker {BPF_LINKER_VERSION} (built for {lib_name}): built and installed");
    Ok(())
}

/// `$(rustc +nightly --print sysroot)/lib/libLLVM.so.<ver>-rust-<rustc ver>`. Found, not
/// hard-coded: it changes with every nightly update.
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = proc::probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed: is the nightly toolchain installed?")?;
    let dir = Path::new(sysroot.trim()).join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-")))
        .collect();
    found.sort();
    match found.len() {
        0 => bail!("no libLLVM.so.*-rust-* in {}: cannot build bpf-linker", dir.display()),
        1 => Ok(found.remove(0)),
        _ => bail!("several libLLVM.so.*-rust-* in {}: {found:?}", dir.display()),
    }
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned).with_context(|| format!("odd file name: {}", p.display()))
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22, for bpf-linker's `llvm-22` feature.
fn llvm_major(lib_name: &str) -> Result<u32> {
    lib_name
        .strip_prefix("libLLVM.so.")
        .and_then(|rest| rest.split(['.', '-']).next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read LLVM's major version from {lib_name}"))
}

/// SHIM/lib with `libLLVM.so` (what `-lLLVM` finds at link time) and `<the file's own name>` (its
/// soname, what the dynamic loader looks for at run time), both pointing at the nightly's file.
/// Links to an older nightly's library are removed.
fn ensure_shim(shim_lib: &Path, lib: &Path, lib_name: &str) -> Result<()> {
    fs::create_dir_all(shim_lib).with_context(|| format!("creating {}", shim_lib.display()))?;
    for entry in fs::read_dir(shim_lib)?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libLLVM.so.") && name != lib_name {
            fs::remove_file(entry.path())?;
        }
    }
    for link in ["libLLVM.so", lib_name] {
        let path = shim_lib.join(link);
        if fs::read_link(&path).ok().as_deref() == Some(lib) {
            continue;
        }
        let _ = fs::remove_file(&path);
        symlink(lib, &path).with_context(|| format!("linking {} -> {}", path.display(), lib.display()))?;
    }
    Ok(())
}

fn debian_packages(what: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        println!("setup: Debian packages for {what} ({}): already installed", packages.len());
        return Ok(());
    }
    proc::require_root(&format!("installing Debian packages ({})", missing.join(" ")))?;

    if missing.contains(&"postfix") {
        // Without this, postfix's install asks which mail setup to use. The tests write their
        // own config per instance, so the system one stays unconfigured.
        let answer = "postfix postfix/main_mailer_type select No configuration\n";
        let mut cmd = Command::new("debconf-set-selections");
        println!("$ echo '{}' | debconf-set-selections", answer.trim_end());
        let mut child = cmd.stdin(Stdio::piped()).spawn().context("cannot start debconf-set-selections")?;
        child.stdin.take().expect("piped").write_all(answer.as_bytes())?;
        let st = child.wait()?;
        if !st.success() {
            bail!("debconf-set-selections failed ({st})");
        }
    }
    proc::run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").arg("update"))?;
    proc::run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y"]).args(&missing))?;
    if missing.contains(&"postfix") {
        // The tests start their own instances inside namespaces; a system postfix must not hold
        // port 25 in the root namespace. With "No configuration" it normally is not running;
        // stopping it is the belt to that, and fails harmlessly when it is not running.
        let _ = proc::status(Command::new("postfix").arg("stop").stderr(Stdio::null()));
    }
    if missing.contains(&"haproxy") {
        // The benchmark runs its own HAProxy inside a namespace; the packaged service is not used.
        let _ = proc::status(Command::new("systemctl").args(["disable", "--now", "haproxy"]).stderr(Stdio::null()));
    }
    if missing.contains(&"prometheus") {
        // The tests run their own servers in namespaces; the packaged service is not needed. It
        // fails harmlessly where it is not running (or there is no systemd).
        let _ = proc::status(Command::new("systemctl").args(["disable", "--now", "prometheus"]).stderr(Stdio::null()));
    }
    println!("setup: Debian packages for {what}: installed {}", missing.join(" "));
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    proc::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).is_some_and(|s| s.trim() == "install ok installed")
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn major_from_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly").unwrap(), 22);
        assert_eq!(llvm_major("libLLVM.so.23-rust-1.99.0-nightly").unwrap(), 23);
        assert!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so").is_err());
    }
}
