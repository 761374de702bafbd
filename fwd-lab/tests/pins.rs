//! Pins are only as good as the filesystem they live on. `ip netns exec` gives fwd a private
//! mount namespace whose /sys hides the host's bpf filesystem: a bpf filesystem fwd mounted
//! there would die with the process, and enforcement with it. By default fwd refuses to
//! start there, saying what to do; with `pins = "ephemeral"` it starts and `fwd status`
//! says the pins are ephemeral, and a SIGKILL then ends enforcement as the docs say. Needs
//! root.

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
fn under_ip_netns_exec(ns: &Netns, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg(fwd_bin())
        .args(["run", "--config"])
        .arg(dir.join("fwd.toml"));
    cmd
}

fn run_under_ip_netns_exec(ns: &Netns, dir: &std::path::Path) -> std::process::Child {
    under_ip_netns_exec(ns, dir)
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
    let (exited, out) =
        fwd_lab::run_bounded(&mut under_ip_netns_exec(&ns, &dir), Duration::from_secs(20)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "fwd ran in a private mount namespace: {stderr}");
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

/// With `pins = "ephemeral"` the loss is what the docs say: killed, fwd takes its private
/// bpf filesystem with it, the links go, and traffic it denied passes.
#[test]
fn with_ephemeral_pins_a_killed_daemon_ends_enforcement_as_documented() {
    if !fwd_lab::can_run_as_root(
        "with_ephemeral_pins_a_killed_daemon_ends_enforcement_as_documented",
    ) {
        return;
    }
    let (prefix, dir) = scratch("pins-kill");
    let allowed: std::net::IpAddr = "198.51.100.10".parse().unwrap();
    let lab = fwd_lab::Lab::create(&prefix, &[allowed]).unwrap();
    let sink = fwd_lab::Sink::start(&lab.vendor, &[10000, 9999]).unwrap();
    std::fs::write(dir.join("policies/acme.toml"), fwd_lab::ACME_POLICY).unwrap();
    SiteConfig::new("policies")
        .pin_dir(format!("/sys/fs/bpf/{prefix}"))
        .state_dir("state")
        .top("pins = \"ephemeral\"")
        .metrics("127.0.0.1:9479")
        .watch(false)
        .gateway(fwd_lab::GATEWAY_LAN_IF)
        .write(&dir.join("fwd.toml"))
        .unwrap();
    let mut child = run_under_ip_netns_exec(&lab.gateway, &dir);
    let up = wait_for(Duration::from_secs(20), || {
        let out = fwd_lab::fwd_command(&fwd_bin())
            .args(["status", "--json", "--config"])
            .arg(dir.join("fwd.toml"))
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    if up.is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "fwd did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let open = std::net::SocketAddr::new(allowed, 10000);
    let closed = std::net::SocketAddr::new(allowed, 9999);
    let timeout = Duration::from_millis(500);
    assert!(fwd_lab::udp_probe(&lab.client, open, timeout).unwrap());
    assert!(!fwd_lab::udp_probe(&lab.client, closed, timeout).unwrap());
    assert_eq!(sink.udp_datagrams(9999), 0, "enforcing while it runs");

    // SIGKILL: no clean-up, and yet the programs go with the process's bpf filesystem.
    child.kill().unwrap();
    child.wait().unwrap();
    let passed = wait_for(Duration::from_secs(5), || {
        fwd_lab::udp_probe(&lab.client, closed, timeout)
            .unwrap()
            .then_some(())
    });
    assert!(
        passed.is_some(),
        "denied traffic still blocked after the ephemeral daemon died: the docs would be wrong"
    );
    assert!(sink.udp_datagrams(9999) > 0);
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{prefix}")).exists());
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
