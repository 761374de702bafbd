//! SecureVideo and One-Click (Twilio): the names and ranges restored from recovered.md

use super::*;

#[test]
fn securevideo_names_open_their_ports() {
    let c = build(&only(TODAY, &["securevideo"]));
    assert_eq!(c.image.rules.len(), 3);
    assert!(
        c.image.dst4.is_empty() && c.image.dst6.is_empty(),
        "names only"
    );
    let ev = Evaluator::new(&c.image);
    let app = Some("securevideo/app".to_string());
    let realtime = Some("securevideo/realtime".to_string());
    for name in [
        "securevideo.com",
        "www.securevideo.com",
        "pamgroup.securevideo.com",
    ] {
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 443)), app, "{name}");
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 80)), None, "{name}");
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 444)), None, "{name}");
        assert_eq!(allowed_name(&ev, name, &udp(UNLISTED, 443)), None, "{name}");
    }
    for name in [
        "pubnub.com",
        "ps.pubnub.com",
        "ps1.pndsn.com",
        "x.pubnub.net",
        "x.pubnub.io",
    ] {
        assert_eq!(
            allowed_name(&ev, name, &tcp(UNLISTED, 443)),
            realtime,
            "{name}"
        );
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 80)), None, "{name}");
    }
    // Apexes the article lists only as wildcards, and look-alikes.
    for name in [
        "pndsn.com",
        "pubnub.net",
        "pubnub.io",
        "notsecurevideo.com",
        "securevideo.com.example",
    ] {
        assert_eq!(allowed_name(&ev, name, &tcp(UNLISTED, 443)), None, "{name}");
    }
    // Online certificate checks: tcp 80 only, recommended.
    assert_eq!(
        allowed_name(&ev, "ocsp.digicert.com", &tcp(UNLISTED, 80)).as_deref(),
        Some("securevideo/certificate-status")
    );
    assert_eq!(
        allowed_name(&ev, "ocsp.digicert.com", &tcp(UNLISTED, 443)),
        None
    );
    assert_eq!(allowed_name(&ev, "digicert.com", &tcp(UNLISTED, 80)), None);
    let level = |id: &str| c.image.rules.iter().find(|r| r.rule == id).unwrap().level;
    assert_eq!(level("app"), Level::Mandatory);
    assert_eq!(level("realtime"), Level::Mandatory);
    assert_eq!(level("certificate-status"), Level::Recommended);
    // Addresses: nothing without the DNS proxy.
    assert_eq!(ev.evaluate(&tcp(UNLISTED, 443)), Verdict::NoAddressMatch);
    let needs_dns = c
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::NeedsDns { .. }))
        .count();
    assert_eq!(needs_dns, 3);
}

/// Twilio's seven US media ranges (recovered.md T3), as (first, last) addresses.
const TWILIO_US: [(&str, &str); 7] = [
    ("34.203.254.0", "34.203.254.255"),
    ("54.172.60.0", "54.172.61.255"),
    ("34.203.250.0", "34.203.251.255"),
    ("3.235.111.128", "3.235.111.255"),
    ("34.216.110.128", "34.216.110.159"),
    ("54.244.51.0", "54.244.51.255"),
    ("44.234.69.0", "44.234.69.127"),
];

/// The international ranges (recovered.md T4), first and last address.
const TWILIO_INTERNATIONAL: [(&str, &str); 22] = [
    ("13.210.2.128", "13.210.2.159"),
    ("54.252.254.64", "54.252.254.127"),
    ("3.25.42.128", "3.25.42.255"),
    ("18.231.105.32", "18.231.105.63"),
    ("177.71.206.192", "177.71.206.255"),
    ("18.230.125.0", "18.230.125.127"),
    ("52.59.186.0", "52.59.186.31"),
    ("18.195.48.224", "18.195.48.255"),
    ("18.156.18.128", "18.156.18.255"),
    ("52.215.253.0", "52.215.253.63"),
    ("54.171.127.192", "54.171.127.255"),
    ("52.215.127.0", "52.215.127.255"),
    ("3.249.63.128", "3.249.63.255"),
    ("52.66.193.96", "52.66.193.127"),
    ("52.66.194.0", "52.66.194.63"),
    ("3.7.35.128", "3.7.35.255"),
    ("13.115.244.0", "13.115.244.31"),
    ("54.65.63.192", "54.65.63.255"),
    ("18.180.220.128", "18.180.220.255"),
    ("13.229.255.0", "13.229.255.31"),
    ("54.169.127.128", "54.169.127.191"),
    ("18.141.157.128", "18.141.157.255"),
];

/// The address before `first` and after `last`.
fn neighbours(first: &str, last: &str) -> [String; 2] {
    let f: std::net::Ipv4Addr = first.parse().unwrap();
    let l: std::net::Ipv4Addr = last.parse().unwrap();
    [
        std::net::Ipv4Addr::from(u32::from(f) - 1).to_string(),
        std::net::Ipv4Addr::from(u32::from(l) + 1).to_string(),
    ]
}

fn twilio(regions: &[&str]) -> Selection {
    Selection {
        regions: Some(
            regions
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        ..only(TODAY, &["one-click-twilio"])
    }
}

#[test]
fn one_click_media_ranges_are_exact() {
    let c = build(&twilio(&["us", "international"]));
    let ev = Evaluator::new(&c.image);
    for (ranges, region) in [
        (&TWILIO_US[..], "us"),
        (&TWILIO_INTERNATIONAL[..], "international"),
    ] {
        let udp_rule = format!("one-click-twilio/media-udp-{region}");
        let tcp_rule = format!("one-click-twilio/media-tcp-{region}");
        for &(first, last) in ranges {
            for remote in [first, last] {
                for port in [3478, 10000, 35000, 60000] {
                    expect_allow(&ev, udp(remote, port), &udp_rule);
                }
                for port in [443, 3478, 5349] {
                    expect_allow(&ev, tcp(remote, port), &tcp_rule);
                }
                for port in [3477, 3479, 9999, 60001] {
                    expect_deny(&ev, udp(remote, port));
                }
                for port in [80, 442, 3479, 5350, 10000] {
                    expect_deny(&ev, tcp(remote, port));
                }
                // Media is outbound; replies are return traffic, nothing else comes in.
                expect_deny(&ev, ingress(UDP, remote, 10000, 40000));
            }
            for outside in neighbours(first, last) {
                expect_deny(&ev, udp(&outside, 10000));
                expect_deny(&ev, tcp(&outside, 5349));
            }
        }
    }
}

#[test]
fn one_click_regions_select_their_ranges_and_names() {
    let c = build(&twilio(&["us"]));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        udp("34.203.254.7", 10000),
        "one-click-twilio/media-udp-us",
    );
    expect_deny(&ev, udp("52.215.127.7", 10000));
    expect_deny(&ev, tcp("3.7.35.200", 443));
    let sig = |ev: &Evaluator<'_>, name| allowed_name(ev, name, &tcp(UNLISTED, 443));
    assert_eq!(
        sig(&ev, "global.vss.twilio.com").as_deref(),
        Some("one-click-twilio/signaling")
    );
    assert_eq!(
        sig(&ev, "us1.vss.twilio.com").as_deref(),
        Some("one-click-twilio/signaling-us")
    );
    assert_eq!(sig(&ev, "de1.vss.twilio.com"), None);
    assert_eq!(
        sig(&ev, "sdkgw.us1.twilio.com").as_deref(),
        Some("one-click-twilio/signaling-legacy")
    );
    assert_eq!(
        allowed_name(&ev, "global.vss.twilio.com", &tcp(UNLISTED, 80)),
        None
    );
    assert_eq!(
        allowed_name(&ev, "evil.twilio.com", &tcp(UNLISTED, 443)),
        None
    );

    let c = build(&twilio(&["international"]));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        udp("52.215.127.7", 10000),
        "one-click-twilio/media-udp-international",
    );
    expect_deny(&ev, udp("34.203.254.7", 10000));
    assert_eq!(
        sig(&ev, "global.vss.twilio.com").as_deref(),
        Some("one-click-twilio/signaling")
    );
    assert_eq!(
        sig(&ev, "sg1.vss.twilio.com").as_deref(),
        Some("one-click-twilio/signaling-international")
    );
    assert_eq!(sig(&ev, "us2.vss.twilio.com"), None);

    // Mandatory only: no legacy signaling.
    let c = build(&Selection {
        levels: Some(vec![Level::Mandatory]),
        ..twilio(&["us"])
    });
    let ev = Evaluator::new(&c.image);
    assert_eq!(sig(&ev, "ecs.us1.twilio.com"), None);
    assert_eq!(
        sig(&ev, "global.vss.twilio.com").as_deref(),
        Some("one-click-twilio/signaling")
    );
}

#[test]
fn one_click_media_ports_in_the_widest_policy() {
    // TCP 5349 is opened by no any-address rule: only Twilio's ranges get it.
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        tcp("54.244.51.9", 5349),
        "one-click-twilio/media-tcp-us",
    );
    expect_deny(&ev, tcp(UNLISTED, 5349));
    expect_deny(&ev, tcp(UNLISTED6, 5349));
    // A narrower rule of another vendor may own a port inside Twilio's range; the packet is
    // allowed either way.
    assert!(allowed_by(&ev, &udp("54.244.51.9", 10000)).is_some());
    assert!(allowed_by(&ev, &udp("54.244.51.9", 59999)).is_some());
}
