//! Builds the kernel programs (`fwd-ebpf`, target bpfel-unknown-none, nightly) and leaves the
//! object in OUT_DIR, where `datapath` embeds it.
//!
//! Without the `ebpf` feature (only the fuzz targets turn it off) the object is empty: no
//! nightly or bpf-linker is needed, edits to fwd-ebpf do not rebuild the parser's fuzzers,
//! and `Datapath::load` reports that this build has no programs.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        println!("cargo:rerun-if-changed=build.rs");
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        let object = out_dir.join("fwd-ebpf");
        return std::fs::write(&object, [])
            .with_context(|| format!("writing the empty eBPF object {}", object.display()));
    }
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
