//! Kernel and namespace tests need root. Run by hand without it they say so and return; under
//! CI (CI=true) they fail instead, so a green CI run always means they ran.

pub fn is_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// `true` when the caller may go on. Without root: panics under CI, else prints why and returns
/// `false` so the test can return early.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if is_ci() {
        panic!("{test} needs root (CAP_BPF, CAP_NET_ADMIN), and CI=true forbids skipping it");
    }
    eprintln!("SKIPPED {test}: needs root; run `cargo xtask test` as root");
    false
}
