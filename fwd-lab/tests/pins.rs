//! Pins are only as good as the filesystem they live on. `ip netns exec` gives fwd a private
//! mount namespace whose /sys hides the host's bpf filesystem: a bpf filesystem fwd mounted
//! there would die with the process, and enforcement with it. By default fwd refuses to
//! start there, saying what to do; with `pins = "ephemeral"` it starts and `fwd status`
//! says the pins are ephemeral. Needs root.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use fwd_lab::{Netns, SiteConfig, fwd_bin, fwd_json, scratch, wait_for};

const POLICY: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24"]
"#;

/// `ip netns exec NS fwd run --config DIR/fwd.toml`: a private mount namespace, as a user
/// would start it.
fn run_under_ip_netns_exec(ns: &Netns, dir: &std::path::Path) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(fwd_bin())
        .args(["run", "--config"])
        .arg(dir.join("fwd.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ip netns exec fwd run")
}

fn write_config(dir: &std::path::Path, prefix: &str, top: &str) {
    std::fs::write(dir.join("policies/v.toml"), POLICY).unwrap();
    SiteConfig::new("policies")
        .pin_dir(format!("/sys/fs/bpf/{prefix}"))
        .state_dir("state")
        .on_exit("detach")
        .top(top)
        .metrics("127.0.0.1:9479")
        .watch(false)
        .host("lo")
        .write(&dir.join("fwd.toml"))
        .unwrap();
}

#[test]
fn a_private_mount_namespace_is_refused_unless_pins_are_ephemeral() {
    if !fwd_lab::can_run_as_root("a_private_mount_namespace_is_refused_unless_pins_are_ephemeral") {
        return;
    }
    let (prefix, dir) = scratch("pins");
    let ns = Netns::create(&prefix).unwrap();

    // Default: refused before anything is loaded or attached, with what to do.
    write_config(&dir, &prefix, "");
    let mut child = run_under_ip_netns_exec(&ns, &dir);
    let exited = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited.is_some(),
        "fwd ran in a private mount namespace: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("private mount namespace")
            && stderr.contains("nsenter")
            && stderr.contains("pins = \"ephemeral\""),
        "{stderr}"
    );
    // Nothing of this run reached the host's bpf filesystem.
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{prefix}")).exists());

    // Ephemeral: it starts, says so, and `fwd status` shows it.
    write_config(&dir, &prefix, "pins = \"ephemeral\"");
    let mut child = run_under_ip_netns_exec(&ns, &dir);
    let status = wait_for(Duration::from_secs(20), || {
        let out = fwd_lab::fwd_command(&fwd_bin())
            .args(["status", "--json", "--config"])
            .arg(dir.join("fwd.toml"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
            .flatten()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "fwd did not start with pins = \"ephemeral\": {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(status["pins"], "ephemeral", "{status}");
    let text = fwd_json(&dir, &["status"]);
    assert_eq!(text["pins"], "ephemeral");
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{prefix}")).exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("if fwd dies, enforcement ends with it"),
        "{stderr}"
    );
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}
