//! `cargo xtask dist`'s RPM: cargo-generate-rpm with the metadata in
//! fwd-userspace/Cargo.toml, from the parts the Debian build generated (manual pages,
//! completions, the packaged config); checked with rpm's own queries and an install and
//! erase into a scratch root (without scriptlets, which would run chrooted there).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::dist::check_output;

/// Builds `fwd-VERSION-1.ARCH.rpm` into `out_dir` (after `deb::build`, whose generated parts
/// it packages too).
pub fn build(version: &str, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let arch = std::env::consts::ARCH;
    let rpm = out_dir.join(format!("fwd-{version}-1.{arch}.rpm"));
    let _ = std::fs::remove_file(&rpm);
    check_output(
        "cargo generate-rpm",
        super::cargo()
            .args(["generate-rpm", "--package", "fwd-userspace", "--output"])
            .arg(out_dir),
    )?;
    if !rpm.is_file() {
        bail!("cargo generate-rpm did not write {}", rpm.display());
    }
    Ok(rpm)
}

fn rpm() -> Command {
    Command::new("rpm")
}

/// `rpm` acting on the scratch root `root`.
fn rpm_in(root: &Path) -> Command {
    let mut cmd = rpm();
    cmd.arg("--root").arg(root);
    cmd
}

/// Checks the package: its files, its one config file, its scriptlets (`sh -n`, and that
/// removal detaches), and an install, config edit and erase into a scratch root.
pub fn verify(package: &Path, scratch: &Path) -> anyhow::Result<()> {
    let files = check_output("rpm -qlp", rpm().arg("-qlp").arg(package))?;
    for want in [
        "/usr/bin/fwd",
        "/usr/lib/systemd/system/fwd.service",
        "/etc/fwd/fwd.toml",
        "/usr/share/fwd/grafana/fwd.json",
        "/usr/share/fwd/prometheus/fwd-alerts.yml",
        "/usr/share/man/man1/fwd.1.gz",
        "/usr/share/bash-completion/completions/fwd",
        "/usr/share/fwd/policies/zoom.toml",
    ] {
        if !files.lines().any(|l| l.trim() == want) {
            bail!("{} does not hold {want}:\n{files}", package.display());
        }
    }
    let config = check_output("rpm -qpc", rpm().arg("-qpc").arg(package))?;
    if config.lines().map(str::trim).collect::<Vec<_>>() != ["/etc/fwd/fwd.toml"] {
        bail!("the package's config files are {config:?}, not /etc/fwd/fwd.toml alone");
    }
    let scripts = check_output(
        "rpm -qp --scripts",
        rpm().args(["-qp", "--scripts"]).arg(package),
    )?;
    if !scripts.contains("fwd detach --config /etc/fwd/fwd.toml") {
        bail!("the package's preuninstall does not detach fwd:\n{scripts}");
    }
    crate::dist::check_scripts("packaging/rpm", &["post", "preun", "postun"])?;

    let _ = std::fs::remove_dir_all(scratch);
    let root = scratch.join("root");
    std::fs::create_dir_all(&root)?;
    check_output("rpm --initdb", rpm_in(&root).arg("--initdb"))?;
    check_output(
        "rpm -i into a scratch root",
        rpm_in(&root)
            .args(["-i", "--nodeps", "--noscripts", "--nosignature"])
            .arg(package),
    )
    .context("the scriptlets are not run: they would run chrooted in a root without a shell")?;
    let installed = root.join("etc/fwd/fwd.toml");
    if !root.join("usr/bin/fwd").is_file() || !installed.is_file() {
        bail!("rpm -i did not install /usr/bin/fwd and /etc/fwd/fwd.toml into the scratch root");
    }
    // An edited config outlives the package's removal (saved as .rpmsave).
    let edited = format!(
        "{}\n# edited by the site\n",
        std::fs::read_to_string(&installed)?
    );
    std::fs::write(&installed, &edited)?;
    check_output(
        "rpm -e in the scratch root",
        rpm_in(&root).args(["-e", "--noscripts", "fwd"]),
    )?;
    let saved = root.join("etc/fwd/fwd.toml.rpmsave");
    if root.join("usr/bin/fwd").exists()
        || std::fs::read_to_string(&saved).ok().as_deref() != Some(edited.as_str())
    {
        bail!("rpm -e should remove the binary and keep the edited config as fwd.toml.rpmsave");
    }
    eprintln!(
        "xtask: verified: {} (files, one config file, scriptlets that detach on removal; rpm -i and -e in a scratch root keep an edited config)",
        package.display()
    );
    std::fs::remove_dir_all(scratch)?;
    Ok(())
}
