//! Pexip by Kinly (pexip-kinly.toml)

use super::*;

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
        regions: Some(
            regions
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
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

#[test]
fn pexip_geo_dns_names_serve_every_region() {
    for regions in [&["global"][..], &["china"], &["southern-africa"]] {
        let c = build(&pexip_restricted(regions));
        let ev = Evaluator::new(&c.image);
        for name in ["meet.vmr.vc", "static.vp.vc"] {
            assert_eq!(
                allowed_name(&ev, name, &tcp(UNLISTED, 443)).as_deref(),
                Some("pexip/restricted-video-tcp-names"),
                "{name} in {regions:?}"
            );
            assert_eq!(
                allowed_name(&ev, name, &udp(UNLISTED, 10000)).as_deref(),
                Some("pexip/restricted-video-udp-names"),
                "{name} in {regions:?}"
            );
            assert_eq!(allowed_name(&ev, name, &udp(UNLISTED, 10001)), None);
            assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 80)), None);
        }
        assert_eq!(
            allowed_name(&ev, "x.meet.vmr.vc", &tcp(UNLISTED, 443)),
            None
        );
    }
}
