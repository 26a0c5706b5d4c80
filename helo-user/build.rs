//! Builds the XDP program (helo-ebpf) with the nightly toolchain and bpf-linker, into OUT_DIR,
//! where `kernel::loader` embeds it.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helo-ebpf");
    let root = root.to_str().expect("UTF-8 path");
    println!("cargo:rerun-if-changed=../helo-common/src");
    aya_build::build_ebpf([aya_build::Package { name: "helo-ebpf", root_dir: root, ..Default::default() }], aya_build::Toolchain::Nightly)
}
