//! Zoom (zoom.toml): the document's IPv6 networks, the recovered IPv4 list with its dated
//! history, and the web names

use super::*;

const ZOOM_INSIDE: [&str; 12] = [
    "3.7.35.0",
    "3.7.35.127",
    "170.114.0.0",
    "170.114.255.255",
    "20.203.158.80",
    "20.203.158.95",
    "2407:30c0::",
    "2407:30c0:ffff:ffff:ffff:ffff:ffff:ffff",
    "2620:123:2000::1",
    "2620:123:20ff:ffff:ffff:ffff:ffff:ffff",
    "2600:9000:2600::1",
    "2600:9000:2600:ffff:ffff:ffff:ffff:ffff",
];

const ZOOM_OUTSIDE: [&str; 12] = [
    "3.7.34.255",
    "3.7.35.128",
    "170.113.255.255",
    "170.115.0.0",
    "20.203.158.79",
    "20.203.158.96",
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
        // 443 is other vendors' there (Pexip's any-address rule, Twilio's media next door).
        let by = allowed_by(&ev, &tcp(remote, 443)).unwrap_or_default();
        assert!(!by.starts_with("zoom/"), "{remote}: 443 allowed by {by}");
    }
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

/// One address of each dated group of zoom.toml, with the group's rule suffix.
const ZOOM_GONE_2023_09: &str = "3.22.11.7"; // 3.22.11.0/24
const ZOOM_ORACLE: &str = "129.151.40.5"; // 129.151.40.0/25, gone by 2024-08
const ZOOM_GONE_2024_08: &str = "18.157.88.200"; // 18.157.88.0/24
const ZOOM_ADDED_2023_07_GONE_2024_08: &str = "16.63.30.9"; // 16.63.30.0/24
const ZOOM_ADDED_2023_07_GONE_2026_07: &str = "16.63.29.9"; // 16.63.29.0/24
const ZOOM_GONE_2026_07: &str = "8.5.129.255"; // 8.5.128.0/23
const ZOOM_ADDED_2026_07: &str = "137.66.128.1"; // 137.66.128.0/17

/// Which Zoom rule allows tcp 8801 to `remote` on `day` (Zoom alone), if any.
fn zoom_8801(day: &str, remote: &str) -> Option<String> {
    let c = build(&only(day, &["zoom"]));
    allowed_by(&Evaluator::new(&c.image), &tcp(remote, 8801))
}

#[test]
fn zoom_history_on_both_sides_of_each_date() {
    let cases: [(&str, &str, Option<&str>); 19] = [
        // The document's era: the 2023 list, but not yet the July additions.
        (
            "2023-06-30",
            ZOOM_GONE_2023_09,
            Some("cloud-tcp-gone-2023-09"),
        ),
        ("2023-06-30", ZOOM_ORACLE, Some("cloud-tcp-gone-2024-08")),
        ("2023-06-30", ZOOM_ADDED_2023_07_GONE_2024_08, None),
        ("2023-06-30", ZOOM_ADDED_2023_07_GONE_2026_07, None),
        (
            "2023-07-01",
            ZOOM_ADDED_2023_07_GONE_2024_08,
            Some("cloud-tcp-2023-07-gone-2024-08"),
        ),
        (
            "2023-07-01",
            ZOOM_ADDED_2023_07_GONE_2026_07,
            Some("cloud-tcp-2023-07-gone-2026-07"),
        ),
        // Summer 2023 removals.
        (
            "2023-09-09",
            ZOOM_GONE_2023_09,
            Some("cloud-tcp-gone-2023-09"),
        ),
        ("2023-09-10", ZOOM_GONE_2023_09, None),
        // Oracle Cloud and the others, gone from the 2024-08-01 snapshot.
        ("2024-07-31", ZOOM_ORACLE, Some("cloud-tcp-gone-2024-08")),
        (
            "2024-07-31",
            ZOOM_GONE_2024_08,
            Some("cloud-tcp-gone-2024-08"),
        ),
        ("2024-08-01", ZOOM_ORACLE, None),
        ("2024-08-01", ZOOM_GONE_2024_08, None),
        ("2024-08-01", ZOOM_ADDED_2023_07_GONE_2024_08, None),
        (
            "2024-08-01",
            ZOOM_ADDED_2023_07_GONE_2026_07,
            Some("cloud-tcp-2023-07-gone-2026-07"),
        ),
        // The 2026-07-02 mirror: the rest of the 2024 list gone, four new prefixes.
        (
            "2026-07-01",
            ZOOM_GONE_2026_07,
            Some("cloud-tcp-gone-2026-07"),
        ),
        ("2026-07-01", ZOOM_ADDED_2026_07, None),
        ("2026-07-02", ZOOM_GONE_2026_07, None),
        ("2026-07-02", ZOOM_ADDED_2023_07_GONE_2026_07, None),
        (
            "2026-07-02",
            ZOOM_ADDED_2026_07,
            Some("cloud-tcp-added-2026-07"),
        ),
    ];
    for (day, remote, expected) in cases {
        assert_eq!(
            zoom_8801(day, remote),
            expected.map(|r| format!("zoom/{r}")),
            "{remote} on {day}"
        );
    }
    // The stable prefixes hold on every one of those days.
    for day in [
        "2023-06-30",
        "2023-09-10",
        "2024-08-01",
        "2026-07-02",
        TODAY,
    ] {
        assert_eq!(
            zoom_8801(day, "170.114.10.10"),
            Some("zoom/cloud-tcp".to_string()),
            "{day}"
        );
    }
}

#[test]
fn zoom_today_opens_only_what_zoom_lists() {
    let c = build(&only(TODAY, &["zoom"]));
    let ev = Evaluator::new(&c.image);
    for remote in [
        ZOOM_GONE_2023_09,
        ZOOM_ORACLE,
        ZOOM_GONE_2024_08,
        ZOOM_ADDED_2023_07_GONE_2024_08,
        ZOOM_ADDED_2023_07_GONE_2026_07,
        ZOOM_GONE_2026_07,
    ] {
        assert_eq!(
            ev.evaluate(&tcp(remote, 8801)),
            Verdict::NoAddressMatch,
            "{remote}"
        );
        assert_eq!(
            ev.evaluate(&udp(remote, 8801)),
            Verdict::NoAddressMatch,
            "{remote}"
        );
        expect_deny(&ev, ingress(UDP, remote, 8801, 50000));
    }
    expect_allow(
        &ev,
        tcp(ZOOM_ADDED_2026_07, 443),
        "zoom/cloud-tcp-added-2026-07",
    );
    expect_allow(
        &ev,
        udp(ZOOM_ADDED_2026_07, 8810),
        "zoom/cloud-udp-added-2026-07",
    );
    expect_allow(
        &ev,
        ingress(UDP, ZOOM_ADDED_2026_07, 3478, 50000),
        "zoom/cloud-udp-inbound-added-2026-07",
    );
    // The edges of the added /17 and /27 prefixes.
    expect_allow(
        &ev,
        tcp("137.66.255.255", 8802),
        "zoom/cloud-tcp-added-2026-07",
    );
    expect_deny(&ev, tcp("137.66.127.255", 8802));
    expect_allow(
        &ev,
        tcp("121.244.203.192", 8801),
        "zoom/cloud-tcp-added-2026-07",
    );
    expect_allow(
        &ev,
        tcp("121.244.203.223", 8801),
        "zoom/cloud-tcp-added-2026-07",
    );
    expect_deny(&ev, tcp("121.244.203.224", 8801));
    expect_deny(&ev, tcp("121.244.203.191", 8801));

    // Every dated group is reported: 5 expired groups of 4 rule shapes, nothing pending.
    assert!(c.pending.is_empty(), "{:?}", c.pending);
    let expired: BTreeSet<&str> = c.expired.iter().map(|d| d.rule.as_str()).collect();
    assert_eq!(expired.len(), 20, "{expired:?}");
    for group in [
        "gone-2023-09",
        "2023-07-gone-2024-08",
        "2023-07-gone-2026-07",
        "gone-2024-08",
        "gone-2026-07",
    ] {
        for shape in ["tcp", "udp", "tcp-inbound", "udp-inbound"] {
            let rule = format!("zoom/cloud-{shape}-{group}");
            assert!(
                expired.contains(rule.as_str()),
                "{rule} is not reported expired"
            );
        }
    }
    // Before 2026-07-02 the added prefixes are pending.
    let c = build(&only("2026-06-30", &["zoom"]));
    assert_eq!(c.pending.len(), 4, "{:?}", c.pending);
}

#[test]
fn zoom_dated_groups_keep_the_document_list_whole() {
    // Every prefix of the SecureVideo-era list (312) plus the four added later, each in
    // exactly one group, and each group with the same list in its four rule shapes.
    let set = policies();
    let zoom = set.vendors.iter().find(|v| v.vendor.id == "zoom").unwrap();
    let mut v4 = BTreeSet::new();
    let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for rule in zoom.rules.iter().filter(|r| r.id.starts_with("cloud-")) {
        let group = rule
            .id
            .trim_start_matches("cloud-")
            .trim_start_matches("tcp")
            .trim_start_matches("udp")
            .trim_start_matches("-inbound")
            .to_string();
        let nets: Vec<String> = rule
            .remotes
            .iter()
            .flat_map(|r| match r {
                Remote::Nets(n) => n.iter().map(std::string::ToString::to_string).collect(),
                _ => vec![],
            })
            .collect();
        match by_group.get(&group) {
            Some(first) => assert_eq!(
                first, &nets,
                "zoom/{}: another list than its group's",
                rule.id
            ),
            None => {
                for n in nets.iter().filter(|n| !n.contains(':')) {
                    assert!(v4.insert(n.clone()), "{n} is in two groups");
                }
                by_group.insert(group, nets);
            }
        }
    }
    assert_eq!(by_group.len(), 7, "{:?}", by_group.keys());
    assert_eq!(v4.len(), 312 + 4);
    assert_eq!(by_group[""].iter().filter(|n| !n.contains(':')).count(), 47);
}

#[test]
fn zoom_web_names() {
    let c = build(&only(TODAY, &["zoom"]));
    let ev = Evaluator::new(&c.image);
    for name in ["zoom.us", "us04web.zoom.us", "a.b.zoom.us"] {
        for port in [80, 443] {
            assert_eq!(
                allowed_name(&ev, name, &tcp(UNLISTED, port)).as_deref(),
                Some("zoom/web"),
                "{name}:{port}"
            );
        }
        assert_eq!(
            allowed_name(&ev, name, &tcp(UNLISTED, 8080)),
            None,
            "{name}"
        );
        assert_eq!(allowed_name(&ev, name, &udp(UNLISTED, 443)), None, "{name}");
    }
    assert_eq!(
        allowed_name(&ev, "app.zoom.com", &tcp(UNLISTED, 443)).as_deref(),
        Some("zoom/web-zoom-com")
    );
    // The apex of zoom.com is not listed, nor are look-alikes.
    for name in ["zoom.com", "notzoom.us", "zoom.us.example"] {
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 443)), None, "{name}");
    }
}
