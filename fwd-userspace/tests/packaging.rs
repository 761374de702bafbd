//! The files fwd ships besides the binary: the systemd unit passes `systemd-analyze
//! verify`, and the example config is valid and compiles with the bundled policies.

use std::{path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("packaging/fwd.service")).unwrap();
    for needed in [
        "Type=notify",
        "ExecReload=/usr/bin/fwd reload",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(needed), "fwd.service lacks {needed}");
    }
    // verify checks that ExecStart's binary exists: point it at this build.
    let bin = env!("CARGO_BIN_EXE_fwd");
    let dir = std::env::temp_dir().join(format!("fwd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fwd.service");
    std::fs::write(&path, unit.replace("/usr/bin/fwd", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's other units are not ours).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fwd.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_is_valid_and_compiles_the_bundled_policies() {
    let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
        .args(["check", "--config"])
        .arg(repo().join("packaging/fwd.toml"))
        .arg("--policies")
        .arg(repo().join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
