//! Rebuild the XDP object when bpf-linker changes: the linker (and its LLVM) shapes the output.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
