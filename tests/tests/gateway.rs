//! End to end: the lab's namespaces, `fwd run` on the gateway, real TCP and UDP.
//! Needs root (network namespaces, BPF); run through `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use fwd_lab::{FwdProcess, GATEWAY_LAN_IF, Lab, Sink, http_get, tcp_probe, udp_probe};

const METRICS: &str = "127.0.0.1:9469";
const ALLOWED: &str = "198.51.100.10";
const UNLISTED: &str = "203.0.113.50";

const POLICY: &str = r#"
[vendor]
id = "acme"
name = "Acme Video"

[[rule]]
id = "web"
service = "Web app"
protocol = "tcp"
ports = [443]
remote = "198.51.100.0/24"

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["10000-20000"]
remote = "198.51.100.10"
"#;

/// The `fwd` binary: FWD_BIN, or the workspace's debug build (`cargo xtask test` builds it).
fn fwd_bin() -> PathBuf {
    let bin = std::env::var_os("FWD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/fwd"));
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p fwd-userspace`) or set FWD_BIN",
        bin.display()
    );
    bin
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "end-to-end tests need root (network namespaces, BPF): run `cargo xtask test` as root"
    );
}

/// A unique namespace prefix and scratch directory for one test.
fn scratch(test: &str) -> (String, PathBuf) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("fwdt{}-{n}", std::process::id());
    let dir = std::env::temp_dir().join(format!("{prefix}-{test}"));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    (prefix, dir)
}

/// Scrapes the daemon and returns the value of `metric` with all of `labels`.
fn metric(lab: &Lab, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let text = http_get(&lab.gateway, METRICS.parse().unwrap(), "/metrics").unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text exposition");
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{metric} is not a counter or gauge: {other:?}"),
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {metric}{labels:?} sample in:\n{text}"
    );
    matching[0]
}

#[test]
fn gateway_passes_allowed_and_drops_denied_traffic_and_counts_it() {
    require_root();
    let (prefix, dir) = scratch("gateway");
    std::fs::write(dir.join("policies/acme.toml"), POLICY).unwrap();
    std::fs::write(
        dir.join("fwd.toml"),
        format!(
            "policy_dir = \"policies\"\n[metrics]\nlisten = \"{METRICS}\"\n\
             [[interface]]\nname = \"{GATEWAY_LAN_IF}\"\nmode = \"gateway\"\n"
        ),
    )
    .unwrap();
    let allowed: IpAddr = ALLOWED.parse().unwrap();
    let unlisted: IpAddr = UNLISTED.parse().unwrap();
    let lab = Lab::create(&prefix, &[allowed, unlisted]).unwrap();
    let sink = Sink::start(&lab.vendor, &[443, 8080, 10000]).unwrap();

    // Without fwd, every flow goes through: the lab itself is sound.
    let timeout = Duration::from_secs(1);
    assert!(tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());
    assert!(udp_probe(&lab.client, SocketAddr::new(unlisted, 10000), timeout).unwrap());
    let (tcp_before, udp_before) = (sink.tcp_connections(443), sink.udp_datagrams(10000));

    let fwd = FwdProcess::start(
        &lab.gateway,
        &fwd_bin(),
        &dir.join("fwd.toml"),
        &dir.join("fwd.log"),
        METRICS.parse().unwrap(),
    )
    .unwrap();
    let web = [("vendor", "acme"), ("rule", "web"), ("service", "Web app")];
    let media = [
        ("vendor", "acme"),
        ("rule", "media"),
        ("direction", "egress"),
    ];
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &web), 0.0);

    // Allowed: delivered at the server, and counted on its rule.
    assert!(tcp_probe(&lab.client, SocketAddr::new(allowed, 443), timeout).unwrap());
    assert_eq!(sink.tcp_connections(443), tcp_before + 1);
    assert!(udp_probe(&lab.client, SocketAddr::new(allowed, 10000), timeout).unwrap());
    assert_eq!(sink.udp_datagrams(10000), udp_before + 1);
    // SYN, ACK, data, and at least the ACK of the echo went out through the gateway.
    assert!(metric(&lab, "fwd_rule_packets_total", &web) >= 3.0);
    assert!(metric(&lab, "fwd_rule_bytes_total", &web) > 0.0);
    // Exactly the one datagram the client sent (replies do not cross the LAN ingress hook).
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &media), 1.0);
    assert_eq!(
        metric(&lab, "fwd_rule_bytes_total", &media),
        14.0 + 20.0 + 8.0 + 13.0
    );

    // Denied by address: never reaches the server, counted as no_address_match.
    let drops = |reason| metric(&lab, "fwd_drop_packets_total", &[("reason", reason)]);
    let no_address_before = drops("no_address_match");
    assert!(!tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());
    assert!(!udp_probe(&lab.client, SocketAddr::new(unlisted, 10000), timeout).unwrap());
    assert_eq!(sink.tcp_connections(443), tcp_before + 1);
    assert_eq!(sink.udp_datagrams(10000), udp_before + 1);
    assert!(drops("no_address_match") >= no_address_before + 2.0);

    // Denied by port at an allowed address: counted as no_port_match.
    let no_port_before = drops("no_port_match");
    assert!(!tcp_probe(&lab.client, SocketAddr::new(allowed, 8080), timeout).unwrap());
    assert_eq!(sink.tcp_connections(8080), 0);
    assert!(drops("no_port_match") >= no_port_before + 1.0);

    // The allowed rules did not count the denied traffic.
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &media), 1.0);

    // A clean stop detaches: traffic flows unfiltered again.
    let mut fwd = fwd;
    let status = fwd
        .stop(Duration::from_secs(10))
        .expect("fwd stops on SIGTERM");
    assert!(
        status.success(),
        "fwd exited with {status}: {}",
        fwd.log_text()
    );
    assert!(tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());

    drop(sink);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
