//! VSee (vsee.toml)

use super::*;

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
            // Inbound only from a remote the host already sends to.
            for probe in [
                ingress(UDP, remote, port, 40000),
                ingress(UDP, remote, 40000, port),
            ] {
                expect_allow(&ev, probe, "vsee/p2p-udp-inbound");
                let Verdict::Allow { rule } = ev.evaluate(&probe) else {
                    unreachable!()
                };
                assert!(ev.rule(rule).unwrap().related, "{probe:?}");
            }
        }
        // Narrower rules keep their ports.
        expect_allow(&ev, udp(remote, 10001), "pexip/general-media");
        // UDP only.
        expect_deny(&ev, tcp(remote, 5000));
        expect_deny(&ev, ingress(TCP, remote, 5000, 5000));
    }

    // Both halves are optional (the stricter of VSee's two readings): a site that selects
    // mandatory and recommended rules has no open UDP.
    for levels in [
        vec![Level::Mandatory],
        vec![Level::Mandatory, Level::Recommended],
    ] {
        let selection = Selection {
            levels: Some(levels),
            ..only(TODAY, &["vsee"])
        };
        let c = build(&selection);
        let ev = Evaluator::new(&c.image);
        expect_deny(&ev, udp(UNLISTED, 5000));
        expect_deny(&ev, ingress(UDP, UNLISTED, 5000, 5000));
    }
    let mandatory = Selection {
        levels: Some(vec![Level::Mandatory]),
        ..only(TODAY, &["vsee"])
    };
    let c = build(&mandatory);
    let ev = Evaluator::new(&c.image);
    expect_deny(&ev, ingress(TCP, VSEE_CLINIC[0], 40000, 443));
}

#[test]
fn vsee_simplified_profile_has_every_recovered_port() {
    let c = build(&Selection {
        profiles: [("vsee".to_string(), "simplified".to_string())]
            .into_iter()
            .collect(),
        ..only(TODAY, &["vsee"])
    });
    let ev = Evaluator::new(&c.image);
    let name = "cl-coturn-ohio01.vsee.com";
    let cases: [(Probe, Option<&str>); 22] = [
        (tcp(UNLISTED, 80), Some("simplified-bandwidth-test")),
        (tcp(UNLISTED, 443), Some("simplified-https")),
        (tcp(UNLISTED, 3478), Some("simplified-tcp")),
        (tcp(UNLISTED, 5222), Some("simplified-tcp")),
        (udp(UNLISTED, 1853), Some("simplified-relay-udp")),
        (udp(UNLISTED, 6000), Some("simplified-relay-udp")),
        (udp(UNLISTED, 3478), Some("simplified-turn")),
        (udp(UNLISTED, 6001), Some("simplified-stun")),
        (udp(UNLISTED, 6256), Some("simplified-stun")),
        (udp(UNLISTED, 10000), Some("simplified-video-bridge")),
        (udp(UNLISTED, 49152), Some("simplified-turn-allocated")),
        (udp(UNLISTED, 65535), Some("simplified-turn-allocated")),
        // Neighbours fall to the optional any-address UDP route, or nothing for TCP.
        (udp(UNLISTED, 1852), Some("p2p-udp")),
        (udp(UNLISTED, 6002), Some("p2p-udp")),
        (udp(UNLISTED, 49151), Some("p2p-udp")),
        (tcp(UNLISTED, 79), None),
        (tcp(UNLISTED, 81), None),
        (tcp(UNLISTED, 3477), None),
        (tcp(UNLISTED, 5221), None),
        (tcp(UNLISTED, 5223), None),
        (tcp(UNLISTED, 4443), None),
        (tcp(UNLISTED, 1853), None),
    ];
    for (probe, expected) in cases {
        assert_eq!(
            allowed_name(&ev, name, &probe),
            expected.map(|r| format!("vsee/{r}")),
            "{probe:?}"
        );
    }
    // Not a VSee name: only the any-address route.
    assert_eq!(
        allowed_name(&ev, "vsee.com.example", &tcp(UNLISTED, 5222)),
        None
    );
    assert_eq!(
        allowed_name(&ev, "vsee.com.example", &udp(UNLISTED, 1853)).as_deref(),
        Some("vsee/p2p-udp")
    );
}

#[test]
fn vsee_region_identification_service() {
    let detailed = |today: &str| Selection {
        profiles: [("vsee".to_string(), "detailed".to_string())]
            .into_iter()
            .collect(),
        regions: Some(vec!["international".into()]),
        ..only(today, &["vsee"])
    };
    let c = build(&detailed(TODAY));
    let ev = Evaluator::new(&c.image);
    assert_eq!(
        allowed_name(&ev, "region.vsee.com", &tcp(UNLISTED, 443)).as_deref(),
        Some("vsee/detailed-region")
    );
    assert_eq!(
        allowed_name(&ev, "region.vsee.com", &tcp(UNLISTED, 80)),
        None
    );
    assert_eq!(
        allowed_name(&ev, "x.region.vsee.com", &tcp(UNLISTED, 443)),
        None
    );
    assert_eq!(
        state(&detailed("2020-07-12"), "vsee/detailed-region"),
        "pending"
    );
    assert_eq!(
        state(&detailed("2020-07-13"), "vsee/detailed-region"),
        "compiled"
    );
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
            "simplified-bandwidth-test",
            "simplified-tcp",
            "simplified-relay-udp",
            "detailed-turn-us",
            "detailed-turn-international-removed",
            "detailed-video-bridge-us",
            "detailed-video-bridge-us-2021",
            "detailed-region",
        ]
    );
    // Judged on each rule's last day, so the dated ones are compiled too.
    for today in ["2021-02-15", TODAY] {
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
    // Only VSee selected, with only the named alternative and without the optional
    // any-address route or the (recommended) webhook sources: nothing has an address.
    let c = build(&Selection {
        profiles: [("vsee".to_string(), "simplified".to_string())]
            .into_iter()
            .collect(),
        levels: Some(vec![Level::Mandatory]),
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
        // Removed by the update of 2021-02-16: last in force the day before.
        assert_eq!(state(&widest("2021-02-15"), rule), "compiled", "{rule}");
        assert_eq!(state(&widest("2021-02-16"), rule), "expired", "{rule}");
    }
    // Profiles and regions select the dated rules as any other.
    let detailed_us = Selection {
        profiles: [("vsee".to_string(), "detailed".to_string())]
            .into_iter()
            .collect(),
        regions: Some(vec!["us".into()]),
        ..only("2021-02-15", &["vsee"])
    };
    assert_eq!(
        state(&detailed_us, "vsee/detailed-turn-international-removed"),
        "absent"
    );
    assert_eq!(state(&detailed_us, "vsee/simplified-turn"), "absent");
    assert_eq!(state(&detailed_us, "vsee/detailed-turn-us"), "compiled");
}
