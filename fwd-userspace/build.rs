//! Builds the kernel programs (`fwd-ebpf`, target bpfel-unknown-none, nightly) and leaves the
//! object in OUT_DIR, where `datapath` embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "fwd-ebpf")
        .ok_or_else(|| anyhow!("fwd-ebpf package not found in the workspace"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent directory for {}", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building fwd-ebpf (needs `cargo xtask setup`: nightly rust-src and bpf-linker)")
}
