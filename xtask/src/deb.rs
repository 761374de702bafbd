//! `cargo xtask dist`'s Debian package: the generated parts (manual pages and shell
//! completions from fwd's clap definitions, the packaged config), `cargo deb` with the
//! metadata in fwd-userspace/Cargo.toml, and the checks: its contents, lintian, and an
//! install, upgrade, remove and purge into a scratch root (never the machine's own).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::dist::check_output;

/// Where `[package.metadata.deb]` takes the generated assets from.
const GENERATED: &str = "target/dist/deb";

/// What the package must hold (besides the vendor policies and manual pages).
const CONTENTS: [&str; 11] = [
    "./usr/bin/fwd",
    "./usr/lib/systemd/system/fwd.service",
    "./etc/fwd/fwd.toml",
    "./usr/share/fwd/grafana/fwd.json",
    "./usr/share/fwd/prometheus/fwd-alerts.yml",
    "./usr/share/man/man1/fwd.1.gz",
    "./usr/share/man/man1/fwd-check.1.gz",
    "./usr/share/bash-completion/completions/fwd",
    "./usr/share/zsh/vendor-completions/_fwd",
    "./usr/share/fish/vendor_completions.d/fwd.fish",
    "./usr/share/doc/fwd/copyright",
];

/// The packaged config: the tarball's, with the package's vendor policies under the site's.
pub fn packaged_config(root: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join("packaging/fwd.toml"))?;
    let commented = "# vendor_policy_dir = \"/usr/share/fwd/policies\"";
    if !text.contains(commented) {
        bail!("packaging/fwd.toml no longer has the line `{commented}` the package turns on");
    }
    Ok(text.replace(commented, "vendor_policy_dir = \"/usr/share/fwd/policies\""))
}

/// gzip -9n: no name, no time, so the package does not change with the build's clock.
fn gzip(from: &Path, to: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(from)?;
    let file = std::fs::File::create(to)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    gz.write_all(&data)?;
    gz.finish()?;
    Ok(())
}

/// Writes the generated assets: `fwd man`, `fwd completions`, the config.
fn generate(root: &Path, fwd: &Path) -> anyhow::Result<()> {
    let dir = root.join(GENERATED);
    let _ = std::fs::remove_dir_all(&dir);
    let (man, completions) = (dir.join("man"), dir.join("completions"));
    std::fs::create_dir_all(&completions)?;
    check_output(
        "fwd man",
        Command::new(fwd).arg("man").arg(dir.join("man-plain")),
    )?;
    std::fs::create_dir_all(&man)?;
    for page in std::fs::read_dir(dir.join("man-plain"))? {
        let page = page?.path();
        let name = page.file_name().unwrap_or_default().to_string_lossy();
        gzip(&page, &man.join(format!("{name}.gz")))?;
    }
    for (shell, file) in [("bash", "fwd"), ("zsh", "_fwd"), ("fish", "fwd.fish")] {
        let script = check_output(
            &format!("fwd completions {shell}"),
            Command::new(fwd).args(["completions", shell]),
        )?;
        std::fs::write(completions.join(file), script)?;
    }
    std::fs::write(dir.join("fwd.toml"), packaged_config(root)?)?;
    Ok(())
}

/// Builds `fwd_VERSION_ARCH.deb` into `out_dir` from the release binary at `fwd`.
pub fn build(root: &Path, fwd: &Path, version: &str, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let changelog = root.join("packaging/debian/changelog");
    let top = std::fs::read_to_string(&changelog)?;
    let want = format!("fwd ({version}-1) ");
    if !top.starts_with(&want) {
        bail!(
            "{} does not begin with an entry for this version (`{want}...`): add one for {version}",
            changelog.display()
        );
    }
    generate(root, fwd)?;
    let out = check_output(
        "cargo deb",
        super::cargo()
            .args([
                "deb",
                "--package",
                "fwd-userspace",
                "--no-build",
                "--output",
            ])
            .arg(out_dir),
    )?;
    // cargo deb prints the package's path last.
    let deb = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not say where it wrote the package")?;
    Ok(deb)
}

/// A dpkg database in `root`, as `dpkg --root` needs it.
fn scratch_root(root: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(root);
    let db = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers", "alternatives"] {
        std::fs::create_dir_all(db.join(dir))?;
    }
    std::fs::write(db.join("status"), "")?;
    std::fs::write(db.join("available"), "")?;
    Ok(())
}

/// `dpkg` acting on the scratch root: scripts run unchrooted with DPKG_ROOT set (the
/// package's scripts then touch only that root), dependencies are the machine's business.
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        // A question (a conffile prompt) fails the step instead of waiting.
        .stdin(std::process::Stdio::null());
    cmd
}

/// Checks the package: its contents, lintian, and an install, upgrade (the same version
/// again), remove and purge into a scratch root under `scratch`.
pub fn verify(deb: &Path, scratch: &Path) -> anyhow::Result<()> {
    let listing = check_output(
        "dpkg-deb --contents",
        Command::new("dpkg-deb").arg("-c").arg(deb),
    )?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in CONTENTS {
        if !paths.contains(&want) {
            bail!("{} does not hold {want}:\n{listing}", deb.display());
        }
    }
    let policies = paths
        .iter()
        .filter(|p| p.starts_with("./usr/share/fwd/policies/") && p.ends_with(".toml"))
        .count();
    if policies == 0 || paths.iter().any(|p| p.starts_with("./etc/fwd/policies/")) {
        bail!("the vendor policies belong in /usr/share/fwd/policies, and only there:\n{listing}");
    }
    let conffiles = check_output(
        "dpkg-deb --info conffiles",
        Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"),
    )?;
    if conffiles.lines().map(str::trim).collect::<Vec<_>>() != ["/etc/fwd/fwd.toml"] {
        bail!("the package's conffiles are {conffiles:?}, not /etc/fwd/fwd.toml alone");
    }
    eprintln!(
        "xtask: verified: {} holds the binary, unit, config (the one conffile), {policies} vendor policies, manual pages, completions, dashboard and alert rules",
        deb.display()
    );

    crate::dist::check_scripts("packaging/debian", &["postinst", "prerm", "postrm"])?;
    if super::succeeds(Command::new("lintian").arg("--version")) {
        check_output(
            "lintian",
            Command::new("lintian")
                .args(["--fail-on", "error,warning", "--suppress-tags-from-file"])
                .arg(super::workspace_root().join("packaging/debian/lintian-overrides"))
                .arg(deb),
        )?;
        eprintln!("xtask: verified: lintian (errors and warnings fail it)");
    } else {
        eprintln!(
            "xtask: lintian not found (cargo xtask setup installs it); the package was not linted"
        );
    }

    let root = scratch.join("root");
    scratch_root(&root)?;
    check_output(
        "dpkg --install into a scratch root",
        dpkg(&root).arg("--install").arg(deb),
    )?;
    for path in CONTENTS {
        if !root.join(path).exists() {
            bail!("installing did not put {path} into the scratch root");
        }
    }
    if !root.join("etc/fwd/policies").is_dir() {
        bail!("postinst did not make /etc/fwd/policies for the site's policies");
    }
    // The packaged config with the package's policies compiles with the packaged binary.
    let config = root.join("etc/fwd/fwd.toml");
    let in_root = std::fs::read_to_string(&config)?
        .replace(
            "/usr/share/fwd/policies",
            &root.join("usr/share/fwd/policies").to_string_lossy(),
        )
        .replace(
            "\"/etc/fwd/policies\"",
            &format!("{:?}", root.join("etc/fwd/policies")),
        );
    let check_config = scratch.join("check.toml");
    std::fs::write(&check_config, in_root)?;
    check_output(
        "fwd check of the installed config and policies",
        Command::new(root.join("usr/bin/fwd"))
            .args(["check", "--config"])
            .arg(&check_config),
    )?;
    // An upgrade keeps the site's edits to its config.
    let edited = format!(
        "{}\n# edited by the site\n",
        std::fs::read_to_string(&config)?
    );
    std::fs::write(&config, &edited)?;
    check_output(
        "dpkg --install again (an upgrade)",
        dpkg(&root).arg("--install").arg(deb),
    )?;
    if std::fs::read_to_string(&config)? != edited {
        bail!("an upgrade overwrote the site's /etc/fwd/fwd.toml");
    }
    // Remove: the files go, the config stays; purge: the config and fwd's state go.
    std::fs::create_dir_all(root.join("var/lib/fwd"))?;
    std::fs::write(root.join("var/lib/fwd/learned.json"), "{}")?;
    check_output("dpkg --remove", dpkg(&root).args(["--remove", "fwd"]))?;
    if root.join("usr/bin/fwd").exists() || !config.exists() {
        bail!("removing should take the binary and keep /etc/fwd/fwd.toml");
    }
    check_output("dpkg --purge", dpkg(&root).args(["--purge", "fwd"]))?;
    if config.exists() || root.join("var/lib/fwd").exists() {
        bail!("purging should take /etc/fwd/fwd.toml and /var/lib/fwd");
    }
    eprintln!(
        "xtask: verified: dpkg --root install (config compiles), upgrade (keeps an edited config), remove (keeps it), purge (takes it and /var/lib/fwd)"
    );
    std::fs::remove_dir_all(scratch)?;
    Ok(())
}
