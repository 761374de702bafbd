//! End to end, host mode: `fwd run` in the client's namespace on its uplink (TC egress and
//! ingress), IPv4 and IPv6, real TCP and UDP both ways, return traffic, ingress rules,
//! "related" media, and audit mode. Needs root; run through `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use fwd_lab::{
    CLIENT_V4, CLIENT_V6, FwdProcess, Lab, Pins, Sink, SiteConfig, fwd_bin, scrape, scratch,
    tcp_probe, tcp_probe_from, udp_probe, udp_send_from, wait_for,
};

const METRICS: &str = "127.0.0.1:9470";

/// The vendor's media and web address, a webhook source, and an address nothing lists.
const MEDIA_V4: &str = "198.51.100.10";
const MEDIA_V6: &str = "2001:db8:100::10";
const WEBHOOK_V4: &str = "198.51.100.20";
const UNLISTED_V4: &str = "203.0.113.50";
const UNLISTED_V6: &str = "2001:db8:999::50";

const POLICY: &str = r#"
[vendor]
id = "acme"
name = "Acme Video"

[[rule]]
id = "web"
service = "Web app"
protocol = "tcp"
ports = [443]
remote = ["198.51.100.10", "2001:db8:100::10"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["10000-20000"]
remote = ["198.51.100.10", "2001:db8:100::10"]

[[rule]]
id = "media-in"
service = "Media from the gateway"
direction = "ingress"
protocol = "udp"
remote_ports = ["10000-20000"]
related = true
remote = ["198.51.100.0/24", "2001:db8:100::/64"]

[[rule]]
id = "webhook"
service = "Webhook"
direction = "ingress"
protocol = "tcp"
local_ports = [8443]
remote = "198.51.100.20"
"#;

fn config(action: &str, pins: &Pins) -> String {
    SiteConfig::new("policies")
        .pins(pins)
        .action(action)
        .metrics(METRICS)
        .host("eth0")
        .render()
}

struct Setup {
    lab: Lab,
    fwd: FwdProcess,
    /// Echo servers on the vendor host.
    vendor: Sink,
    /// Echo servers on the protected host (webhook, media, and a port nothing opens).
    client: Sink,
    dir: std::path::PathBuf,
    /// Dropped last, after the daemon stopped.
    _pins: Pins,
}

fn setup(test: &str, action: &str) -> Setup {
    let (prefix, dir) = scratch(test);
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/acme.toml"), POLICY).unwrap();
    std::fs::write(dir.join("fwd.toml"), config(action, &pins)).unwrap();
    let addrs: Vec<IpAddr> = [MEDIA_V4, MEDIA_V6, WEBHOOK_V4, UNLISTED_V4, UNLISTED_V6]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let lab = Lab::create(&prefix, &addrs).unwrap();
    let vendor = Sink::start(&lab.vendor, &[443, 8080, 10000]).unwrap();
    let client = Sink::start(&lab.client, &[8443, 2222, 40000]).unwrap();
    let fwd = FwdProcess::start(
        &lab.client,
        &fwd_bin(),
        &dir.join("fwd.toml"),
        &dir.join("fwd.log"),
        METRICS.parse().unwrap(),
    )
    .unwrap();
    Setup {
        lab,
        fwd,
        vendor,
        client,
        dir,
        _pins: pins,
    }
}

impl Setup {
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        scrape(&self.lab.client, METRICS, name, labels)
    }

    /// Drops for `reason` of packets going `direction` ("egress": from the host).
    fn reason(&self, reason: &str, direction: &str) -> f64 {
        self.metric(
            "fwd_drop_packets_total",
            &[("reason", reason), ("direction", direction)],
        )
    }

    fn finish(mut self) {
        let status = self.fwd.stop(Duration::from_secs(10)).expect("fwd stops");
        assert!(
            status.success(),
            "fwd exited with {status}: {}",
            self.fwd.log_text()
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn at(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), port)
}

/// Waits until a sink counter reaches `want` (datagrams arrive asynchronously).
fn reaches(f: impl Fn() -> u64, want: u64) -> bool {
    wait_for(Duration::from_secs(2), || (f() >= want).then_some(())).is_some()
}

#[test]
fn host_mode_filters_both_directions_on_ipv4_and_ipv6() {
    if !fwd_lab::can_run_as_root("host_mode_filters_both_directions_on_ipv4_and_ipv6") {
        return;
    }
    let s = setup("host", "enforce");
    let t = Duration::from_secs(1);

    // "Related" media before the host talks to the vendor: dropped as not related.
    let not_related = s.reason("not_related", "ingress");
    udp_send_from(
        &s.lab.vendor,
        at(MEDIA_V4, 12000),
        at(&CLIENT_V4.to_string(), 40000),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.client.udp_datagrams(40000), 0);
    assert_eq!(s.reason("not_related", "ingress"), not_related + 1.0);

    // Outbound, IPv4 and IPv6: a real TCP exchange both ways, and UDP with its reply.
    for media in [MEDIA_V4, MEDIA_V6] {
        assert!(
            tcp_probe(&s.lab.client, at(media, 443), t).unwrap(),
            "tcp {media}"
        );
        assert!(
            udp_probe(&s.lab.client, at(media, 10000), t).unwrap(),
            "udp {media}"
        );
    }
    assert_eq!(s.vendor.tcp_connections(443), 2);
    assert_eq!(s.vendor.udp_datagrams(10000), 2);
    let web_out = [("rule", "web"), ("direction", "egress")];
    let web_in = [("rule", "web"), ("direction", "ingress")];
    assert!(s.metric("fwd_rule_packets_total", &web_out) >= 6.0);
    assert!(s.metric("fwd_rule_packets_total", &web_in) >= 4.0);
    assert_eq!(
        s.metric(
            "fwd_rule_packets_total",
            &[("rule", "media"), ("direction", "ingress")]
        ),
        2.0
    );

    // Denied outbound: wrong port, unlisted addresses of both families.
    assert!(!tcp_probe(&s.lab.client, at(MEDIA_V4, 8080), t).unwrap());
    assert!(!tcp_probe(&s.lab.client, at(UNLISTED_V4, 443), t).unwrap());
    assert!(!udp_probe(&s.lab.client, at(UNLISTED_V6, 10000), t).unwrap());
    assert_eq!(s.vendor.tcp_connections(8080), 0);
    assert!(s.reason("no_port_match", "egress") >= 1.0);
    assert!(s.reason("no_address_match", "egress") >= 2.0);

    // Now the host has live flows with the media address: its media comes in.
    udp_send_from(
        &s.lab.vendor,
        at(MEDIA_V4, 12000),
        at(&CLIENT_V4.to_string(), 40000),
    )
    .unwrap();
    assert!(
        reaches(|| s.client.udp_datagrams(40000), 1),
        "related media"
    );
    udp_send_from(
        &s.lab.vendor,
        at(MEDIA_V6, 12000),
        at(&CLIENT_V6.to_string(), 40000),
    )
    .unwrap();
    assert!(
        reaches(|| s.client.udp_datagrams(40000), 2),
        "related media v6"
    );
    // ... but not from a source port outside the rule's range.
    udp_send_from(
        &s.lab.vendor,
        at(MEDIA_V4, 9999),
        at(&CLIENT_V4.to_string(), 40000),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.client.udp_datagrams(40000), 2);

    // Ingress rule: the webhook source reaches the local service, and gets its answer back
    // (the host's reply passes as part of the flow the ingress rule opened).
    let client_v4 = SocketAddr::new(IpAddr::V4(CLIENT_V4), 8443);
    assert!(tcp_probe_from(&s.lab.vendor, WEBHOOK_V4.parse().unwrap(), client_v4, t).unwrap());
    assert_eq!(s.client.tcp_connections(8443), 1);
    // Unsolicited inbound: other sources, other ports.
    assert!(!tcp_probe_from(&s.lab.vendor, UNLISTED_V4.parse().unwrap(), client_v4, t).unwrap());
    let ssh = SocketAddr::new(IpAddr::V4(CLIENT_V4), 2222);
    assert!(!tcp_probe_from(&s.lab.vendor, WEBHOOK_V4.parse().unwrap(), ssh, t).unwrap());
    let ssh6 = SocketAddr::new(IpAddr::V6(CLIENT_V6), 2222);
    assert!(!tcp_probe_from(&s.lab.vendor, MEDIA_V6.parse().unwrap(), ssh6, t).unwrap());
    assert_eq!(s.client.tcp_connections(8443), 1);
    assert_eq!(s.client.tcp_connections(2222), 0);
    assert!(
        s.metric(
            "fwd_rule_packets_total",
            &[("rule", "webhook"), ("direction", "ingress")]
        ) >= 3.0
    );
    assert!(
        s.metric(
            "fwd_rule_packets_total",
            &[("rule", "webhook"), ("direction", "egress")]
        ) >= 2.0
    );
    assert!(s.metric("fwd_flows_active", &[]) >= 5.0);

    // `fwd status` says what is attached where and what is in force.
    let out = fwd_lab::fwd_command(&fwd_bin())
        .args(["status", "--json", "--socket"])
        .arg(s.dir.join("control.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["rules"], 4);
    assert_eq!(status["action"], "enforce");
    let attached: Vec<(String, String, String, String, bool)> = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            (
                s("interface"),
                s("program"),
                s("hook"),
                s("origin"),
                a["pinned"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = |program: &str, hook: &str| {
        (
            "eth0".to_string(),
            program.to_string(),
            hook.to_string(),
            "attached".to_string(),
            true,
        )
    };
    assert_eq!(
        attached,
        vec![
            expected("fwd_tc_out", "tc_egress"),
            expected("fwd_tc_in", "tc_ingress")
        ]
    );
    assert!(status["flows_active"].as_u64().unwrap() >= 5);
    s.finish();
}

#[test]
fn audit_mode_passes_everything_and_counts_what_it_would_drop() {
    if !fwd_lab::can_run_as_root("audit_mode_passes_everything_and_counts_what_it_would_drop") {
        return;
    }
    let s = setup("audit", "audit");
    let t = Duration::from_secs(1);
    let would = |s: &Setup| {
        s.reason("audit_would_drop", "egress") + s.reason("audit_would_drop", "ingress")
    };
    let would_before = would(&s);
    assert!(tcp_probe(&s.lab.client, at(UNLISTED_V4, 443), t).unwrap());
    assert!(udp_probe(&s.lab.client, at(UNLISTED_V6, 10000), t).unwrap());
    assert!(tcp_probe(&s.lab.client, at(MEDIA_V4, 8080), t).unwrap());
    let ssh = SocketAddr::new(IpAddr::V4(CLIENT_V4), 2222);
    assert!(tcp_probe_from(&s.lab.vendor, UNLISTED_V4.parse().unwrap(), ssh, t).unwrap());
    // Each flow's first packet, at least, would have been dropped.
    assert!(would(&s) >= would_before + 4.0);
    // The unsolicited inbound connection, counted as inbound.
    assert!(s.reason("audit_would_drop", "ingress") >= 1.0);
    assert!(s.reason("no_address_match", "egress") >= 2.0);
    assert!(s.reason("no_port_match", "egress") >= 1.0);
    // Allowed traffic still counts on its rule.
    assert!(tcp_probe(&s.lab.client, at(MEDIA_V4, 443), t).unwrap());
    assert!(
        s.metric(
            "fwd_rule_packets_total",
            &[("rule", "web"), ("direction", "egress")]
        ) >= 3.0
    );
    // The audit is the vendor's mode, a series of its own (the counters keep their identity).
    assert_eq!(s.metric("fwd_vendor_mode", &[("mode", "audit")]), 1.0);
    // The monitor keeps what audit mode passed, shown on request and marked.
    let monitor = |extra: &[&str]| {
        let out = std::process::Command::new(fwd_bin())
            .args(["monitor", "--json", "--last", "50", "--config"])
            .arg(s.dir.join("fwd.toml"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        monitor(&[]).is_empty(),
        "audited samples shown without --audited"
    );
    let audited = monitor(&["--audited"]);
    assert!(
        audited
            .iter()
            .any(|x| x["dst"] == UNLISTED_V4 && x["audited"] == true),
        "{audited:?}"
    );
    assert!(audited.iter().all(|x| x["audited"] == true), "{audited:?}");
    s.finish();
}
