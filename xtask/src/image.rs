//! `cargo xtask dist`'s container image: an OCI image built without a daemon (umoci), from
//! the release binary and the machine's own libraries, with `nft` for the DNS proxy's
//! steering table; labelled per the OCI conventions; checked with `skopeo inspect` and by
//! running the image's own binary and `nft` in its unpacked root.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::dist::check_output;

/// The image's name in the layout and in the Kubernetes manifests.
pub const NAME: &str = "fwd";

/// Programs in the image: fwd, and nft (the DNS proxy's steering table is written with it).
const PROGRAMS: [(&str, &str); 1] = [("/usr/sbin/nft", "usr/sbin/nft")];

/// The shared libraries `program` loads, as `ldd` resolves them on this machine (the image
/// is built from the same Debian the binaries were built on).
fn libraries(program: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let out = check_output(
        &format!("ldd {}", program.display()),
        Command::new("ldd").arg(program),
    )?;
    let mut libs = BTreeSet::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies `from` (following links) to `rootfs` + `to`.
fn put(rootfs: &Path, from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &dest)
        .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn umoci() -> Command {
    Command::new("umoci")
}

/// Builds the image into the OCI layout `out_dir/oci` as `fwd:VERSION`, and an
/// `oci-archive` of it (`skopeo copy oci-archive:... docker://REGISTRY/fwd:VERSION` pushes
/// it); returns the layout's path.
pub fn build(root: &Path, fwd: &Path, version: &str, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let layout = out_dir.join("oci");
    let bundle = out_dir.join("oci-bundle");
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let image = format!("{}:{version}", layout.display());
    check_output(
        "umoci init",
        umoci().args(["init", "--layout"]).arg(&layout),
    )?;
    check_output("umoci new", umoci().args(["new", "--image", &image]))?;
    check_output(
        "umoci unpack",
        umoci().args(["unpack", "--image", &image]).arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");

    put(&rootfs, fwd, Path::new("/usr/bin/fwd"), 0o755)?;
    // Without its symbols (as the Debian package's): the eBPF programs are data, and stay.
    check_output(
        "strip fwd",
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(rootfs.join("usr/bin/fwd")),
    )?;
    let mut libs = libraries(fwd)?;
    for (program, at) in PROGRAMS {
        put(&rootfs, Path::new(program), Path::new(at), 0o755)?;
        libs.extend(libraries(Path::new(program))?);
    }
    for lib in &libs {
        // Their own modes: the dynamic loader must stay executable.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(lib)?.permissions().mode() & 0o777;
        put(&rootfs, lib, lib, mode)?;
    }
    std::fs::create_dir_all(rootfs.join("etc/fwd/policies"))?;
    std::fs::write(
        rootfs.join("etc/fwd/fwd.toml"),
        super::deb::packaged_config(root)?,
    )?;
    let policies = root.join("policies");
    for entry in std::fs::read_dir(&policies)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap_or_default();
            put(
                &rootfs,
                &path,
                &Path::new("/usr/share/fwd/policies").join(name),
                0o644,
            )?;
        }
    }
    // The daemon's runtime and state directories (the DaemonSet mounts the host's there).
    for dir in ["run/fwd", "var/lib/fwd", "sys/fs/bpf", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    check_output(
        "umoci repack",
        umoci().args(["repack", "--image", &image]).arg(&bundle),
    )?;
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or_else(
            || {
                check_output(
                    "date",
                    Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
                )
            },
            |t| {
                check_output(
                    "date",
                    Command::new("date").args([
                        "-u",
                        "-d",
                        &format!("@{t}"),
                        "+%Y-%m-%dT%H:%M:%SZ",
                    ]),
                )
            },
        )?;
    let created = created.trim();
    let mut config = umoci();
    config
        .args(["config", "--image", &image])
        .args(["--config.entrypoint", "/usr/bin/fwd"])
        .args(["--config.cmd", "run", "--config.cmd", "--config"])
        .args(["--config.cmd", "/etc/fwd/fwd.toml"])
        .args(["--config.env", "FWD_LOG=info"])
        .args(["--config.workingdir", "/"])
        .args(["--created", created])
        .args(["--author", "fwd developers"]);
    for (key, value) in [
        ("org.opencontainers.image.title", "fwd"),
        (
            "org.opencontainers.image.description",
            "eBPF egress firewall for the allowlists video and telehealth vendors publish",
        ),
        ("org.opencontainers.image.version", version),
        ("org.opencontainers.image.created", created),
        ("org.opencontainers.image.licenses", "MIT OR Apache-2.0"),
        ("org.opencontainers.image.vendor", "fwd developers"),
        (
            "org.opencontainers.image.documentation",
            "/usr/share/doc/fwd/README.md in the Debian package; docs/operations.md",
        ),
    ] {
        config.args(["--config.label", &format!("{key}={value}")]);
    }
    check_output("umoci config", &mut config)?;
    check_output("umoci gc", umoci().args(["gc", "--layout"]).arg(&layout))?;
    std::fs::remove_dir_all(&bundle)?;

    let archive = out_dir.join(format!("fwd-{version}-oci.tar"));
    let _ = std::fs::remove_file(&archive);
    check_output(
        "skopeo copy to an oci-archive",
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{image}"))
            .arg(format!(
                "oci-archive:{}:{NAME}:{version}",
                archive.display()
            )),
    )?;
    Ok(layout)
}

/// Checks the image: `skopeo inspect` sees its labels, entrypoint and command; its root,
/// unpacked, runs its own `fwd check` on the packaged config and policies and its `nft`;
/// the Kubernetes base names this version.
pub fn verify(root: &Path, layout: &Path, version: &str, scratch: &Path) -> anyhow::Result<()> {
    let image = format!("{}:{version}", layout.display());
    let inspect: serde_json::Value = serde_json::from_str(&check_output(
        "skopeo inspect",
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{image}")),
    )?)
    .context("parsing skopeo inspect")?;
    let label = |k: &str| {
        inspect["Labels"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    if label("org.opencontainers.image.version") != version
        || label("org.opencontainers.image.title") != "fwd"
    {
        bail!(
            "the image's labels are not fwd {version}: {}",
            inspect["Labels"]
        );
    }
    let config: serde_json::Value = serde_json::from_str(&check_output(
        "skopeo inspect --config",
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{image}")),
    )?)
    .context("parsing skopeo inspect --config")?;
    let entrypoint = &config["config"]["Entrypoint"];
    let cmd = &config["config"]["Cmd"];
    if entrypoint != &serde_json::json!(["/usr/bin/fwd"])
        || cmd != &serde_json::json!(["run", "--config", "/etc/fwd/fwd.toml"])
    {
        bail!("the image runs {entrypoint} {cmd}, not /usr/bin/fwd run --config /etc/fwd/fwd.toml");
    }

    let _ = std::fs::remove_dir_all(scratch);
    check_output(
        "umoci unpack (to check the image's root)",
        umoci().args(["unpack", "--image", &image]).arg(scratch),
    )?;
    let rootfs = scratch.join("rootfs");
    let summary = check_output(
        "fwd check inside the image's root (chroot)",
        Command::new("chroot").arg(&rootfs).args([
            "/usr/bin/fwd",
            "check",
            "--config",
            "/etc/fwd/fwd.toml",
        ]),
    )?;
    check_output(
        "nft inside the image's root (chroot)",
        Command::new("chroot")
            .arg(&rootfs)
            .args(["/usr/sbin/nft", "--version"]),
    )?;
    let size: u64 = walk_size(&rootfs)?;
    std::fs::remove_dir_all(scratch)?;

    let kustomization = root.join("packaging/kubernetes/base/kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization)?;
    if !text.contains(&format!("newTag: \"{version}\"")) {
        bail!(
            "{} does not name the image of this version (images: newTag: \"{version}\")",
            kustomization.display()
        );
    }
    eprintln!(
        "xtask: verified: image {NAME}:{version} (skopeo inspect: OCI labels, entrypoint /usr/bin/fwd run); its root ({:.1} MiB unpacked) runs fwd check ({}) and nft; the Kubernetes base names {version}",
        size as f64 / (1024.0 * 1024.0),
        summary
            .lines()
            .find(|l| l.starts_with("compiled:"))
            .unwrap_or("ok")
    );
    Ok(())
}

/// Bytes of the regular files under `dir`.
fn walk_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += walk_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
