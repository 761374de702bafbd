//! The bypass suite: nothing here may reach a destination the policy does not allow.

use fwd_common::{Reason, proto};

use Dir::Out;
use Reason::{Fragment, Malformed, NoAddressMatch, NoPortMatch, UnsupportedProtocol};

use crate::{fixture::*, policy::*};
use fwd_lab::packet::*;

#[test]
fn bypass_vlan_tags() {
    if !fwd_lab::can_run_as_root("bypass_vlan_tags") {
        return;
    }
    let fx = Fixture::new();
    let tag_sets: [&[u16]; 5] = [
        &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
        &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q],
        &[ETH_P_8021AD, ETH_P_8021AD],
        &[ETH_P_8021Q, ETH_P_8021AD],
        &[0x9100, ETH_P_8021Q],
    ];
    for tags in tag_sets {
        for pkt in [
            v4(LOCAL4, ALLOWED4, tcp(1, 443)),
            v4(LOCAL4, UNKNOWN4, tcp(1, 443)),
            v6(LOCAL6, UNKNOWN6, udp(1, 53)),
        ] {
            let f = pkt.tagged(tags).frame();
            fx.out(&format!("{tags:04x?}"), &f, deny(UnsupportedProtocol));
            fx.inb(&format!("{tags:04x?}"), &f, deny(UnsupportedProtocol));
        }
        let mut f = arp(tags);
        f.truncate(f.len() - 2);
        fx.out(&format!("arp {tags:04x?}"), &f, deny(UnsupportedProtocol));
    }
    for tags in [&[ETH_P_8021Q][..], &[ETH_P_8021AD, ETH_P_8021Q]] {
        let f = v4(LOCAL4, UNKNOWN4, tcp(1, 443)).tagged(tags).frame();
        fx.out(&format!("{tags:04x?} unknown"), &f, deny(NoAddressMatch));
        let f = v6(LOCAL6, ALLOWED6, tcp(1, 22)).tagged(tags).frame();
        fx.out(&format!("{tags:04x?} port"), &f, deny(NoPortMatch));
    }
}

#[test]
fn bypass_ipv6_extension_headers() {
    if !fwd_lab::can_run_as_root("bypass_ipv6_extension_headers") {
        return;
    }
    let fx = Fixture::new();
    let atomic = Ext::Fragment {
        offset: 0,
        more: false,
        id: 1,
    };
    // Each header and chains of them in front of a denied packet.
    let chains: Vec<Vec<Ext>> = vec![
        vec![Ext::HopByHop],
        vec![Ext::Dest],
        vec![Ext::Routing { segments_left: 0 }],
        vec![atomic],
        vec![Ext::Auth],
        vec![
            Ext::HopByHop,
            Ext::Dest,
            Ext::Routing { segments_left: 0 },
            atomic,
            Ext::Auth,
            Ext::Dest,
        ],
    ];
    for exts in &chains {
        let f = v6(LOCAL6, UNKNOWN6, tcp(1, 443)).exts(exts).frame();
        fx.out(&format!("{exts:?} unknown"), &f, deny(NoAddressMatch));
        let f = v6(LOCAL6, ALLOWED6, udp(1, 53)).exts(exts).frame();
        fx.out(&format!("{exts:?} port"), &f, deny(NoPortMatch));
    }
    // A chain of seven is not judged, whatever it leads to.
    let seven = [
        vec![Ext::Dest; 7],
        vec![
            Ext::HopByHop,
            Ext::Dest,
            Ext::Routing { segments_left: 0 },
            atomic,
            Ext::Auth,
            Ext::Dest,
            Ext::Dest,
        ],
        vec![Ext::Auth; 7],
        vec![atomic; 7],
        vec![Ext::Dest; 12],
    ];
    for exts in &seven {
        let f = v6(LOCAL6, ALLOWED6, tcp(1, 443)).exts(exts).frame();
        fx.out(
            &format!("{} headers", exts.len()),
            &f,
            deny(UnsupportedProtocol),
        );
        fx.inb(
            &format!("{} headers", exts.len()),
            &v6(ALLOWED6, LOCAL6, tcp(443, 1)).exts(exts).frame(),
            deny(UnsupportedProtocol),
        );
    }
    // Segments left: the packet is on its way elsewhere; even to an allowed address.
    for sl in [1, 2, 255] {
        for exts in [
            vec![Ext::Routing { segments_left: sl }],
            vec![Ext::HopByHop, Ext::Routing { segments_left: sl }],
            vec![
                Ext::Dest,
                Ext::Routing { segments_left: 0 },
                Ext::Routing { segments_left: sl },
            ],
        ] {
            let f = v6(LOCAL6, ALLOWED6, tcp(1, 443)).exts(&exts).frame();
            fx.out(
                &format!("{exts:?} allowed dst"),
                &f,
                deny(UnsupportedProtocol),
            );
        }
    }
    // Headers the parser does not walk.
    for n in [135, 139, 140, 253, 254] {
        for exts in [
            vec![Ext::Other(n)],
            vec![Ext::HopByHop, Ext::Other(n)],
            vec![atomic, Ext::Dest, Ext::Other(n)],
        ] {
            let f = v6(LOCAL6, ALLOWED6, tcp(1, 443)).exts(&exts).frame();
            fx.out(&format!("{exts:?}"), &f, deny(UnsupportedProtocol));
            let f = v6(ALLOWED6, LOCAL6, tcp(443, 1)).exts(&exts).frame();
            fx.inb(&format!("{exts:?}"), &f, deny(UnsupportedProtocol));
        }
    }
    // An IPv4 header in an IPv6 frame.
    let mut f = ethernet(&[], ETH_P_IPV6);
    f.extend(v4(LOCAL4, ALLOWED4, tcp(1, 443)).ip_bytes());
    f.extend_from_slice(&[0; 20]);
    fx.out("IPv4 header in an IPv6 frame", &f, deny(Malformed));
    // A header whose length runs past the packet end.
    let mut f = v6(LOCAL6, ALLOWED6, tcp(1, 443)).exts(&[Ext::Dest]).frame();
    f[54 + 1] = 200;
    fx.out("dest opts longer than the packet", &f, deny(Malformed));
}

#[test]
fn bypass_ipv4_fragments() {
    if !fwd_lab::can_run_as_root("bypass_ipv4_fragments") {
        return;
    }
    let fx = Fixture::new();
    let first = |id, l4| {
        v4(LOCAL4, ALLOWED4, l4)
            .frag4(0, true, id)
            .payload(&[0x11; 32])
    };
    let later = |id, offset, more| {
        v4(LOCAL4, ALLOWED4, L4::Raw(proto::TCP))
            .frag4(offset, more, id)
            .payload(&[0x22; 24])
    };

    // Out of order: a later fragment before its first one.
    fx.out(
        "later before first",
        &later(100, 5, false).frame(),
        deny(Fragment),
    );
    fx.out(
        "first",
        &first(100, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    fx.out("later", &later(100, 5, true).frame(), allow("alpha/tcp"));
    fx.out("last", &later(100, 8, false).frame(), allow("alpha/tcp"));
    fx.out(
        "later, again",
        &later(100, 5, true).frame(),
        allow("alpha/tcp"),
    );
    // Offset 1 (8 bytes) can only rewrite the TCP header: dropped even in an allowed datagram.
    fx.out("offset 1", &later(100, 1, true).frame(), deny(Fragment));
    fx.out(
        "offset 1, last",
        &later(100, 1, false).frame(),
        deny(Fragment),
    );
    fx.inb(
        "offset 1 inbound",
        &v4(ALLOWED4, LOCAL4, L4::Raw(6))
            .frag4(1, false, 100)
            .frame(),
        deny(Fragment),
    );
    // An allowed datagram opens nothing else: another id, destination, source, protocol.
    fx.out("other id", &later(101, 5, false).frame(), deny(Fragment));
    let f = v4(LOCAL4, ALLOWED4_B, L4::Raw(6))
        .frag4(5, false, 100)
        .frame();
    fx.out("other destination", &f, deny(Fragment));
    let f = v4(LOCAL4, UNKNOWN4, L4::Raw(6))
        .frag4(5, false, 100)
        .frame();
    fx.out("unknown destination", &f, deny(Fragment));
    let f = v4(OTHER_LOCAL4, ALLOWED4, L4::Raw(6))
        .frag4(5, false, 100)
        .frame();
    fx.out("other source", &f, deny(Fragment));
    let f = v4(LOCAL4, ALLOWED4, L4::Raw(17))
        .frag4(5, false, 100)
        .frame();
    fx.out("other protocol", &f, deny(Fragment));
    // A second first fragment of an allowed datagram is judged by its own ports.
    fx.out(
        "another first fragment, port 22",
        &first(100, tcp(40000, 22)).frame(),
        deny(NoPortMatch),
    );
    // A denied first fragment, then its later ones.
    fx.out(
        "denied first",
        &first(102, tcp(40000, 22)).frame(),
        deny(NoPortMatch),
    );
    fx.out(
        "its later one",
        &later(102, 5, false).frame(),
        deny(Fragment),
    );
    let f = v4(LOCAL4, UNKNOWN4, tcp(40000, 443))
        .frag4(0, true, 103)
        .frame();
    fx.out("first to unknown", &f, deny(NoAddressMatch));
    let f = v4(LOCAL4, UNKNOWN4, L4::Raw(6))
        .frag4(5, false, 103)
        .frame();
    fx.out("its later one (unknown)", &f, deny(Fragment));
    // Tiny first fragments: the TCP header does not fit.
    for tcp_bytes in [0, 8, 19] {
        let whole = v4(LOCAL4, ALLOWED4, tcp(40000, 443))
            .payload(&[])
            .ip_bytes();
        let tiny = v4(LOCAL4, ALLOWED4, L4::Raw(6))
            .frag4(0, true, 104)
            .payload(&whole[20..20 + tcp_bytes]);
        fx.out(
            &format!("first with {tcp_bytes} TCP bytes"),
            &tiny.frame(),
            deny(Malformed),
        );
    }
    fx.out(
        "later of the tiny one",
        &later(104, 1, false).frame(),
        deny(Fragment),
    );
    fx.out(
        "later of the tiny one, offset 3",
        &later(104, 3, false).frame(),
        deny(Fragment),
    );
    // UDP: offset 1 is past the header and fine.
    let f = v4(LOCAL4, ALLOWED4, udp(40000, 3478))
        .frag4(0, true, 105)
        .frame();
    fx.out("udp first", &f, allow("alpha/udp"));
    let f = v4(LOCAL4, ALLOWED4, L4::Raw(17))
        .frag4(1, false, 105)
        .frame();
    fx.out("udp later at offset 1", &f, allow("alpha/udp"));
    let f = v4(LOCAL4, ALLOWED4, udp(40000, 53))
        .frag4(0, true, 106)
        .frame();
    fx.out("udp denied first", &f, deny(NoPortMatch));
    let f = v4(LOCAL4, ALLOWED4, L4::Raw(17))
        .frag4(2, false, 106)
        .frame();
    fx.out("its later one (udp)", &f, deny(Fragment));
    // Fragments with options and VLAN tags follow the same rules.
    let f = later(100, 5, false)
        .options(&[1; 8])
        .tagged(&[ETH_P_8021Q])
        .frame();
    fx.out("later with options and a tag", &f, allow("alpha/tcp"));
    let f = later(107, 5, false)
        .options(&[1; 8])
        .tagged(&[ETH_P_8021Q])
        .frame();
    fx.out("unknown later with options and a tag", &f, deny(Fragment));

    // Inbound: the reply's fragments follow the reply's first fragment.
    let reply_first = v4(ALLOWED4, LOCAL4, tcp(443, 40000))
        .frag4(0, true, 200)
        .payload(&[0x33; 32]);
    let reply_later = |id| v4(ALLOWED4, LOCAL4, L4::Raw(6)).frag4(5, false, id);
    fx.inb(
        "reply later before first",
        &reply_later(200).frame(),
        deny(Fragment),
    );
    fx.inb("reply first", &reply_first.frame(), est("alpha/tcp"));
    fx.inb("reply later", &reply_later(200).frame(), allow("alpha/tcp"));
    fx.inb(
        "reply later, other id",
        &reply_later(201).frame(),
        deny(Fragment),
    );
    let f = v4(UNKNOWN4, LOCAL4, tcp(443, 40000))
        .frag4(0, true, 202)
        .frame();
    fx.inb("unsolicited first", &f, deny(NoAddressMatch));
    let f = v4(UNKNOWN4, LOCAL4, L4::Raw(6))
        .frag4(5, false, 202)
        .frame();
    fx.inb("unsolicited later", &f, deny(Fragment));
    // The outbound datagram's record does not open the inbound direction.
    let f = v4(ALLOWED4, LOCAL4, L4::Raw(6))
        .frag4(5, false, 100)
        .frame();
    fx.inb(
        "inbound with the outbound datagram's id",
        &f,
        deny(Fragment),
    );
}

#[test]
fn bypass_ipv6_fragments() {
    if !fwd_lab::can_run_as_root("bypass_ipv6_fragments") {
        return;
    }
    let fx = Fixture::new();
    let frag = |offset, more, id| Ext::Fragment { offset, more, id };
    let first = |id, l4| {
        v6(LOCAL6, ALLOWED6, l4)
            .exts(&[frag(0, true, id)])
            .payload(&[0x11; 32])
    };
    let later = |id, offset, more| {
        v6(LOCAL6, ALLOWED6, L4::Raw(proto::TCP))
            .exts(&[frag(offset, more, id)])
            .payload(&[0x22; 24])
    };
    fx.out(
        "later before first",
        &later(0x1_0000, 5, false).frame(),
        deny(Fragment),
    );
    fx.out(
        "first",
        &first(0x1_0000, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    fx.out(
        "later",
        &later(0x1_0000, 5, true).frame(),
        allow("alpha/tcp"),
    );
    fx.out(
        "last",
        &later(0x1_0000, 8, false).frame(),
        allow("alpha/tcp"),
    );
    fx.out(
        "other id",
        &later(0x1_0001, 5, false).frame(),
        deny(Fragment),
    );
    fx.out(
        "low 16 bits of the id",
        &later(0, 5, false).frame(),
        deny(Fragment),
    );
    let f = v6(LOCAL6, UNKNOWN6, L4::Raw(6))
        .exts(&[frag(5, false, 0x1_0000)])
        .frame();
    fx.out("unknown destination", &f, deny(Fragment));
    let f = v6(LOCAL6, ALLOWED6, L4::Raw(17))
        .exts(&[frag(5, false, 0x1_0000)])
        .frame();
    fx.out("other protocol", &f, deny(Fragment));
    // Later fragments behind other headers still follow their first fragment.
    let f = v6(LOCAL6, ALLOWED6, L4::Raw(6))
        .exts(&[Ext::HopByHop, frag(5, false, 0x1_0000)])
        .frame();
    fx.out("later behind hop-by-hop", &f, allow("alpha/tcp"));
    let f = v6(LOCAL6, UNKNOWN6, L4::Raw(6))
        .exts(&[Ext::HopByHop, Ext::Dest, frag(5, false, 9)])
        .frame();
    fx.out("unknown later behind two headers", &f, deny(Fragment));
    // A denied first fragment, then its later ones.
    fx.out(
        "denied first",
        &first(0x2_0000, tcp(40000, 22)).frame(),
        deny(NoPortMatch),
    );
    fx.out(
        "its later one",
        &later(0x2_0000, 5, false).frame(),
        deny(Fragment),
    );
    // Tiny first fragments.
    for tcp_bytes in [0, 8, 19] {
        let whole = v6(LOCAL6, ALLOWED6, tcp(40000, 443))
            .payload(&[])
            .ip_bytes();
        let tiny = v6(LOCAL6, ALLOWED6, L4::Raw(6))
            .exts(&[frag(0, true, 0x3_0000)])
            .payload(&whole[40..40 + tcp_bytes]);
        fx.out(
            &format!("first with {tcp_bytes} TCP bytes"),
            &tiny.frame(),
            deny(Malformed),
        );
    }
    fx.out(
        "later of the tiny one",
        &later(0x3_0000, 3, false).frame(),
        deny(Fragment),
    );
    // A first fragment whose chain continues past the fragment header.
    let f = v6(LOCAL6, ALLOWED6, tcp(40000, 22))
        .exts(&[frag(0, true, 0x4_0000), Ext::Dest])
        .frame();
    fx.out(
        "denied first behind a fragment header and dest opts",
        &f,
        deny(NoPortMatch),
    );
    let f = v6(LOCAL6, ALLOWED6, tcp(40000, 443))
        .exts(&[frag(0, true, 0x4_0001), Ext::Routing { segments_left: 1 }])
        .frame();
    fx.out(
        "first with routing sl>0 behind the fragment header",
        &f,
        deny(UnsupportedProtocol),
    );
    // ND types in a fragmented datagram are not management.
    let f = v6(LOCAL6, UNKNOWN6, icmp(135, 0, [0; 4]))
        .exts(&[frag(0, true, 0x5_0000)])
        .frame();
    fx.out(
        "fragmented neighbour solicitation",
        &f,
        deny(NoAddressMatch),
    );
    // Inbound replies.
    let reply_first = v6(ALLOWED6, LOCAL6, tcp(443, 40000)).exts(&[frag(0, true, 0x6_0000)]);
    let reply_later = |id| v6(ALLOWED6, LOCAL6, L4::Raw(6)).exts(&[frag(5, false, id)]);
    fx.inb(
        "reply later before first",
        &reply_later(0x6_0000).frame(),
        deny(Fragment),
    );
    fx.inb("reply first", &reply_first.frame(), est("alpha/tcp"));
    fx.inb(
        "reply later",
        &reply_later(0x6_0000).frame(),
        allow("alpha/tcp"),
    );
    fx.inb(
        "reply later, other id",
        &reply_later(0x6_0001).frame(),
        deny(Fragment),
    );
}

/// Frames cut at every byte up to the end of the transport header (so at and inside every
/// header: Ethernet, each VLAN tag, IPv4 and its options, IPv6 and each extension header,
/// TCP, UDP, ICMP) are malformed, never judged by what a truncated header seems to say.
#[test]
fn bypass_truncated_frames() {
    if !fwd_lab::can_run_as_root("bypass_truncated_frames") {
        return;
    }
    let fx = Fixture::new();
    // Frames shorter than an Ethernet header: BPF_PROG_TEST_RUN refuses them (EINVAL) for XDP
    // and TC alike, and no counter moves.
    let before = fx.snapshot();
    for len in [0, 1, 6, 12, 13] {
        let frame = &arp(&[])[..len];
        for prog in [Prog::Xdp, Prog::TcOut, Prog::TcIn] {
            let result = fx.try_run(prog, frame);
            assert!(
                result.is_err(),
                "{prog:?} ran on a {len}-byte frame: {result:?}"
            );
        }
    }
    // TC test runs also refuse untagged IP frames cut inside the IP header (XDP takes them).
    let f = v4(LOCAL4, ALLOWED4, tcp(40000, 443)).frame();
    for len in 14..34 {
        assert!(tc_test_run_refuses(&f[..len]));
        assert!(
            fx.try_run(Prog::TcIn, &f[..len]).is_err(),
            "TC took {len} bytes"
        );
        assert!(
            fx.try_run(Prog::TcOut, &f[..len]).is_err(),
            "TC took {len} bytes"
        );
    }
    let f6 = v6(LOCAL6, ALLOWED6, tcp(40000, 443)).frame();
    assert!(fx.try_run(Prog::TcOut, &f6[..53]).is_err());
    let after = fx.snapshot();
    assert_eq!(
        fx.delta(&before, &after, false, 0),
        Judged::new(false, &[], &[])
    );
    // From a complete IP header on, TC runs them (and finds them malformed).
    let malformed = fx.judged(&deny(Malformed), Out);
    assert_eq!(fx.run(Prog::TcOut, &f[..34]), malformed);
    assert_eq!(fx.run(Prog::TcOut, &f6[..54]), malformed);

    let frag = |more, id| Ext::Fragment {
        offset: 0,
        more,
        id,
    };
    let out_cases = [
        v4(LOCAL4, ALLOWED4, tcp(40000, 443)),
        v4(LOCAL4, ALLOWED4, udp(40000, 3478)),
        v4(LOCAL4, ALLOWED4, echo(8, 1)),
        v4(LOCAL4, ALLOWED4, tcp(40000, 443)).options(&[1; 12]),
        v4(LOCAL4, ALLOWED4, udp(40000, 3478)).options(&[1; 40]),
        v4(LOCAL4, ALLOWED4, tcp(40000, 443)).frag4(0, true, 9),
        v4(LOCAL4, ALLOWED4, tcp(40000, 443)).tagged(&[ETH_P_8021Q]),
        v4(LOCAL4, ALLOWED4, udp(40000, 3478))
            .options(&[1; 8])
            .tagged(&[ETH_P_8021AD, ETH_P_8021Q]),
        v6(LOCAL6, ALLOWED6, tcp(40000, 443)),
        v6(LOCAL6, ALLOWED6, udp(40000, 3478)),
        v6(LOCAL6, ALLOWED6, echo(128, 1)),
        v6(LOCAL6, ALLOWED6, tcp(40000, 443)).exts(&[
            Ext::HopByHop,
            Ext::DestLong(1),
            Ext::Routing { segments_left: 0 },
            frag(false, 5),
            Ext::Auth,
        ]),
        v6(LOCAL6, ALLOWED6, udp(40000, 3478))
            .exts(&[frag(true, 6), Ext::Dest])
            .tagged(&[ETH_P_8021AD, ETH_P_8021Q]),
    ];
    let l4_end = |pkt: &Pkt| {
        pkt.l4_offset()
            + match pkt.l4 {
                L4::Tcp { .. } => 20,
                _ => 8,
            }
    };
    let rule = |pkt: &Pkt| match pkt.l4 {
        L4::Tcp { .. } => "alpha/tcp",
        L4::Udp { .. } => "alpha/udp",
        _ => "alpha/icmp",
    };
    let mut cuts = 0;
    for pkt in &out_cases {
        let frame = pkt.frame();
        // The whole frame is allowed: the cut alone makes the difference.
        fx.out(&format!("{pkt:?} whole"), &frame, allow(rule(pkt)));
        for cut in 14..l4_end(pkt) {
            fx.out(
                &format!("{pkt:?} cut at {cut}"),
                &frame[..cut],
                deny(Malformed),
            );
            cuts += 1;
        }
    }
    assert!(cuts > 700, "{cuts} cuts");
    // Inbound too: a truncated reply is not a reply (where TC takes the frame at all).
    let in_cases = [
        v4(ALLOWED4, LOCAL4, tcp(443, 40000)),
        v4(ALLOWED4, LOCAL4, tcp(443, 40000)).tagged(&[ETH_P_8021Q]),
        v4(ALLOWED4, LOCAL4, udp(3478, 40000)).options(&[1; 20]),
        v6(ALLOWED6, LOCAL6, udp(3478, 40000)),
        v6(ALLOWED6, LOCAL6, tcp(443, 40000))
            .exts(&[Ext::HopByHop, Ext::Auth])
            .tagged(&[ETH_P_8021AD, ETH_P_8021Q]),
    ];
    for pkt in &in_cases {
        let frame = pkt.frame();
        fx.inb(&format!("{pkt:?} whole"), &frame, est(rule(pkt)));
        for cut in 14..l4_end(pkt) {
            let what = format!("{pkt:?} cut at {cut}");
            if tc_test_run_refuses(&frame[..cut]) {
                assert!(fx.try_run(Prog::TcIn, &frame[..cut]).is_err(), "{what}");
            } else {
                fx.inb(&what, &frame[..cut], deny(Malformed));
            }
        }
    }
    // An ARP frame cut short is still ARP: exempt (the stack validates it).
    fx.out("arp header only", &arp(&[])[..14], exempt());
}

#[test]
fn bypass_tunnels() {
    if !fwd_lab::can_run_as_root("bypass_tunnels") {
        return;
    }
    let fx = Fixture::new();
    let inner4 = v4(LOCAL4, ALLOWED4, tcp(40000, 443)).ip_bytes();
    let inner6 = v6(LOCAL6, ALLOWED6, tcp(40000, 443)).ip_bytes();
    let mut gre = vec![0, 0, 0x08, 0x00];
    gre.extend_from_slice(&inner4);
    let payloads: [(u8, &[u8]); 3] = [(4, &inner4), (41, &inner6), (47, &gre)];
    for (p, inner) in payloads {
        let what = |s: &str| format!("protocol {p}: {s}");
        let f = v4(LOCAL4, UNKNOWN4, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v4 to unknown"), &f, deny(NoAddressMatch));
        let f = v4(LOCAL4, ALLOWED4, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v4 to tcp/udp/icmp rules"), &f, deny(NoPortMatch));
        let f = v4(LOCAL4, BETA4, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v4 to a tcp rule"), &f, deny(NoPortMatch));
        let f = v4(LOCAL4, TUNNEL4, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v4 to protocol any"), &f, allow("alpha/tunnel"));
        let f = v6(LOCAL6, UNKNOWN6, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v6 to unknown"), &f, deny(NoAddressMatch));
        let f = v6(LOCAL6, ALLOWED6, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v6 to tcp/udp/icmp rules"), &f, deny(NoPortMatch));
        let f = v6(LOCAL6, TUNNEL6, L4::Raw(p)).payload(inner).frame();
        fx.out(&what("v6 to protocol any"), &f, allow("alpha/tunnel"));
        // Inbound: a tunnel from an allowed remote is no reply to the inner flow.
        fx.out(
            &what("inner flow"),
            &v4(LOCAL4, ALLOWED4, tcp(40000, 443)).frame(),
            allow("alpha/tcp"),
        );
        let reply = v4(ALLOWED4, LOCAL4, tcp(443, 40000)).ip_bytes();
        let f = v4(ALLOWED4, LOCAL4, L4::Raw(p)).payload(&reply).frame();
        fx.inb(&what("tunnelled reply"), &f, deny(NoPortMatch));
    }
}

#[test]
fn bypass_ipv4_mapped_destinations() {
    if !fwd_lab::can_run_as_root("bypass_ipv4_mapped_destinations") {
        return;
    }
    let fx = Fixture::new();
    for (dst, what) in [
        (mapped(ALLOWED4), "::ffff:203.0.113.5"),
        (mapped(TUNNEL4), "::ffff:198.51.100.7"),
        (mapped(BETA4), "::ffff:100.64.0.5"),
        (addr6("::203.0.113.5"), "::203.0.113.5"),
        (addr6("64:ff9b::203.0.113.5"), "64:ff9b::203.0.113.5"),
        (addr6("2002:cb00:7105::1"), "6to4 of 203.0.113.5"),
    ] {
        for l4 in [tcp(40000, 443), udp(40000, 3478), echo(128, 1), L4::Raw(47)] {
            let f = v6(LOCAL6, dst, l4.clone()).frame();
            fx.out(&format!("{what} {l4:?}"), &f, deny(NoAddressMatch));
        }
        let f = v6(dst, LOCAL6, tcp(443, 40000)).frame();
        fx.inb(&format!("from {what}"), &f, deny(NoAddressMatch));
    }
}
