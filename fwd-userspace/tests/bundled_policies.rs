//! Golden tests of the bundled vendor policies (`policies/`): what the compiled tables allow,
//! which rule allows it, and what they must not allow.
//!
//! Under the widest selection some rules open ports to every address (Pexip's "general"
//! profile: tcp 80, 389, 443, 1720, 5060, 5061, udp 123, 162, 10000-65535; the SIP provider's
//! STUN: tcp/udp 3478; VSee's peer-to-peer route: udp 1-65535 out and in). Probes that must be
//! denied therefore use ports outside those, or a narrower selection.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use fwd::{
    compile::{Compiled, Evaluator, Probe, Selection, Verdict, Warning, compile},
    policy::{self, Date, Direction, Level, PolicySet, Remote},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// The day the bundled files were last reviewed.
const TODAY: &str = "2026-11-21";
/// An address no vendor lists (TEST-NET-3).
const UNLISTED: &str = "203.0.113.9";
const UNLISTED6: &str = "2001:db8::9";

fn policies() -> PolicySet {
    policy::load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies"
    )))
    .expect("the bundled policies load")
}

fn date(text: &str) -> Date {
    Date::parse(text).expect("a valid date")
}

fn widest(today: &str) -> Selection {
    Selection::widest(date(today))
}

/// Only `vendors`, every level, profile and region.
fn only(today: &str, vendors: &[&str]) -> Selection {
    Selection {
        vendors: Some(vendors.iter().map(|v| v.to_string()).collect()),
        ..widest(today)
    }
}

fn build(selection: &Selection) -> Compiled {
    compile(&policies(), selection).expect("the bundled policies compile")
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("a valid address")
}

fn egress(protocol: u8, remote: &str, port: u16) -> Probe {
    Probe {
        direction: Direction::Egress,
        protocol,
        remote: addr(remote),
        port,
        local_port: 0,
    }
}

fn tcp(remote: &str, port: u16) -> Probe {
    egress(TCP, remote, port)
}

fn udp(remote: &str, port: u16) -> Probe {
    egress(UDP, remote, port)
}

/// An ingress packet from `remote:remote_port` to `local_port` on the protected host.
fn ingress(protocol: u8, remote: &str, remote_port: u16, local_port: u16) -> Probe {
    Probe {
        direction: Direction::Ingress,
        protocol,
        remote: addr(remote),
        port: remote_port,
        local_port,
    }
}

/// "vendor/rule" of an allowing verdict.
fn allowed_by(ev: &Evaluator<'_>, probe: &Probe) -> Option<String> {
    match ev.evaluate(probe) {
        Verdict::Allow { rule } => {
            let info = ev.rule(rule).expect("the verdict's rule is in the image");
            Some(format!("{}/{}", info.vendor, info.rule))
        }
        Verdict::NoAddressMatch | Verdict::NoPortMatch { .. } => None,
    }
}

#[track_caller]
fn expect_allow(ev: &Evaluator<'_>, probe: Probe, expected: &str) {
    match ev.evaluate(&probe) {
        Verdict::Allow { rule } => {
            let info = ev.rule(rule).expect("the verdict's rule is in the image");
            assert_eq!(
                format!("{}/{}", info.vendor, info.rule),
                expected,
                "{probe:?} is allowed, but by another rule"
            );
            assert_eq!(info.direction, probe.direction, "{probe:?}");
        }
        other => panic!("{probe:?}: expected allow by {expected}, got {other:?}"),
    }
}

#[track_caller]
fn expect_deny(ev: &Evaluator<'_>, probe: Probe) {
    if let Some(rule) = allowed_by(ev, &probe) {
        panic!("{probe:?}: expected deny, but {rule} allows it");
    }
}

/// Whether `vendor/rule` was compiled, left pending or expired under `selection`.
fn state(selection: &Selection, name: &str) -> &'static str {
    let c = build(selection);
    if c.image
        .rules
        .iter()
        .any(|r| format!("{}/{}", r.vendor, r.rule) == name)
    {
        "compiled"
    } else if c.pending.iter().any(|d| d.rule == name) {
        "pending"
    } else if c.expired.iter().any(|d| d.rule == name) {
        "expired"
    } else {
        "absent"
    }
}

/// "vendor/rule" of every rule that owns at least one port entry (so can ever allow).
fn owning_rules(c: &Compiled) -> BTreeSet<String> {
    c.image
        .ports
        .iter()
        .map(|e| {
            let r = c.image.rule(e.verdict.rule).expect("a compiled rule");
            format!("{}/{}", r.vendor, r.rule)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The directory as a whole
// ---------------------------------------------------------------------------------------

#[test]
fn every_bundled_vendor_file_loads() {
    let set = policies();
    let ids: Vec<&str> = set.vendors.iter().map(|v| v.vendor.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "one-click-twilio",
            "pexip",
            "securevideo",
            "vsee",
            "webrtc-sip-wss",
            "whereby",
            "zoom"
        ]
    );
    let counts: Vec<usize> = set.vendors.iter().map(|v| v.rules.len()).collect();
    assert_eq!(counts, [0, 16, 0, 14, 3, 5, 4]);
    for v in &set.vendors {
        assert_eq!(v.vendor.reviewed.as_deref(), Some(TODAY), "{}", v.vendor.id);
        assert!(
            v.vendor
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("vendor-docs/")),
            "{}",
            v.vendor.id
        );
        for r in &v.rules {
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}/{}: rule ids are lowercase-with-dashes",
                v.vendor.id,
                r.id
            );
        }
    }
}

#[test]
fn widest_policy_has_no_duplicate_or_shadowed_rules() {
    let c = build(&widest(TODAY));
    let bad: Vec<String> = c
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::Duplicate { .. } | Warning::Shadowed { .. }))
        .map(|w| w.to_string())
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn only_the_documented_rules_open_ports_to_every_address() {
    let c = build(&widest(TODAY));
    let any: BTreeSet<&str> = c
        .warnings
        .iter()
        .filter_map(|w| match w {
            Warning::AnyRemote { rule, .. } => Some(rule.as_str()),
            _ => None,
        })
        .collect();
    let expected: BTreeSet<&str> = [
        "pexip/general-video-tcp",
        "pexip/general-video-udp",
        "pexip/general-provisioning",
        "pexip/general-signaling",
        "pexip/general-media",
        "pexip/general-ntp",
        "pexip/general-snmp-traps",
        "webrtc-sip-wss/stun",
        "vsee/p2p-udp",
        "vsee/p2p-udp-inbound",
    ]
    .into_iter()
    .collect();
    assert_eq!(any, expected);
}

#[test]
fn dated_rules_at_review_time() {
    let c = build(&widest(TODAY));
    assert!(c.pending.is_empty(), "{:?}", c.pending);
    let expired: Vec<(&str, String)> = c
        .expired
        .iter()
        .map(|d| (d.rule.as_str(), d.date.to_string()))
        .collect();
    assert_eq!(
        expired,
        [
            ("vsee/simplified-video-bridge-removed", "2021-02-16".into()),
            (
                "vsee/detailed-turn-international-removed",
                "2021-02-16".into()
            ),
        ]
    );
    // Every other rule of every vendor is compiled.
    let total: usize = policies().vendors.iter().map(|v| v.rules.len()).sum();
    assert_eq!(c.image.rules.len(), total - 2);
}

#[test]
fn unlisted_addresses_and_ports_are_denied() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        for port in [22, 25, 8080, 8443, 8801, 4443, 5349] {
            expect_deny(&ev, tcp(remote, port));
        }
        expect_deny(&ev, ingress(TCP, remote, 40000, 443));
        expect_deny(&ev, ingress(TCP, remote, 443, 40000));
    }
    expect_deny(&ev, egress(ICMP, UNLISTED, 0));
}

// ---------------------------------------------------------------------------------------
// Pexip by Kinly (pexip-kinly.toml)
// ---------------------------------------------------------------------------------------

#[test]
fn pexip_general_profile_opens_its_ports_to_any_address() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        // On 443 general-video-tcp and general-provisioning tie; the earlier rule wins.
        expect_allow(&ev, tcp(remote, 443), "pexip/general-video-tcp");
        expect_allow(&ev, udp(remote, 10000), "pexip/general-video-udp");
        expect_allow(&ev, tcp(remote, 80), "pexip/general-provisioning");
        expect_allow(&ev, tcp(remote, 389), "pexip/general-provisioning");
        for port in [1720, 5060, 5061] {
            expect_allow(&ev, tcp(remote, port), "pexip/general-signaling");
        }
        for port in [10001, 20000, 65535] {
            expect_allow(&ev, udp(remote, port), "pexip/general-media");
        }
        expect_allow(&ev, udp(remote, 123), "pexip/general-ntp");
        expect_allow(&ev, udp(remote, 162), "pexip/general-snmp-traps");
        // Ports Pexip does not list.
        expect_deny(&ev, tcp(remote, 1721));
        expect_deny(&ev, tcp(remote, 5062));
        expect_deny(&ev, tcp(remote, 390));
    }
}

#[test]
fn pexip_restricted_networks_win_over_the_general_rules() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [
        "176.121.88.0",
        "176.121.88.10",
        "176.121.95.255",
        "91.240.204.1",
        "91.240.207.254",
        "91.240.195.0",
        "91.240.195.255",
        "185.94.240.1",
        "185.94.243.255",
    ] {
        expect_allow(&ev, tcp(remote, 443), "pexip/restricted-video-tcp-global");
        expect_allow(&ev, udp(remote, 10000), "pexip/restricted-video-udp-global");
    }
    for remote in [
        "218.83.160.8",
        "218.83.160.15",
        "218.83.160.23",
        "112.65.213.227",
        "112.65.213.238",
    ] {
        expect_allow(&ev, tcp(remote, 443), "pexip/restricted-video-tcp-china");
        expect_allow(&ev, udp(remote, 10000), "pexip/restricted-video-udp-china");
    }
    for remote in ["196.34.160.224", "196.34.160.240", "196.34.160.255"] {
        expect_allow(
            &ev,
            tcp(remote, 443),
            "pexip/restricted-video-tcp-southern-africa",
        );
        expect_allow(
            &ev,
            udp(remote, 10000),
            "pexip/restricted-video-udp-southern-africa",
        );
    }
    for port in [80, 389, 443] {
        expect_allow(
            &ev,
            tcp("46.137.184.162", port),
            "pexip/restricted-provisioning",
        );
    }
    expect_allow(&ev, udp("176.58.109.199", 123), "pexip/restricted-ntp");
    expect_allow(
        &ev,
        udp("46.137.184.162", 162),
        "pexip/restricted-snmp-traps",
    );

    // Just outside the restricted networks only the general (any-address) rules apply.
    for remote in [
        "176.121.87.255",
        "176.121.96.0",
        "218.83.160.7",
        "218.83.160.24",
        "112.65.213.226",
        "112.65.213.239",
        "196.34.160.223",
        "196.34.161.0",
    ] {
        expect_allow(&ev, tcp(remote, 443), "pexip/general-video-tcp");
        expect_allow(&ev, udp(remote, 10000), "pexip/general-video-udp");
    }
    // Inside them, other ports fall to the general rules too (media), or nothing.
    expect_allow(&ev, udp("176.121.88.10", 10001), "pexip/general-media");
    expect_allow(&ev, tcp("176.121.88.10", 80), "pexip/general-provisioning");
    expect_deny(&ev, tcp("176.121.88.10", 8080));
    expect_deny(&ev, tcp("46.137.184.162", 636));
}

fn pexip_restricted(regions: &[&str]) -> Selection {
    Selection {
        today: date(TODAY),
        vendors: Some(vec!["pexip".into()]),
        levels: None,
        profiles: [("pexip".to_string(), "restricted".to_string())]
            .into_iter()
            .collect(),
        regions: Some(regions.iter().map(|r| r.to_string()).collect()),
        audit_vendors: Default::default(),
    }
}

#[test]
fn pexip_restricted_global_allows_only_the_global_networks() {
    let c = build(&pexip_restricted(&["global"]));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        tcp("176.121.88.10", 443),
        "pexip/restricted-video-tcp-global",
    );
    expect_allow(
        &ev,
        udp("185.94.240.1", 10000),
        "pexip/restricted-video-udp-global",
    );
    // Rules without a region still apply.
    expect_allow(
        &ev,
        tcp("46.137.184.162", 389),
        "pexip/restricted-provisioning",
    );
    expect_allow(&ev, udp("176.58.109.199", 123), "pexip/restricted-ntp");
    // China and Southern Africa are not selected; unlisted addresses get nothing.
    expect_deny(&ev, tcp("218.83.160.10", 443));
    expect_deny(&ev, udp("112.65.213.230", 10000));
    expect_deny(&ev, tcp("196.34.160.230", 443));
    assert_eq!(
        ev.evaluate(&tcp(UNLISTED, 443)),
        Verdict::NoAddressMatch,
        "no any-address rule in the restricted profile"
    );
    // Just outside a global network, and ports the rules do not list.
    expect_deny(&ev, tcp("176.121.96.0", 443));
    expect_deny(&ev, tcp("176.121.87.255", 443));
    expect_deny(&ev, tcp("91.240.196.0", 443));
    expect_deny(&ev, udp("176.121.88.10", 10001));
    expect_deny(&ev, tcp("176.121.88.10", 80));
    expect_deny(&ev, tcp("176.121.88.10", 5060));
    expect_deny(&ev, udp("46.137.184.162", 123));
    expect_deny(&ev, udp("176.58.109.199", 162));
    expect_deny(&ev, tcp("46.137.184.163", 443));
}

#[test]
fn pexip_restricted_china_and_southern_africa_ranges_are_exact() {
    let c = build(&pexip_restricted(&["china", "southern-africa"]));
    let ev = Evaluator::new(&c.image);
    for remote in [
        "218.83.160.8",
        "218.83.160.23",
        "112.65.213.227",
        "112.65.213.238",
    ] {
        expect_allow(&ev, tcp(remote, 443), "pexip/restricted-video-tcp-china");
        expect_allow(&ev, udp(remote, 10000), "pexip/restricted-video-udp-china");
    }
    for remote in [
        "218.83.160.7",
        "218.83.160.24",
        "112.65.213.226",
        "112.65.213.239",
    ] {
        expect_deny(&ev, tcp(remote, 443));
        expect_deny(&ev, udp(remote, 10000));
    }
    expect_allow(
        &ev,
        tcp("196.34.160.255", 443),
        "pexip/restricted-video-tcp-southern-africa",
    );
    expect_deny(&ev, tcp("196.34.160.223", 443));
    expect_deny(&ev, tcp("196.34.161.0", 443));
    expect_deny(&ev, tcp("176.121.88.10", 443)); // global is not selected
    expect_deny(&ev, tcp("218.83.160.8", 80));
}

#[test]
fn pexip_levels_and_the_general_profile() {
    let mandatory = Selection {
        levels: Some(vec![Level::Mandatory]),
        ..pexip_restricted(&["global"])
    };
    let c = build(&mandatory);
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        tcp("176.121.88.10", 443),
        "pexip/restricted-video-tcp-global",
    );
    expect_deny(&ev, udp("176.121.88.10", 10000)); // recommended
    expect_deny(&ev, udp("176.58.109.199", 123)); // recommended

    let general = Selection {
        profiles: [("pexip".to_string(), "general".to_string())]
            .into_iter()
            .collect(),
        ..only(TODAY, &["pexip"])
    };
    let c = build(&general);
    let ev = Evaluator::new(&c.image);
    expect_allow(&ev, tcp("176.121.88.10", 443), "pexip/general-video-tcp");
    expect_allow(&ev, udp(UNLISTED, 30000), "pexip/general-media");
    expect_deny(&ev, udp(UNLISTED, 9999));
    expect_deny(&ev, tcp(UNLISTED, 8080));
}

// ---------------------------------------------------------------------------------------
// WebRTC SIP-over-WSS provider (webrtc-sip-wss.toml)
// ---------------------------------------------------------------------------------------

#[test]
fn webrtc_signaling_to_the_gateway_only() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    expect_allow(&ev, tcp("52.71.32.188", 8088), "webrtc-sip-wss/signaling");
    expect_allow(&ev, tcp("52.71.32.188", 8089), "webrtc-sip-wss/signaling");
    expect_deny(&ev, tcp("52.71.32.188", 8087));
    expect_deny(&ev, tcp("52.71.32.188", 8090));
    expect_deny(&ev, tcp("52.71.32.187", 8088));
    expect_deny(&ev, tcp("52.71.32.189", 8089));
    expect_deny(&ev, tcp(UNLISTED, 8089));
}

#[test]
fn webrtc_stun_to_any_address() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6, "52.71.32.188"] {
        expect_allow(&ev, tcp(remote, 3478), "webrtc-sip-wss/stun");
        expect_allow(&ev, udp(remote, 3478), "webrtc-sip-wss/stun");
        expect_deny(&ev, tcp(remote, 3479));
        expect_deny(&ev, tcp(remote, 3477));
    }
    // The narrower range wins: udp 3478 to Zoom is STUN's, 3479 Zoom's.
    expect_allow(&ev, udp("2407:30c0::1", 3478), "webrtc-sip-wss/stun");
    expect_allow(&ev, udp("2407:30c0::1", 3479), "zoom/cloud-udp");
}

#[test]
fn webrtc_media_is_related_ingress_from_the_gateway() {
    let c = build(&only(TODAY, &["webrtc-sip-wss"]));
    let ev = Evaluator::new(&c.image);
    for port in [10000, 15000, 20000] {
        expect_allow(
            &ev,
            ingress(UDP, "52.71.32.188", port, 40000),
            "webrtc-sip-wss/media",
        );
    }
    let Verdict::Allow { rule } = ev.evaluate(&ingress(UDP, "52.71.32.188", 10000, 40000)) else {
        unreachable!()
    };
    assert!(ev.rule(rule).unwrap().related);
    expect_deny(&ev, ingress(UDP, "52.71.32.188", 9999, 40000));
    expect_deny(&ev, ingress(UDP, "52.71.32.188", 20001, 40000));
    expect_deny(&ev, ingress(UDP, "52.71.32.187", 10000, 40000));
    expect_deny(&ev, ingress(UDP, "52.71.32.189", 10000, 40000));
    expect_deny(&ev, ingress(TCP, "52.71.32.188", 10000, 40000));
    // Media is ingress only.
    expect_deny(&ev, udp("52.71.32.188", 10000));
    // Under the widest policy VSee's "inbound UDP on any port from any host" also covers
    // these packets and needs no live flow: it allows them whatever the media rule's
    // condition, so they count on it (a related rule never shadows an unconditional one).
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        ingress(UDP, "52.71.32.188", 10000, 40000),
        "vsee/p2p-udp-inbound",
    );
    // Outside the media's source ports VSee's rule still admits them.
    expect_allow(
        &ev,
        ingress(UDP, "52.71.32.188", 9999, 40000),
        "vsee/p2p-udp-inbound",
    );
}

// ---------------------------------------------------------------------------------------
// Zoom (zoom.toml): only the IPv6 networks survived the capture
// ---------------------------------------------------------------------------------------

const ZOOM_INSIDE: [&str; 6] = [
    "2407:30c0::",
    "2407:30c0:ffff:ffff:ffff:ffff:ffff:ffff",
    "2620:123:2000::1",
    "2620:123:20ff:ffff:ffff:ffff:ffff:ffff",
    "2600:9000:2600::1",
    "2600:9000:2600:ffff:ffff:ffff:ffff:ffff",
];

const ZOOM_OUTSIDE: [&str; 6] = [
    "2407:30bf:ffff:ffff:ffff:ffff:ffff:ffff",
    "2407:30c1::",
    "2620:123:1fff:ffff:ffff:ffff:ffff:ffff",
    "2620:123:2100::",
    "2600:9000:25ff:ffff:ffff:ffff:ffff:ffff",
    "2600:9000:2601::",
];

#[test]
fn zoom_cloud_egress() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in ZOOM_INSIDE {
        // A rule naming addresses beats Pexip's any-address rule on 443.
        expect_allow(&ev, tcp(remote, 443), "zoom/cloud-tcp");
        expect_allow(&ev, tcp(remote, 8801), "zoom/cloud-tcp");
        expect_allow(&ev, tcp(remote, 8802), "zoom/cloud-tcp");
        expect_allow(&ev, udp(remote, 3479), "zoom/cloud-udp");
        expect_allow(&ev, udp(remote, 8801), "zoom/cloud-udp");
        expect_allow(&ev, udp(remote, 8810), "zoom/cloud-udp");
        expect_deny(&ev, tcp(remote, 8800));
        expect_deny(&ev, tcp(remote, 8803));
        expect_deny(&ev, tcp(remote, 8810));
    }
    for remote in ZOOM_OUTSIDE {
        expect_deny(&ev, tcp(remote, 8801));
        expect_deny(&ev, tcp(remote, 8802));
        expect_allow(&ev, tcp(remote, 443), "pexip/general-video-tcp");
    }
    // The IPv4 list was lost: no IPv4 address gets Zoom's ports.
    expect_deny(&ev, tcp(UNLISTED, 8801));
}

#[test]
fn zoom_alone_udp_ports_are_exact() {
    let c = build(&only(TODAY, &["zoom"]));
    let ev = Evaluator::new(&c.image);
    for remote in ZOOM_INSIDE {
        expect_allow(&ev, udp(remote, 3478), "zoom/cloud-udp");
        expect_deny(&ev, udp(remote, 3477));
        expect_deny(&ev, udp(remote, 3480));
        expect_deny(&ev, udp(remote, 8800));
        expect_deny(&ev, udp(remote, 8811));
        expect_deny(&ev, tcp(remote, 80));
    }
    for remote in ZOOM_OUTSIDE {
        expect_deny(&ev, udp(remote, 8801));
        expect_deny(&ev, tcp(remote, 443));
    }
    assert_eq!(ev.evaluate(&tcp(UNLISTED, 443)), Verdict::NoAddressMatch);
}

#[test]
fn zoom_inbound_from_zoom_ports() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in ZOOM_INSIDE {
        expect_allow(
            &ev,
            ingress(TCP, remote, 8801, 50000),
            "zoom/cloud-tcp-inbound",
        );
        expect_allow(
            &ev,
            ingress(TCP, remote, 443, 50000),
            "zoom/cloud-tcp-inbound",
        );
        expect_deny(&ev, ingress(TCP, remote, 8803, 50000));
        expect_deny(&ev, ingress(TCP, remote, 50000, 8801));
    }
    for remote in ZOOM_OUTSIDE {
        expect_deny(&ev, ingress(TCP, remote, 8801, 50000));
    }

    let c = build(&only(TODAY, &["zoom"]));
    let ev = Evaluator::new(&c.image);
    for remote in ZOOM_INSIDE {
        expect_allow(
            &ev,
            ingress(UDP, remote, 8805, 50000),
            "zoom/cloud-udp-inbound",
        );
        expect_allow(
            &ev,
            ingress(UDP, remote, 3478, 50000),
            "zoom/cloud-udp-inbound",
        );
        expect_deny(&ev, ingress(UDP, remote, 8811, 50000));
        expect_deny(&ev, ingress(UDP, remote, 50000, 8801));
    }
    for remote in ZOOM_OUTSIDE {
        expect_deny(&ev, ingress(UDP, remote, 8801, 50000));
    }

    // The inbound rules are recommended: a mandatory-only site has none.
    let mandatory = Selection {
        levels: Some(vec![Level::Mandatory]),
        ..only(TODAY, &["zoom"])
    };
    let c = build(&mandatory);
    let ev = Evaluator::new(&c.image);
    expect_allow(&ev, tcp("2407:30c0::1", 8801), "zoom/cloud-tcp");
    expect_deny(&ev, ingress(TCP, "2407:30c0::1", 8801, 50000));
    expect_deny(&ev, ingress(UDP, "2407:30c0::1", 8801, 50000));
}

// ---------------------------------------------------------------------------------------
// VSee (vsee.toml)
// ---------------------------------------------------------------------------------------

const VSEE_MESSENGER: [&str; 5] = [
    "13.52.171.113",
    "52.9.150.124",
    "184.72.21.195",
    "184.72.47.83",
    "54.241.101.173",
];

const VSEE_CLINIC: [&str; 13] = [
    "13.52.7.6",
    "13.56.46.159",
    "52.52.174.230",
    "54.177.111.163",
    "13.52.58.237",
    "18.144.134.162",
    "54.241.243.156",
    "54.176.136.131",
    "13.56.219.50",
    "13.56.202.120",
    "13.56.70.155",
    "50.18.137.251",
    "13.52.25.116",
];

/// Declared "no longer valid" on 2023-08-01; must never be allowed.
const VSEE_NO_LONGER_VALID: [&str; 10] = [
    "54.153.119.24",
    "18.144.69.7",
    "52.53.171.200",
    "54.176.88.134",
    "18.144.8.250",
    "52.53.190.38",
    "54.177.38.2",
    "54.215.4.54",
    "54.193.243.179",
    "184.72.50.250",
];

#[test]
fn vsee_messenger_webhook_sources() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in VSEE_MESSENGER {
        expect_allow(
            &ev,
            ingress(TCP, remote, 40000, 443),
            "vsee/messenger-inbound",
        );
        expect_allow(
            &ev,
            ingress(TCP, remote, 40000, 22),
            "vsee/messenger-inbound",
        );
        expect_deny(&ev, ingress(TCP, remote, 40000, 80));
        expect_deny(&ev, ingress(TCP, remote, 443, 8443));
        // Ingress only: no egress to these addresses beyond the any-address rules.
        expect_deny(&ev, tcp(remote, 22));
    }
    expect_deny(&ev, ingress(TCP, "13.52.171.112", 40000, 443));
    expect_deny(&ev, ingress(TCP, "13.52.171.114", 40000, 443));
    expect_deny(&ev, ingress(TCP, "52.9.150.125", 40000, 22));
}

#[test]
fn vsee_clinic_webhook_sources() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in VSEE_CLINIC {
        expect_allow(&ev, ingress(TCP, remote, 40000, 443), "vsee/clinic-inbound");
        expect_allow(&ev, ingress(TCP, remote, 40000, 22), "vsee/clinic-inbound");
        expect_deny(&ev, ingress(TCP, remote, 40000, 21));
        expect_deny(&ev, ingress(TCP, remote, 40000, 444));
    }
    expect_deny(&ev, ingress(TCP, "13.52.7.5", 40000, 443));
    expect_deny(&ev, ingress(TCP, "13.52.7.7", 40000, 443));
    expect_deny(&ev, ingress(TCP, "13.52.25.117", 40000, 443));
}

#[test]
fn vsee_addresses_no_longer_valid_are_never_allowed() {
    // Not encoded at all, so no `today` brings them back.
    for today in ["2020-01-01", "2023-07-31", "2023-08-01", TODAY] {
        let c = build(&widest(today));
        let ev = Evaluator::new(&c.image);
        for remote in VSEE_NO_LONGER_VALID {
            for local in [22, 443] {
                expect_deny(&ev, ingress(TCP, remote, 40000, local));
            }
            expect_deny(&ev, tcp(remote, 8443));
        }
    }
    let set = policies();
    let vsee = set.vendors.iter().find(|v| v.vendor.id == "vsee").unwrap();
    for remote in VSEE_NO_LONGER_VALID {
        let a = addr(remote);
        for rule in &vsee.rules {
            for r in &rule.remotes {
                if let Remote::Nets(nets) = r {
                    assert!(
                        !nets.iter().any(|n| n.contains(&a)),
                        "vsee/{} lists {remote}, which is no longer valid",
                        rule.id
                    );
                }
            }
        }
    }
}

#[test]
fn vsee_peer_to_peer_udp_any_port_any_host() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        for port in [1, 53, 5000, 9999] {
            expect_allow(&ev, udp(remote, port), "vsee/p2p-udp");
            expect_allow(
                &ev,
                ingress(UDP, remote, port, 40000),
                "vsee/p2p-udp-inbound",
            );
            expect_allow(
                &ev,
                ingress(UDP, remote, 40000, port),
                "vsee/p2p-udp-inbound",
            );
        }
        // Narrower rules keep their ports.
        expect_allow(&ev, udp(remote, 10001), "pexip/general-media");
        // UDP only.
        expect_deny(&ev, tcp(remote, 5000));
        expect_deny(&ev, ingress(TCP, remote, 5000, 5000));
    }

    // Both are recommended: a mandatory-only site has no open UDP.
    let mandatory = Selection {
        levels: Some(vec![Level::Mandatory]),
        ..only(TODAY, &["vsee"])
    };
    let c = build(&mandatory);
    let ev = Evaluator::new(&c.image);
    expect_deny(&ev, udp(UNLISTED, 5000));
    expect_deny(&ev, ingress(UDP, UNLISTED, 5000, 5000));
    expect_deny(&ev, ingress(TCP, VSEE_CLINIC[0], 40000, 443));
}

#[test]
fn vsee_hostname_rules_open_no_addresses() {
    let set = policies();
    let vsee = set.vendors.iter().find(|v| v.vendor.id == "vsee").unwrap();
    let named: Vec<&str> = vsee
        .rules
        .iter()
        .filter(|r| {
            r.remotes
                .iter()
                .all(|x| matches!(x, Remote::Host(_) | Remote::Wildcard(_)))
        })
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        named,
        [
            "simplified-https",
            "simplified-turn",
            "simplified-turn-allocated",
            "simplified-video-bridge",
            "simplified-video-bridge-removed",
            "simplified-stun",
            "detailed-turn-us",
            "detailed-turn-international-removed",
            "detailed-video-bridge-us",
            "detailed-video-bridge-us-2021",
        ]
    );
    // Judged on each rule's last day, so the dated ones are compiled too.
    for today in ["2021-02-16", TODAY] {
        let c = build(&widest(today));
        let owners = owning_rules(&c);
        for id in &named {
            assert!(
                !owners.contains(&format!("vsee/{id}")),
                "{today}: vsee/{id}"
            );
        }
        let ev = Evaluator::new(&c.image);
        // TURN, video bridge and STUN ports to an unrelated address are not VSee's named
        // rules (the p2p any-port rule owns the UDP ones).
        for port in [3478, 10000, 6001, 6256, 49152] {
            let by = allowed_by(&ev, &udp(UNLISTED, port)).unwrap_or_default();
            assert!(
                !by.starts_with("vsee/simplified") && !by.starts_with("vsee/detailed"),
                "{today}: udp {port} attributed to {by}"
            );
        }
        expect_deny(&ev, tcp(UNLISTED, 4443));
    }
    // Only VSee selected, with only the named alternative: nothing has an address.
    let c = build(&Selection {
        profiles: [("vsee".to_string(), "simplified".to_string())]
            .into_iter()
            .collect(),
        levels: Some(vec![Level::Mandatory, Level::Optional]),
        ..only(TODAY, &["vsee"])
    });
    let ev = Evaluator::new(&c.image);
    assert!(c.image.dst4.is_empty() && c.image.dst6.is_empty());
    expect_deny(&ev, tcp(UNLISTED, 443));
    expect_deny(&ev, udp(UNLISTED, 3478));
    expect_deny(&ev, udp(UNLISTED, 10000));
}

#[test]
fn vsee_dated_rules_on_both_sides_of_their_dates() {
    let cases = [
        // (rule, last day before, first day in force) for not_before
        ("vsee/simplified-turn-allocated", "2020-05-31", "2020-06-01"),
        ("vsee/detailed-turn-us", "2020-06-07", "2020-06-08"),
        ("vsee/simplified-stun", "2020-07-12", "2020-07-13"),
        (
            "vsee/detailed-video-bridge-us-2021",
            "2021-02-15",
            "2021-02-16",
        ),
    ];
    for (rule, before, from) in cases {
        assert_eq!(
            state(&widest(before), rule),
            "pending",
            "{rule} on {before}"
        );
        assert_eq!(state(&widest(from), rule), "compiled", "{rule} on {from}");
    }
    for rule in [
        "vsee/simplified-video-bridge-removed",
        "vsee/detailed-turn-international-removed",
    ] {
        assert_eq!(state(&widest("2021-02-15"), rule), "compiled", "{rule}");
        assert_eq!(state(&widest("2021-02-16"), rule), "compiled", "{rule}");
        assert_eq!(state(&widest("2021-02-17"), rule), "expired", "{rule}");
    }
    // Profiles and regions select the dated rules as any other.
    let detailed_us = Selection {
        profiles: [("vsee".to_string(), "detailed".to_string())]
            .into_iter()
            .collect(),
        regions: Some(vec!["us".into()]),
        ..only("2021-02-16", &["vsee"])
    };
    assert_eq!(
        state(&detailed_us, "vsee/detailed-turn-international-removed"),
        "absent"
    );
    assert_eq!(state(&detailed_us, "vsee/simplified-turn"), "absent");
    assert_eq!(state(&detailed_us, "vsee/detailed-turn-us"), "compiled");
}

// ---------------------------------------------------------------------------------------
// Whereby (whereby.toml): domains only
// ---------------------------------------------------------------------------------------

#[test]
fn whereby_names_domains_only() {
    let set = policies();
    let whereby = set
        .vendors
        .iter()
        .find(|v| v.vendor.id == "whereby")
        .unwrap();
    for rule in &whereby.rules {
        assert_eq!(rule.direction, Direction::Egress, "whereby/{}", rule.id);
        assert!(
            rule.remotes
                .iter()
                .all(|r| matches!(r, Remote::Host(_) | Remote::Wildcard(_))),
            "whereby/{} lists addresses",
            rule.id
        );
    }
    let c = build(&widest(TODAY));
    assert_eq!(
        c.image
            .rules
            .iter()
            .filter(|r| r.vendor == "whereby")
            .count(),
        5
    );
    let needs_dns = c
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::NeedsDns { rule, .. } if rule.starts_with("whereby/")))
        .count();
    assert_eq!(needs_dns, 5);
    assert!(!owning_rules(&c).iter().any(|r| r.starts_with("whereby/")));
    let ev = Evaluator::new(&c.image);
    // Whereby's ports to unrelated addresses belong to other vendors' any-address rules.
    expect_allow(&ev, tcp(UNLISTED, 443), "pexip/general-video-tcp");
    expect_allow(&ev, udp(UNLISTED, 443), "vsee/p2p-udp");
    expect_allow(&ev, udp(UNLISTED, 2000), "vsee/p2p-udp");
}

#[test]
fn whereby_alone_allows_nothing_without_dns() {
    let c = build(&only(TODAY, &["whereby"]));
    assert_eq!(c.image.rules.len(), 5);
    assert!(c.image.dst4.is_empty() && c.image.dst6.is_empty());
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        assert_eq!(ev.evaluate(&tcp(remote, 443)), Verdict::NoAddressMatch);
        expect_deny(&ev, udp(remote, 443));
        expect_deny(&ev, udp(remote, 1024));
        expect_deny(&ev, udp(remote, 65535));
    }
}

// ---------------------------------------------------------------------------------------
// SecureVideo and One-Click (Twilio): every destination was lost, so no rules
// ---------------------------------------------------------------------------------------

#[test]
fn securevideo_has_no_rules_and_opens_nothing() {
    let set = policies();
    let v = set
        .vendors
        .iter()
        .find(|v| v.vendor.id == "securevideo")
        .unwrap();
    assert!(v.rules.is_empty());
    let c = build(&only(TODAY, &["securevideo"]));
    assert!(c.image.rules.is_empty() && c.warnings.is_empty());
    let ev = Evaluator::new(&c.image);
    assert_eq!(ev.evaluate(&tcp(UNLISTED, 443)), Verdict::NoAddressMatch);
    expect_deny(&ev, tcp(UNLISTED, 80));
    expect_deny(&ev, tcp(UNLISTED6, 443));
    let c = build(&widest(TODAY));
    assert!(!c.image.rules.iter().any(|r| r.vendor == "securevideo"));
}

#[test]
fn one_click_twilio_has_no_rules_and_opens_nothing() {
    let set = policies();
    let v = set
        .vendors
        .iter()
        .find(|v| v.vendor.id == "one-click-twilio")
        .unwrap();
    assert!(v.rules.is_empty());
    let c = build(&only(TODAY, &["one-click-twilio"]));
    assert!(c.image.rules.is_empty() && c.warnings.is_empty());
    let ev = Evaluator::new(&c.image);
    expect_deny(&ev, tcp(UNLISTED, 443));
    expect_deny(&ev, udp(UNLISTED, 3478));
    expect_deny(&ev, udp(UNLISTED, 10000));
    expect_deny(&ev, tcp(UNLISTED, 5349));
    // The documented media ports that no other vendor opens stay closed in the widest policy.
    let c = build(&widest(TODAY));
    assert!(!c.image.rules.iter().any(|r| r.vendor == "one-click-twilio"));
    let ev = Evaluator::new(&c.image);
    expect_deny(&ev, tcp(UNLISTED, 5349));
    expect_deny(&ev, tcp(UNLISTED6, 5349));
}
