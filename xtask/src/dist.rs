//! `cargo xtask dist`: an installable tarball of the release `fwd`, laid out as a filesystem
//! root, with an `install.sh` that never overwrites a site's config or policies; and the
//! Debian package (`deb.rs`), the RPM (`rpm.rs`) and the OCI image (`image.rs`).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use flate2::{Compression, write::GzEncoder};

/// What goes into a tarball entry.
enum Source {
    File(PathBuf),
    Text(&'static str),
}

struct Entry {
    /// Relative to the tarball's root, e.g. `usr/bin/fwd`.
    path: String,
    mode: u32,
    source: Source,
}

/// Installs the unpacked tarball into `/` (or `$DESTDIR`). Files under /etc are the site's:
/// one that exists is kept, and a differing packaged version is put next to it as
/// `NAME.new` (which `fwd` does not read: policy files must end in `.toml`).
const INSTALL_SH: &str = r#"#!/bin/sh
# Installs fwd from this unpacked tarball into / (or into $DESTDIR if set), as root:
#
#   mkdir fwd && tar -C fwd -xzf fwd-VERSION-ARCH.tar.gz && sudo fwd/install.sh
#
# The binary, the systemd unit, the Grafana dashboard and the README are replaced. The config
# /etc/fwd/fwd.toml and the policies in /etc/fwd/policies/ are the site's: an existing file
# is never overwritten; if the packaged one differs it is installed beside it as FILE.new
# (fwd reads only *.toml), so `diff FILE FILE.new` shows what changed.
# (Do not unpack the tarball straight into /: that would overwrite the config.)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest=${DESTDIR:-}

install -d -m 0755 "$dest/usr/bin" "$dest/usr/lib/systemd/system" \
    "$dest/usr/share/fwd/grafana" "$dest/usr/share/doc/fwd" "$dest/etc/fwd/policies"
install -m 0755 "$here/usr/bin/fwd" "$dest/usr/bin/fwd"
install -m 0644 "$here/usr/lib/systemd/system/fwd.service" "$dest/usr/lib/systemd/system/fwd.service"
install -m 0644 "$here/usr/share/fwd/grafana/fwd.json" "$dest/usr/share/fwd/grafana/fwd.json"
install -m 0644 "$here/usr/share/doc/fwd/README.md" "$dest/usr/share/doc/fwd/README.md"

# conffile SRC DST: install SRC as DST unless DST exists.
conffile() {
    if [ ! -e "$2" ]; then
        install -m 0644 "$1" "$2"
        echo "installed $2"
    elif ! cmp -s "$1" "$2"; then
        install -m 0644 "$1" "$2.new"
        echo "kept $2 (yours); the packaged version is $2.new"
    fi
}
conffile "$here/etc/fwd/fwd.toml" "$dest/etc/fwd/fwd.toml"
for policy in "$here"/etc/fwd/policies/*.toml; do
    conffile "$policy" "$dest/etc/fwd/policies/$(basename "$policy")"
done

if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

echo "fwd installed. Next:"
echo "  1. set [[interface]] in /etc/fwd/fwd.toml (name and mode: gateway or host)"
echo "  2. fwd check --config /etc/fwd/fwd.toml"
echo "  3. systemctl enable --now fwd"
echo "Grafana dashboard: /usr/share/fwd/grafana/fwd.json (Dashboards > New > Import)"
"#;

/// fwd-userspace's version, from `cargo metadata`.
fn version(root: &Path) -> anyhow::Result<String> {
    let out = super::cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "fwd-userspace")
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "no fwd-userspace package in the metadata of {}",
                root.display()
            )
        })
}

fn entries(root: &Path, fwd: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = |path: &str, mode: u32, source: PathBuf| Entry {
        path: path.to_string(),
        mode,
        source: Source::File(source),
    };
    let mut entries = vec![
        file("usr/bin/fwd", 0o755, fwd.to_path_buf()),
        file(
            "usr/lib/systemd/system/fwd.service",
            0o644,
            root.join("packaging/fwd.service"),
        ),
        file(
            "usr/share/fwd/grafana/fwd.json",
            0o644,
            root.join("packaging/grafana/fwd.json"),
        ),
        file("usr/share/doc/fwd/README.md", 0o644, root.join("README.md")),
        file("etc/fwd/fwd.toml", 0o644, root.join("packaging/fwd.toml")),
        Entry {
            path: "install.sh".to_string(),
            mode: 0o755,
            source: Source::Text(INSTALL_SH),
        },
    ];
    let policies = root.join("policies");
    let mut names: Vec<String> = std::fs::read_dir(&policies)
        .with_context(|| format!("reading {}", policies.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no policies in {}", policies.display());
    }
    for name in names {
        entries.push(file(
            &format!("etc/fwd/policies/{name}"),
            0o644,
            policies.join(&name),
        ));
    }
    Ok(entries)
}

/// A tar header owned by root, with a fixed time (the tarball does not change with the
/// checkout's file times).
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_mtime(mtime);
    h
}

/// Writes the tarball: directories first (each once, 0755), then the files.
fn write_tarball(out: &Path, entries: &[Entry], mtime: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::best()));
    let mut dirs: Vec<String> = Vec::new();
    for e in entries {
        let mut parent = Path::new(&e.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(format!("{}/", p.display()));
            parent = p.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    for e in entries {
        let data = match &e.source {
            Source::File(p) => {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
            }
            Source::Text(t) => t.as_bytes().to_vec(),
        };
        let mut h = header(tar::EntryType::Regular, e.mode, data.len() as u64, mtime);
        tar.append_data(&mut h, &e.path, data.as_slice())
            .with_context(|| format!("adding {}", e.path))?;
    }
    let mut gz = tar.into_inner().context("finishing the tar stream")?;
    gz.flush()?;
    gz.finish().context("finishing the gzip stream")?;
    Ok(())
}

/// `sh -n` of each of a package's maintainer scripts in `dir` (packaging/debian, packaging/rpm).
pub(crate) fn check_scripts(dir: &str, scripts: &[&str]) -> anyhow::Result<()> {
    let dir = super::workspace_root().join(dir);
    for script in scripts {
        check_output(
            &format!("sh -n {}", dir.join(script).display()),
            Command::new("sh").arg("-n").arg(dir.join(script)),
        )?;
    }
    Ok(())
}

/// Runs `cmd` and fails with its output if it fails.
pub(crate) fn check_output(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// Unpacks the tarball into a scratch directory and checks what it installs: the config and
/// policies compile with the packaged binary, the unit verifies, and install.sh (into a
/// DESTDIR) installs everything and, run again, keeps an edited config.
fn verify(tarball: &Path, scratch: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(scratch);
    let unpacked = scratch.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball)?);
    tar::Archive::new(gz)
        .unpack(&unpacked)
        .with_context(|| format!("unpacking {}", tarball.display()))?;

    let summary = check_output(
        "fwd check of the packaged config and policies",
        Command::new(unpacked.join("usr/bin/fwd"))
            .current_dir(&unpacked)
            .args([
                "check",
                "--config",
                "etc/fwd/fwd.toml",
                "--policies",
                "etc/fwd/policies",
            ]),
    )?;
    eprintln!(
        "xtask: verified: usr/bin/fwd check --config etc/fwd/fwd.toml --policies etc/fwd/policies: {}",
        summary
            .lines()
            .find(|l| l.starts_with("compiled:"))
            .unwrap_or("ok")
    );

    if super::succeeds(Command::new("systemd-analyze").arg("--version")) {
        // verify wants ExecStart's binary to exist: point it at the unpacked one.
        let unit = std::fs::read_to_string(unpacked.join("usr/lib/systemd/system/fwd.service"))?;
        let unit_dir = scratch.join("unit");
        std::fs::create_dir_all(&unit_dir)?;
        let path = unit_dir.join("fwd.service");
        let bin = unpacked.join("usr/bin/fwd");
        std::fs::write(&path, unit.replace("/usr/bin/fwd", &bin.to_string_lossy()))?;
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("fwd.service"))
            .collect();
        if !out.status.success() || !ours.is_empty() {
            bail!("systemd-analyze verify of fwd.service:\n{stderr}");
        }
        eprintln!("xtask: verified: systemd-analyze verify usr/lib/systemd/system/fwd.service");
    } else {
        eprintln!("xtask: systemd-analyze not found; the unit was not verified");
    }

    let destdir = scratch.join("destdir");
    let install = || {
        check_output(
            "install.sh",
            Command::new("sh")
                .arg(unpacked.join("install.sh"))
                .env("DESTDIR", &destdir),
        )
    };
    install()?;
    for path in [
        "usr/bin/fwd",
        "usr/lib/systemd/system/fwd.service",
        "usr/share/fwd/grafana/fwd.json",
        "usr/share/doc/fwd/README.md",
        "etc/fwd/fwd.toml",
    ] {
        if !destdir.join(path).is_file() {
            bail!("install.sh did not install /{path}");
        }
    }
    let site_config = destdir.join("etc/fwd/fwd.toml");
    let edited = format!(
        "{}\n# edited by the site\n",
        std::fs::read_to_string(&site_config)?
    );
    std::fs::write(&site_config, &edited)?;
    install()?;
    if std::fs::read_to_string(&site_config)? != edited {
        bail!("install.sh overwrote an existing /etc/fwd/fwd.toml");
    }
    if !destdir.join("etc/fwd/fwd.toml.new").is_file() {
        bail!("install.sh did not leave the packaged config as /etc/fwd/fwd.toml.new");
    }
    eprintln!(
        "xtask: verified: install.sh (DESTDIR) installs everything and keeps an edited /etc/fwd/fwd.toml"
    );
    std::fs::remove_dir_all(scratch)?;
    Ok(())
}

pub fn dist() -> anyhow::Result<()> {
    let root = super::workspace_root();
    let fwd = super::build_fwd_release()?;
    let version = version(&root)?;
    let arch = std::env::consts::ARCH;
    let name = format!("fwd-{version}-{arch}");
    let out_dir = root.join("target/dist");
    std::fs::create_dir_all(&out_dir)?;
    let tarball = out_dir.join(format!("{name}.tar.gz"));

    let entries = entries(&root, &fwd)?;
    // SOURCE_DATE_EPOCH if set (reproducible builds), else the binary's build time.
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            std::fs::metadata(&fwd)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        })
        .unwrap_or(0);
    eprintln!(
        "xtask: writing {} ({} files)",
        tarball.display(),
        entries.len()
    );
    for e in &entries {
        eprintln!("xtask:   {:o} {}", e.mode, e.path);
    }
    write_tarball(&tarball, &entries, mtime)?;

    eprintln!("xtask: verifying {}", tarball.display());
    verify(&tarball, &out_dir.join(format!("{name}.verify")))?;

    let deb = super::deb::build(&root, &fwd, &version, &out_dir)?;
    eprintln!("xtask: verifying {}", deb.display());
    super::deb::verify(&deb, &out_dir.join(format!("{name}.deb-verify")))?;

    let rpm = super::rpm::build(&version, &out_dir)?;
    super::rpm::verify(&rpm, &out_dir.join(format!("{name}.rpm-verify")))?;

    let layout = super::image::build(&root, &fwd, &version, &out_dir)?;
    super::image::verify(
        &root,
        &layout,
        &version,
        &out_dir.join(format!("{name}.oci-verify")),
    )?;

    let size = std::fs::metadata(&tarball)?.len();
    eprintln!(
        "xtask: dist done: {} ({:.1} MiB)\n\
         xtask: install: mkdir fwd && tar -C fwd -xzf {}.tar.gz && sudo fwd/install.sh",
        tarball.display(),
        size as f64 / (1024.0 * 1024.0),
        name
    );
    eprintln!(
        "xtask: install the package: apt install ./{}",
        deb.file_name().unwrap_or_default().to_string_lossy()
    );
    eprintln!(
        "xtask: the image: skopeo copy oci-archive:target/dist/fwd-{version}-oci.tar docker://REGISTRY/fwd:{version}"
    );
    println!("{}", tarball.display());
    println!("{}", deb.display());
    println!("{}", rpm.display());
    println!("{}", layout.display());
    Ok(())
}
