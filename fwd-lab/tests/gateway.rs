//! End to end: the lab's namespaces, `fwd run` on the gateway, real TCP and UDP.
//! Needs root (network namespaces, BPF); run through `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use fwd_lab::{
    ACME_POLICY, FwdProcess, GATEWAY_LAN_IF, Lab, Pins, Sink, SiteConfig, fwd_bin, scrape, scratch,
    tcp_probe, udp_probe,
};

const METRICS: &str = "127.0.0.1:9469";
const ALLOWED: &str = "198.51.100.10";
const UNLISTED: &str = "203.0.113.50";
const ALLOWED_V6: &str = "2001:db8:100::10";
const UNLISTED_V6: &str = "2001:db8:999::50";

#[test]
fn gateway_passes_allowed_and_drops_denied_traffic_and_counts_it() {
    if !fwd_lab::can_run_as_root("gateway_passes_allowed_and_drops_denied_traffic_and_counts_it") {
        return;
    }
    let metric = |lab: &Lab, name: &str, labels: &[(&str, &str)]| {
        scrape(&lab.gateway, METRICS, name, labels)
    };
    let (prefix, dir) = scratch("gateway");
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/acme.toml"), ACME_POLICY).unwrap();
    SiteConfig::new("policies")
        .pins(&pins)
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .write(&dir.join("fwd.toml"))
        .unwrap();
    let allowed: IpAddr = ALLOWED.parse().unwrap();
    let unlisted: IpAddr = UNLISTED.parse().unwrap();
    let allowed_v6: IpAddr = ALLOWED_V6.parse().unwrap();
    let unlisted_v6: IpAddr = UNLISTED_V6.parse().unwrap();
    let lab = Lab::create(&prefix, &[allowed, unlisted, allowed_v6, unlisted_v6]).unwrap();
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
    let web = [("vendor", "acme"), ("rule", "web"), ("direction", "egress")];
    let web_replies = [
        ("vendor", "acme"),
        ("rule", "web"),
        ("direction", "ingress"),
    ];
    let media = [
        ("vendor", "acme"),
        ("rule", "media"),
        ("direction", "egress"),
    ];
    let media_replies = [
        ("vendor", "acme"),
        ("rule", "media"),
        ("direction", "ingress"),
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
    // What describes a rule is in fwd_rule_info, its vendor's mode in fwd_vendor_mode.
    assert_eq!(
        metric(
            &lab,
            "fwd_rule_info",
            &[
                ("vendor", "acme"),
                ("rule", "web"),
                ("service", "Web app"),
                ("level", "mandatory")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &lab,
            "fwd_vendor_mode",
            &[("vendor", "acme"), ("mode", "enforce")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &lab,
            "fwd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Exactly the one datagram the client sent, and its echo counted as a reply.
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &media), 1.0);
    assert_eq!(
        metric(&lab, "fwd_rule_bytes_total", &media),
        14.0 + 20.0 + 8.0 + 13.0
    );
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &media_replies), 1.0);
    // SYN-ACK, the echoed data, FIN (at least): replies of the TCP flow.
    assert!(metric(&lab, "fwd_rule_packets_total", &web_replies) >= 2.0);
    assert!(metric(&lab, "fwd_flows_active", &[]) >= 2.0);

    // `fwd monitor` shows samples of what is denied from here on.
    let monitor = std::process::Command::new(fwd_bin())
        .args(["monitor", "--json", "--count", "1", "--socket"])
        .arg(dir.join("control.sock"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Denied by address: never reaches the server, counted as no_address_match.
    let drops = |reason| {
        metric(
            &lab,
            "fwd_drop_packets_total",
            &[("reason", reason), ("direction", "egress")],
        )
    };
    let no_address_before = drops("no_address_match");
    assert!(!tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());
    assert!(!udp_probe(&lab.client, SocketAddr::new(unlisted, 10000), timeout).unwrap());
    assert_eq!(sink.tcp_connections(443), tcp_before + 1);
    assert_eq!(sink.udp_datagrams(10000), udp_before + 1);
    assert!(drops("no_address_match") >= no_address_before + 2.0);
    let sample_line = monitor.wait_with_output().unwrap().stdout;
    let sample: serde_json::Value = serde_json::from_slice(&sample_line)
        .unwrap_or_else(|e| panic!("fwd monitor printed {sample_line:?}: {e}"));
    assert_eq!(sample["interface"], GATEWAY_LAN_IF);
    assert_eq!(sample["direction"], "out");
    assert_eq!(sample["protocol"], "tcp");
    assert_eq!(sample["dst"], UNLISTED);
    assert_eq!(sample["dst_port"], 443);
    assert_eq!(sample["src"], fwd_lab::CLIENT_V4.to_string());
    assert_eq!(sample["reason"], "no_address_match");
    // The monitor's line, judged again by the policy on disk: still denied, and why.
    let mut explain = std::process::Command::new(fwd_bin())
        .args(["explain", "--from-sample", "-", "--config"])
        .arg(dir.join("fwd.toml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut explain.stdin.take().unwrap(), &sample_line).unwrap();
    let explained = explain.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert_eq!(explained.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("now: deny: no rule covers the address {UNLISTED}")),
        "{text}"
    );

    // Denied by port at an allowed address: counted as no_port_match.
    let no_port_before = drops("no_port_match");
    assert!(!tcp_probe(&lab.client, SocketAddr::new(allowed, 8080), timeout).unwrap());
    assert_eq!(sink.tcp_connections(8080), 0);
    assert!(drops("no_port_match") >= no_port_before + 1.0);

    // IPv6 is filtered as strictly: the listed network passes both ways, others do not.
    let tcp_443 = sink.tcp_connections(443);
    assert!(tcp_probe(&lab.client, SocketAddr::new(allowed_v6, 443), timeout).unwrap());
    assert!(!tcp_probe(&lab.client, SocketAddr::new(unlisted_v6, 443), timeout).unwrap());
    assert!(!udp_probe(&lab.client, SocketAddr::new(allowed_v6, 10000), timeout).unwrap());
    assert_eq!(sink.tcp_connections(443), tcp_443 + 1);

    // The allowed rules did not count the denied traffic.
    assert_eq!(metric(&lab, "fwd_rule_packets_total", &media), 1.0);

    // `fwd monitor --last`: the daemon kept what it sampled; the filters pick from it.
    let history = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(fwd_bin())
            .args(["monitor", "--json", "--socket"])
            .arg(dir.join("control.sock"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let port_8080 = history(&["--last", "10", "--port", "8080"]);
    assert!(
        !port_8080.is_empty(),
        "the no_port_match sample is not kept"
    );
    assert!(
        port_8080
            .iter()
            .all(|s| s["dst_port"] == 8080 && s["reason"] == "no_port_match")
    );
    let unlisted_udp = history(&[
        "--since",
        "5m",
        "--remote",
        "203.0.113.0/24",
        "--proto",
        "udp",
    ]);
    assert!(
        unlisted_udp
            .iter()
            .any(|s| s["dst"] == UNLISTED && s["dst_port"] == 10000),
        "{unlisted_udp:?}"
    );
    let not_unlisted = history(&[
        "--last",
        "100",
        "--not",
        "--remote",
        &format!("{UNLISTED}/32"),
    ]);
    assert!(!not_unlisted.is_empty());
    assert!(
        not_unlisted
            .iter()
            .all(|s| s["dst"] != UNLISTED && s["src"] != UNLISTED)
    );
    assert_eq!(history(&["--last", "2"]).len(), 2);
    assert!(history(&["--last", "10", "--reason", "no_such_reason"]).is_empty());

    // `fwd reload` with a broken policy: rejected whole, located, the old policy stays.
    let reload = || {
        fwd_lab::fwd_command(&fwd_bin())
            .args(["reload", "--config"])
            .arg(dir.join("fwd.toml"))
            .output()
            .unwrap()
    };
    let policy_file = dir.join("policies/acme.toml");
    std::fs::write(
        &policy_file,
        ACME_POLICY.replace("ports = [443]", "ports = [70000]"),
    )
    .unwrap();
    let out = reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("acme.toml:10:10: port 70000"), "{stderr}");
    assert_eq!(
        metric(&lab, "fwd_reloads_total", &[("result", "error")]),
        1.0
    );
    assert!(tcp_probe(&lab.client, SocketAddr::new(allowed, 443), timeout).unwrap());
    assert!(!tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());

    // A good edit: the unlisted network opens; the web rule's counters carry on.
    let web_before = metric(&lab, "fwd_rule_packets_total", &web);
    std::fs::write(
        &policy_file,
        ACME_POLICY.replace(
            "\"198.51.100.0/24\"",
            "\"198.51.100.0/24\", \"203.0.113.0/24\"",
        ),
    )
    .unwrap();
    let out = reload();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("reloaded: generation 2"), "{stdout}");
    assert_eq!(metric(&lab, "fwd_policy_generation", &[]), 2.0);
    assert!(tcp_probe(&lab.client, SocketAddr::new(unlisted, 443), timeout).unwrap());
    assert!(metric(&lab, "fwd_rule_packets_total", &web) >= web_before + 3.0);

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
