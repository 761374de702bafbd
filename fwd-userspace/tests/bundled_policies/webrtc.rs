//! WebRTC SIP-over-WSS provider (webrtc-sip-wss.toml)

use super::*;

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
    // Under the widest policy VSee's inbound UDP route from any host covers these packets
    // too, but it is `related` as well: the rule naming the gateway wins.
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    expect_allow(
        &ev,
        ingress(UDP, "52.71.32.188", 10000, 40000),
        "webrtc-sip-wss/media",
    );
    // Outside the media's source ports VSee's related rule still admits them.
    expect_allow(
        &ev,
        ingress(UDP, "52.71.32.188", 9999, 40000),
        "vsee/p2p-udp-inbound",
    );
}
