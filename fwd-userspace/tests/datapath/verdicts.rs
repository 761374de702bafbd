//! Parse paths and verdicts: every path through the parser and the judges.

use etherparse::PacketBuilder;
use fwd_common::Reason;

use Reason::{Fragment, Malformed, NoAddressMatch, NoPortMatch, NotRelated, UnsupportedProtocol};

use crate::{fixture::*, policy::*};
use fwd_lab::packet::*;

#[test]
fn outbound_ipv4_allowed_and_denied() {
    if !fwd_lab::can_run_as_root("outbound_ipv4_allowed_and_denied") {
        return;
    }
    let fx = Fixture::new();
    // etherparse builds these, so what it means by a packet is what the kernel judges.
    let eth = || PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .tcp(40000, 443, 1, 1024)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("tcp 443", &f, allow("alpha/tcp"));
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .udp(40000, 3478)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("udp 3478", &f, allow("alpha/udp"));
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("echo request", &f, allow("alpha/icmp"));

    let ok = |l4| v4(LOCAL4, ALLOWED4, l4).frame();
    fx.out(
        "tcp range low end",
        &ok(tcp(40000, 10000)),
        allow("alpha/tcp"),
    );
    fx.out(
        "tcp range high end",
        &ok(tcp(40000, 10010)),
        allow("alpha/tcp"),
    );
    fx.out("udp range", &ok(udp(40000, 20100)), allow("alpha/udp"));
    fx.out(
        "icmp timestamp",
        &ok(icmp(13, 0, [0; 4])),
        allow("alpha/icmp"),
    );
    fx.out("tcp 442", &ok(tcp(40000, 442)), deny(NoPortMatch));
    fx.out("tcp 10011", &ok(tcp(40000, 10011)), deny(NoPortMatch));
    fx.out(
        "tcp port 3478 (udp's)",
        &ok(tcp(40000, 3478)),
        deny(NoPortMatch),
    );
    fx.out(
        "udp port 443 (tcp's)",
        &ok(udp(40000, 443)),
        deny(NoPortMatch),
    );
    fx.out("sctp", &ok(L4::Raw(132)), deny(NoPortMatch));
    fx.out(
        "second address of the class",
        &v4(LOCAL4, ALLOWED4_B, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    for l4 in [tcp(40000, 443), udp(40000, 3478), echo(8, 1)] {
        fx.out(
            &format!("{l4:?} to an unknown address"),
            &v4(LOCAL4, UNKNOWN4, l4).frame(),
            deny(NoAddressMatch),
        );
    }
    for l4 in [tcp(40000, 22), udp(40000, 53), echo(8, 1), L4::Raw(132)] {
        fx.out(
            &format!("{l4:?} to protocol any"),
            &v4(LOCAL4, TUNNEL4, l4).frame(),
            allow("alpha/tunnel"),
        );
    }
    fx.out(
        "beta",
        &v4(LOCAL4, BETA4, tcp(40000, 443)).frame(),
        allow("beta/https"),
    );
    fx.out(
        "ingress-only class, egress packet",
        &v4(LOCAL4, PEER4, tcp(40000, 8443)).frame(),
        deny(NoPortMatch),
    );
    // Counters add up across packets.
    let f = ok(tcp(40001, 443));
    fx.out("again 1", &f, allow("alpha/tcp"));
    fx.out("again 2", &f, allow("alpha/tcp"));
}

#[test]
fn outbound_ipv6_allowed_and_denied() {
    if !fwd_lab::can_run_as_root("outbound_ipv6_allowed_and_denied") {
        return;
    }
    let fx = Fixture::new();
    let eth = || PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .tcp(40000, 443, 1, 1024)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("tcp 443", &f, allow("alpha/tcp"));
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .udp(40000, 20000)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("udp 20000", &f, allow("alpha/udp"));
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("echo request", &f, allow("alpha/icmp"));

    let ok = |l4| v6(LOCAL6, ALLOWED6, l4).frame();
    fx.out("tcp 10010", &ok(tcp(40000, 10010)), allow("alpha/tcp"));
    fx.out("tcp 444", &ok(tcp(40000, 444)), deny(NoPortMatch));
    fx.out("udp 3479", &ok(udp(40000, 3479)), deny(NoPortMatch));
    fx.out("udp 20101", &ok(udp(40000, 20101)), deny(NoPortMatch));
    fx.out("gre", &ok(L4::Raw(47)), deny(NoPortMatch));
    for l4 in [tcp(40000, 443), udp(40000, 3478), echo(128, 1)] {
        fx.out(
            &format!("{l4:?} to an unknown address"),
            &v6(LOCAL6, UNKNOWN6, l4).frame(),
            deny(NoAddressMatch),
        );
    }
    for l4 in [tcp(40000, 22), udp(40000, 53), echo(128, 1)] {
        fx.out(
            &format!("{l4:?} to protocol any"),
            &v6(LOCAL6, TUNNEL6, l4).frame(),
            allow("alpha/tunnel"),
        );
    }
    fx.out(
        "beta",
        &v6(LOCAL6, BETA6, tcp(40000, 443)).frame(),
        allow("beta/https"),
    );
}

#[test]
fn vlan_tags() {
    if !fwd_lab::can_run_as_root("vlan_tags") {
        return;
    }
    let fx = Fixture::new();
    let eth = || PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut f = Vec::new();
    eth()
        .single_vlan(100.try_into().unwrap())
        .ipv4(LOCAL4, ALLOWED4, 64)
        .tcp(40000, 443, 1, 1024)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("etherparse 802.1Q", &f, allow("alpha/tcp"));
    let mut f = Vec::new();
    eth()
        .double_vlan(100.try_into().unwrap(), 200.try_into().unwrap())
        .ipv4(LOCAL4, UNKNOWN4, 64)
        .tcp(40000, 443, 1, 1024)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    fx.out("etherparse QinQ", &f, deny(NoAddressMatch));

    for tags in [
        &[ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q],
        &[ETH_P_8021Q, ETH_P_8021Q],
    ] {
        let what = |s: &str| format!("{s} tagged {tags:04x?}");
        let out = |what: &str, pkt: Pkt, want| fx.out(what, &pkt.tagged(tags).frame(), want);
        out(
            &what("v4 tcp"),
            v4(LOCAL4, ALLOWED4, tcp(1, 443)),
            allow("alpha/tcp"),
        );
        out(
            &what("v4 udp"),
            v4(LOCAL4, ALLOWED4, udp(1, 3478)),
            allow("alpha/udp"),
        );
        out(
            &what("v4 port"),
            v4(LOCAL4, ALLOWED4, tcp(1, 22)),
            deny(NoPortMatch),
        );
        out(
            &what("v4 address"),
            v4(LOCAL4, UNKNOWN4, tcp(1, 443)),
            deny(NoAddressMatch),
        );
        out(
            &what("v6 icmp"),
            v6(LOCAL6, ALLOWED6, echo(128, 9)),
            allow("alpha/icmp"),
        );
        out(
            &what("v6 port"),
            v6(LOCAL6, ALLOWED6, udp(1, 53)),
            deny(NoPortMatch),
        );
        out(
            &what("v6 address"),
            v6(LOCAL6, UNKNOWN6, tcp(1, 443)),
            deny(NoAddressMatch),
        );
        fx.out(&what("arp"), &arp(tags), exempt());
        // Inbound, a reply to the flow the tagged v4 tcp packet opened.
        let reply = v4(LOCAL4, ALLOWED4, tcp(1, 443)).reversed().tagged(tags);
        fx.inb(&what("reply"), &reply.frame(), est("alpha/tcp"));
        let stray = v4(UNKNOWN4, LOCAL4, tcp(443, 1)).tagged(tags);
        fx.inb(&what("unsolicited"), &stray.frame(), deny(NoAddressMatch));
    }
}

#[test]
fn ipv4_options() {
    if !fwd_lab::can_run_as_root("ipv4_options") {
        return;
    }
    let fx = Fixture::new();
    for ihl in 6..=15usize {
        let options = vec![1u8; (ihl - 5) * 4];
        let pkt = |dst, l4| v4(LOCAL4, dst, l4).options(&options).frame();
        assert_eq!(pkt(ALLOWED4, tcp(1, 443))[14], 0x40 | ihl as u8);
        let what = |s: &str| format!("IHL {ihl}: {s}");
        fx.out(
            &what("tcp"),
            &pkt(ALLOWED4, tcp(1, 443)),
            allow("alpha/tcp"),
        );
        fx.out(
            &what("udp"),
            &pkt(ALLOWED4, udp(1, 3478)),
            allow("alpha/udp"),
        );
        fx.out(
            &what("icmp"),
            &pkt(ALLOWED4, echo(8, 1)),
            allow("alpha/icmp"),
        );
        fx.out(&what("port"), &pkt(ALLOWED4, tcp(1, 22)), deny(NoPortMatch));
        fx.out(
            &what("address"),
            &pkt(UNKNOWN4, tcp(1, 443)),
            deny(NoAddressMatch),
        );
        let reply = v4(ALLOWED4, LOCAL4, tcp(443, 1)).options(&options).frame();
        fx.inb(&what("reply"), &reply, est("alpha/tcp"));
    }
    // Options that look like an allowed TCP header are skipped, never read as one.
    let fake = v4(LOCAL4, ALLOWED4, tcp(40000, 443)).transport();
    let pkt = v4(LOCAL4, ALLOWED4, tcp(40000, 22))
        .options(&fake[..20])
        .frame();
    fx.out("options shaped like tcp 443", &pkt, deny(NoPortMatch));
    // Real options: record route, timestamp, router alert.
    let pkt = v4(LOCAL4, ALLOWED4, tcp(40000, 443))
        .options(&[
            7, 7, 4, 0, 0, 0, 0, 68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 148, 4, 0, 0,
        ])
        .frame();
    fx.out(
        "record route + timestamp + router alert",
        &pkt,
        allow("alpha/tcp"),
    );

    let base = v4(LOCAL4, ALLOWED4, tcp(40000, 443))
        .options(&[1; 4])
        .frame();
    for ihl in 0..5u8 {
        let f = patched(&base, 14, &[0x40 | ihl]);
        fx.out(&format!("IHL {ihl}"), &f, deny(Malformed));
    }
    let f = patched(&base, 16, &20u16.to_be_bytes());
    fx.out("total length below IHL", &f, deny(Malformed));
    let f = patched(&base, 14, &[0x66]);
    fx.out("version 6 in an IPv4 frame", &f, deny(Malformed));
}

#[test]
fn ipv6_extension_headers() {
    if !fwd_lab::can_run_as_root("ipv6_extension_headers") {
        return;
    }
    let fx = Fixture::new();
    let atomic = Ext::Fragment {
        offset: 0,
        more: false,
        id: 1,
    };
    let singles = [
        Ext::HopByHop,
        Ext::Dest,
        Ext::DestLong(4),
        Ext::Routing { segments_left: 0 },
        atomic,
        Ext::Auth,
    ];
    let chains: Vec<Vec<Ext>> = singles
        .iter()
        .map(|e| vec![*e])
        .chain([
            vec![Ext::HopByHop, Ext::Dest],
            vec![Ext::HopByHop, Ext::Routing { segments_left: 0 }, atomic],
            vec![
                Ext::Dest,
                Ext::Routing { segments_left: 0 },
                Ext::Auth,
                Ext::Dest,
            ],
            vec![Ext::Auth, atomic, Ext::Dest],
            // Six: the longest chain the parser walks.
            vec![
                Ext::HopByHop,
                Ext::Dest,
                Ext::Routing { segments_left: 0 },
                atomic,
                Ext::Auth,
                Ext::Dest,
            ],
            vec![Ext::Dest; 6],
        ])
        .collect();
    for exts in &chains {
        let what = |s: &str| format!("{exts:?}: {s}");
        let pkt = |src, dst, l4| v6(src, dst, l4).exts(exts).frame();
        fx.out(
            &what("tcp"),
            &pkt(LOCAL6, ALLOWED6, tcp(1, 443)),
            allow("alpha/tcp"),
        );
        fx.out(
            &what("udp"),
            &pkt(LOCAL6, ALLOWED6, udp(1, 3478)),
            allow("alpha/udp"),
        );
        fx.out(
            &what("icmp"),
            &pkt(LOCAL6, ALLOWED6, echo(128, 1)),
            allow("alpha/icmp"),
        );
        fx.out(
            &what("port"),
            &pkt(LOCAL6, ALLOWED6, tcp(1, 22)),
            deny(NoPortMatch),
        );
        fx.out(
            &what("address"),
            &pkt(LOCAL6, UNKNOWN6, tcp(1, 443)),
            deny(NoAddressMatch),
        );
        fx.inb(
            &what("reply"),
            &pkt(ALLOWED6, LOCAL6, tcp(443, 1)),
            est("alpha/tcp"),
        );
        fx.inb(
            &what("unsolicited"),
            &pkt(UNKNOWN6, LOCAL6, tcp(443, 1)),
            deny(NoAddressMatch),
        );
    }
    // ESP and "no next header" end the walk; they are judged as protocols without ports.
    for p in [50, 59] {
        let pkt = |dst| v6(LOCAL6, dst, L4::Raw(p)).exts(&[Ext::HopByHop]).frame();
        fx.out(
            &format!("protocol {p} to tcp/udp/icmp rules"),
            &pkt(ALLOWED6),
            deny(NoPortMatch),
        );
        fx.out(
            &format!("protocol {p} to any"),
            &pkt(TUNNEL6),
            allow("alpha/tunnel"),
        );
    }
}

#[test]
fn management_is_exempt() {
    if !fwd_lab::can_run_as_root("management_is_exempt") {
        return;
    }
    let fx = Fixture::new();
    let all_nodes = addr6("ff02::1");
    let routers = addr6("ff02::2");
    let solicited = addr6("ff02::1:ff00:5");
    let router_ll = addr6("fe80::1");
    for tags in [&[][..], &[ETH_P_8021Q]] {
        fx.out("arp", &arp(tags), exempt());
        fx.inb("arp", &arp(tags), exempt());
    }
    // Neighbour discovery (RS, RA, NS, NA, redirect), hop limit 255.
    let nd = [
        (133, LINK6, routers),
        (134, router_ll, all_nodes),
        (135, LINK6, solicited),
        (135, LOCAL6, solicited),
        (136, LINK6, router_ll),
        (137, router_ll, LINK6),
    ];
    for (ty, src, dst) in nd {
        let pkt = v6(src, dst, icmp(ty, 0, [0; 4])).hop_limit(255);
        fx.out(&format!("nd {ty}"), &pkt.frame(), exempt());
        fx.inb(&format!("nd {ty}"), &pkt.frame(), exempt());
    }
    // MLD query, report, done, v2 report; with the router alert they carry.
    for (ty, dst) in [
        (130, all_nodes),
        (131, addr6("ff02::fb")),
        (132, routers),
        (143, addr6("ff02::16")),
    ] {
        let pkt = v6(LINK6, dst, icmp(ty, 0, [0; 4])).hop_limit(1);
        fx.out(&format!("mld {ty}"), &pkt.frame(), exempt());
        let pkt = pkt.exts(&[Ext::RouterAlert]);
        fx.out(&format!("mld {ty} + router alert"), &pkt.frame(), exempt());
        fx.inb(&format!("mld {ty} + router alert"), &pkt.frame(), exempt());
    }
    // Destinations that never leave the link.
    for dst in [
        [255, 255, 255, 255],
        [224, 0, 0, 251],
        [224, 0, 0, 1],
        [169, 254, 169, 254],
    ] {
        let pkt = v4(LOCAL4, dst, udp(68, 67)).frame();
        fx.out(&format!("to {dst:?}"), &pkt, exempt());
        let pkt = v4(UNKNOWN4, dst, udp(67, 68)).frame();
        fx.inb(&format!("to {dst:?}"), &pkt, exempt());
    }
    for dst in [
        addr6("fe80::1"),
        addr6("febf::1"),
        all_nodes,
        addr6("ff02::fb"),
        addr6("ff12::1"),
    ] {
        let pkt = v6(LOCAL6, dst, udp(5353, 5353)).frame();
        fx.out(&format!("to {dst:02x?}"), &pkt, exempt());
    }
    fx.inb(
        "from 169.254/16",
        &v4([169, 254, 1, 1], LOCAL4, tcp(1, 2)).frame(),
        exempt(),
    );
    fx.inb(
        "from fe80::/10",
        &v6(router_ll, LOCAL6, tcp(1, 2)).frame(),
        exempt(),
    );
    // Not link-local: judged.
    for dst in [
        [224, 0, 1, 1],
        [239, 1, 1, 1],
        [169, 253, 0, 1],
        [255, 255, 255, 254],
    ] {
        let pkt = v4(LOCAL4, dst, udp(68, 67)).frame();
        fx.out(&format!("to {dst:?}"), &pkt, deny(NoAddressMatch));
    }
    for dst in [
        addr6("fec0::1"),
        addr6("ff05::1"),
        addr6("ff0e::1"),
        addr6("ff01::1"),
    ] {
        let pkt = v6(LOCAL6, dst, udp(5353, 5353)).frame();
        fx.out(&format!("to {dst:02x?}"), &pkt, deny(NoAddressMatch));
    }
    // Other ICMPv6 to a global address is judged.
    let pkt = v6(LOCAL6, UNKNOWN6, icmp(138, 0, [0; 4])).frame();
    fx.out("router renumbering", &pkt, deny(NoAddressMatch));
    // Unknown ethertypes are not judged: dropped.
    for ethertype in [0x88cc, 0x8863, 0x8864, 0x9100, 0x0842] {
        let mut f = ethernet(&[], ethertype);
        f.extend_from_slice(&[0u8; 46]);
        fx.out(
            &format!("ethertype {ethertype:04x}"),
            &f,
            deny(UnsupportedProtocol),
        );
        fx.inb(
            &format!("ethertype {ethertype:04x}"),
            &f,
            deny(UnsupportedProtocol),
        );
    }
}

#[test]
fn configured_exemptions() {
    if !fwd_lab::can_run_as_root("configured_exemptions") {
        return;
    }
    let fx = Fixture::new();
    fx.out(
        "v4 to exempt",
        &v4(LOCAL4, EXEMPT4, tcp(40000, 22)).frame(),
        exempt(),
    );
    fx.out(
        "v6 to exempt",
        &v6(LOCAL6, EXEMPT6, udp(40000, 161)).frame(),
        exempt(),
    );
    fx.inb(
        "v4 from exempt",
        &v4(EXEMPT4, LOCAL4, tcp(22, 40000)).frame(),
        exempt(),
    );
    fx.inb(
        "v6 from exempt",
        &v6(EXEMPT6, LOCAL6, udp(161, 40000)).frame(),
        exempt(),
    );
    // Only the remote side counts: an exempt source going out, or to an exempt address
    // coming in, is judged.
    fx.out(
        "v4 from exempt",
        &v4(EXEMPT4, UNKNOWN4, tcp(40000, 22)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "v4 to exempt",
        &v4(UNKNOWN4, EXEMPT4, tcp(22, 40000)).frame(),
        deny(NoAddressMatch),
    );
    fx.out(
        "just outside",
        &v4(LOCAL4, [192, 168, 78, 5], tcp(1, 22)).frame(),
        deny(NoAddressMatch),
    );
    // Exemption beats every other check, fragments included.
    let later = v4(LOCAL4, EXEMPT4, L4::Raw(6)).frag4(9, false, 77).frame();
    fx.out("later fragment to exempt", &later, exempt());
}

#[test]
fn return_traffic() {
    if !fwd_lab::can_run_as_root("return_traffic") {
        return;
    }
    let fx = Fixture::new();
    let flows = [
        (v4(LOCAL4, ALLOWED4, tcp(40000, 443)), "alpha/tcp"),
        (v4(LOCAL4, ALLOWED4, udp(40001, 3478)), "alpha/udp"),
        (v6(LOCAL6, ALLOWED6, tcp(40000, 10005)), "alpha/tcp"),
        (v6(LOCAL6, ALLOWED6, udp(40001, 20050)), "alpha/udp"),
    ];
    for (pkt, rule) in &flows {
        let rule = *rule;
        let reply = pkt.reversed();
        let what = |s: &str| format!("{pkt:?}: {s}");
        fx.inb(
            &what("reply before the flow"),
            &reply.frame(),
            deny(NoPortMatch),
        );
        fx.out(&what("out"), &pkt.frame(), allow(rule));
        fx.inb(&what("reply"), &reply.frame(), est(rule));
        fx.inb(&what("reply again"), &reply.frame(), est(rule));
        // Not a reply: another local port, another remote port, another remote.
        let mut other = reply.clone();
        other.l4 = match reply.l4 {
            L4::Tcp { src, dst } => tcp(src, dst + 1),
            L4::Udp { src, dst } => udp(src, dst + 1),
            _ => unreachable!(),
        };
        fx.inb(&what("other local port"), &other.frame(), deny(NoPortMatch));
        other.l4 = match reply.l4 {
            L4::Tcp { src, dst } => tcp(src + 1, dst),
            L4::Udp { src, dst } => udp(src + 1, dst),
            _ => unreachable!(),
        };
        fx.inb(
            &what("other remote port"),
            &other.frame(),
            deny(NoPortMatch),
        );
        let other = match &pkt.net {
            Net::V4 { .. } => v4(ALLOWED4_B, LOCAL4, reply.l4.clone()),
            Net::V6 { .. } => v6(ALLOWED6_B, LOCAL6, reply.l4.clone()),
        };
        fx.inb(&what("other remote"), &other.frame(), deny(NoPortMatch));
        let other = match &pkt.net {
            Net::V4 { .. } => v4(ALLOWED4, OTHER_LOCAL4, reply.l4.clone()),
            Net::V6 { .. } => v6(ALLOWED6, addr6("fd00:1::3"), reply.l4.clone()),
        };
        fx.inb(&what("other local host"), &other.frame(), deny(NoPortMatch));
        // TCP and UDP flows are not each other's.
        let mut other = reply.clone();
        other.l4 = match reply.l4 {
            L4::Tcp { src, dst } => udp(src, dst),
            L4::Udp { src, dst } => tcp(src, dst),
            _ => unreachable!(),
        };
        fx.inb(&what("other protocol"), &other.frame(), deny(NoPortMatch));
        // The reply direction does not open the outbound direction the other way round.
        fx.out(
            &what("reply sent out"),
            &reply.frame(),
            deny(NoAddressMatch),
        );
    }
    // Unsolicited inbound.
    fx.inb(
        "v4 from unknown",
        &v4(UNKNOWN4, LOCAL4, tcp(443, 40000)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "v6 from unknown",
        &v6(UNKNOWN6, LOCAL6, udp(3478, 40001)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "icmp from unknown",
        &v4(UNKNOWN4, LOCAL4, echo(8, 1)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "egress-only class",
        &v4(TUNNEL4, LOCAL4, tcp(22, 40000)).frame(),
        deny(NoPortMatch),
    );
}

#[test]
fn ingress_rules() {
    if !fwd_lab::can_run_as_root("ingress_rules") {
        return;
    }
    let fx = Fixture::new();
    // By local port (webhook 8443), and the host's replies.
    for family in [4, 6] {
        let pkt = |l4| {
            if family == 4 {
                v4(PEER4, LOCAL4, l4)
            } else {
                v6(PEER6, LOCAL6, l4)
            }
        };
        let what = |s: &str| format!("v{family}: {s}");
        let hook = pkt(tcp(51000, 8443));
        fx.out(
            &what("reply before the flow"),
            &hook.reversed().frame(),
            deny(NoPortMatch),
        );
        fx.inb(&what("webhook"), &hook.frame(), allow("alpha/webhook"));
        // The flow began inbound: later inbound packets are judged by the rules again.
        fx.inb(
            &what("webhook again"),
            &hook.frame(),
            allow("alpha/webhook"),
        );
        fx.out(
            &what("webhook reply"),
            &hook.reversed().frame(),
            est("alpha/webhook"),
        );
        fx.inb(
            &what("other local port"),
            &pkt(tcp(51000, 8444)).frame(),
            deny(NoPortMatch),
        );
        fx.inb(
            &what("udp to 8443"),
            &pkt(udp(51000, 8443)).frame(),
            deny(NoPortMatch),
        );
        // By remote port (relay 5000-5010).
        let relay = pkt(udp(5005, 40000));
        fx.inb(&what("relay"), &relay.frame(), allow("alpha/relay"));
        fx.out(
            &what("relay reply"),
            &relay.reversed().frame(),
            est("alpha/relay"),
        );
        fx.inb(
            &what("relay 5000"),
            &pkt(udp(5000, 1)).frame(),
            allow("alpha/relay"),
        );
        fx.inb(
            &what("relay 5010"),
            &pkt(udp(5010, 1)).frame(),
            allow("alpha/relay"),
        );
        fx.inb(
            &what("relay 5011"),
            &pkt(udp(5011, 1)).frame(),
            deny(NoPortMatch),
        );
        fx.inb(
            &what("relay port, tcp"),
            &pkt(tcp(5005, 1)).frame(),
            deny(NoPortMatch),
        );
        // A reply that no flow covers is not let out.
        fx.out(
            &what("not a reply"),
            &pkt(udp(5005, 40001)).reversed().frame(),
            deny(NoPortMatch),
        );
    }
    fx.inb(
        "webhook from unknown",
        &v4(UNKNOWN4, LOCAL4, tcp(51000, 8443)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "webhook from a v6 unknown",
        &v6(UNKNOWN6, LOCAL6, tcp(51000, 8443)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "webhook port from an egress class",
        &v4(ALLOWED4, LOCAL4, tcp(51000, 8443)).frame(),
        deny(NoPortMatch),
    );
}

#[test]
fn related_ingress() {
    if !fwd_lab::can_run_as_root("related_ingress") {
        return;
    }
    let fx = Fixture::new();
    let remote = [203, 0, 113, 77];
    let media = v4(remote, LOCAL4, udp(3000, 30050));
    fx.inb("without a flow", &media.frame(), deny(NotRelated));
    fx.out(
        "media reply without a flow",
        &media.reversed().frame(),
        deny(NoPortMatch),
    );
    // A flow to another remote of the same class does not count.
    fx.out(
        "flow to another remote",
        &v4(LOCAL4, ALLOWED4, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    fx.inb("still without a flow", &media.frame(), deny(NotRelated));
    // Denied outbound packets open nothing.
    fx.out(
        "denied packet to the remote",
        &v4(LOCAL4, remote, tcp(40000, 22)).frame(),
        deny(NoPortMatch),
    );
    fx.inb("still without a flow 2", &media.frame(), deny(NotRelated));
    fx.out(
        "flow to the remote",
        &v4(LOCAL4, remote, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    fx.inb("with a flow", &media.frame(), allow("alpha/srtp"));
    fx.inb(
        "with a flow, range start",
        &v4(remote, LOCAL4, udp(1, 30000)).frame(),
        allow("alpha/srtp"),
    );
    fx.inb(
        "with a flow, outside the range",
        &v4(remote, LOCAL4, udp(1, 30101)).frame(),
        deny(NoPortMatch),
    );
    fx.inb(
        "with a flow, tcp",
        &v4(remote, LOCAL4, tcp(1, 30050)).frame(),
        deny(NoPortMatch),
    );
    fx.out("media reply", &media.reversed().frame(), est("alpha/srtp"));
    // The same in IPv6.
    let remote6 = addr6("2001:db8:1::77");
    let media6 = v6(remote6, LOCAL6, udp(3000, 30050));
    fx.inb("v6 without a flow", &media6.frame(), deny(NotRelated));
    fx.out(
        "v6 flow",
        &v6(LOCAL6, remote6, udp(40000, 3478)).frame(),
        allow("alpha/udp"),
    );
    fx.inb("v6 with a flow", &media6.frame(), allow("alpha/srtp"));
}

#[test]
fn icmp_echo_and_errors() {
    if !fwd_lab::can_run_as_root("icmp_echo_and_errors") {
        return;
    }
    let fx = Fixture::new();
    // Echo out, reply in.
    for (req, rule) in [
        (v4(LOCAL4, ALLOWED4, echo(8, 0x1234)), "alpha/icmp"),
        (v6(LOCAL6, ALLOWED6, echo(128, 0x1234)), "alpha/icmp"),
        (v4(LOCAL4, TUNNEL4, echo(8, 0x4321)), "alpha/tunnel"),
    ] {
        let what = |s: &str| format!("{req:?}: {s}");
        let reply = req.reversed();
        fx.inb(
            &what("reply before the request"),
            &reply.frame(),
            deny(NoPortMatch),
        );
        fx.out(&what("request"), &req.frame(), allow(rule));
        fx.inb(&what("reply"), &reply.frame(), est(rule));
        let mut other = reply.clone();
        if let L4::Icmp { rest, .. } = &mut other.l4 {
            rest[1] ^= 1;
        }
        fx.inb(
            &what("reply with another id"),
            &other.frame(),
            deny(NoPortMatch),
        );
    }

    // ICMP errors about live flows come back; about others they are judged like any packet.
    let tcp4 = v4(LOCAL4, ALLOWED4, tcp(40000, 443));
    let udp4 = v4(LOCAL4, ALLOWED4, udp(40001, 3478));
    let echo4 = v4(LOCAL4, ALLOWED4, echo(8, 0x1234));
    fx.out("tcp flow", &tcp4.frame(), allow("alpha/tcp"));
    fx.out("udp flow", &udp4.frame(), allow("alpha/udp"));
    for (ty, code) in [(3, 4), (3, 1), (11, 0), (12, 0)] {
        let what = |s: &str| format!("icmp {ty}/{code} {s}");
        let e = icmp4_error(ROUTER4, LOCAL4, ty, code, &tcp4);
        fx.inb(&what("about tcp"), &e.frame(), est("alpha/tcp"));
        let e = icmp4_error(ROUTER4, LOCAL4, ty, code, &udp4);
        fx.inb(&what("about udp"), &e.frame(), est("alpha/udp"));
        let e = icmp4_error(ROUTER4, LOCAL4, ty, code, &echo4);
        fx.inb(&what("about echo"), &e.frame(), est("alpha/icmp"));
        let e = icmp4_error(ALLOWED4, LOCAL4, ty, code, &tcp4);
        fx.inb(
            &what("from the remote itself"),
            &e.frame(),
            est("alpha/tcp"),
        );
        let unknown = v4(LOCAL4, ALLOWED4, tcp(40999, 443));
        let e = icmp4_error(ROUTER4, LOCAL4, ty, code, &unknown);
        fx.inb(&what("about no flow"), &e.frame(), deny(NoAddressMatch));
        let e = icmp4_error(ALLOWED4, LOCAL4, ty, code, &unknown);
        fx.inb(
            &what("about no flow, from the remote"),
            &e.frame(),
            deny(NoPortMatch),
        );
    }
    // A quote too short to hold the ports relates to nothing.
    let mut e = icmp4_error(ROUTER4, LOCAL4, 3, 4, &tcp4);
    e.payload.truncate(22);
    fx.inb("short quote", &e.frame(), deny(NoAddressMatch));
    // Not an error type: an echo reply quoting a flow is nothing special.
    let e = v4(ROUTER4, LOCAL4, echo(0, 7)).payload(&tcp4.ip_bytes()[..28]);
    fx.inb("echo reply with a quote", &e.frame(), deny(NoAddressMatch));

    // IPv6: packet too big, unreachable, time exceeded, parameter problem.
    let tcp6 = v6(LOCAL6, ALLOWED6, tcp(40000, 443));
    let udp6 = v6(LOCAL6, ALLOWED6, udp(40001, 3478));
    fx.out("v6 tcp flow", &tcp6.frame(), allow("alpha/tcp"));
    fx.out("v6 udp flow", &udp6.frame(), allow("alpha/udp"));
    for (ty, code, rest) in [
        (2, 0, 1280u32.to_be_bytes()),
        (1, 4, [0; 4]),
        (3, 0, [0; 4]),
        (4, 0, [0, 0, 0, 40]),
    ] {
        let what = |s: &str| format!("icmpv6 {ty}/{code} {s}");
        let e = icmp6_error(ROUTER6, LOCAL6, ty, code, rest, &tcp6);
        fx.inb(&what("about tcp"), &e.frame(), est("alpha/tcp"));
        let e = icmp6_error(ROUTER6, LOCAL6, ty, code, rest, &udp6);
        fx.inb(&what("about udp"), &e.frame(), est("alpha/udp"));
        let unknown = v6(LOCAL6, ALLOWED6, udp(40999, 3478));
        let e = icmp6_error(ROUTER6, LOCAL6, ty, code, rest, &unknown);
        fx.inb(&what("about no flow"), &e.frame(), deny(NoAddressMatch));
    }

    // The host's own errors about an inbound flow go out.
    let hook = v4(PEER4, LOCAL4, tcp(51000, 8443));
    fx.inb("webhook", &hook.frame(), allow("alpha/webhook"));
    let e = icmp4_error(LOCAL4, PEER4, 3, 3, &hook);
    fx.out(
        "port unreachable about the webhook",
        &e.frame(),
        est("alpha/webhook"),
    );
    let e = icmp4_error(LOCAL4, PEER4, 3, 3, &v4(PEER4, LOCAL4, tcp(51001, 8443)));
    fx.out(
        "port unreachable about no flow",
        &e.frame(),
        deny(NoPortMatch),
    );
}

#[test]
fn audit_mode() {
    if !fwd_lab::can_run_as_root("audit_mode") {
        return;
    }
    let mut fx = Fixture::new();
    fx.dp.set_audit(true).unwrap();
    fx.out(
        "allowed",
        &v4(LOCAL4, ALLOWED4, tcp(1, 443)).frame(),
        allow("alpha/tcp"),
    );
    fx.out(
        "address",
        &v4(LOCAL4, UNKNOWN4, tcp(1, 443)).frame(),
        audit(NoAddressMatch),
    );
    fx.out(
        "port",
        &v6(LOCAL6, ALLOWED6, tcp(1, 22)).frame(),
        audit(NoPortMatch),
    );
    let f = v4(LOCAL4, ALLOWED4, tcp(1, 443)).frame();
    fx.out("malformed", &f[..40], audit(Malformed));
    let f = v4(LOCAL4, ALLOWED4, tcp(1, 443))
        .tagged(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q])
        .frame();
    fx.out("unsupported", &f, audit(UnsupportedProtocol));
    let f = v4(LOCAL4, UNKNOWN4, L4::Raw(6)).frag4(5, false, 9).frame();
    fx.out("fragment", &f, audit(Fragment));
    fx.inb(
        "unsolicited",
        &v4(UNKNOWN4, LOCAL4, tcp(443, 1)).frame(),
        audit(NoAddressMatch),
    );
    fx.inb(
        "not related",
        &v4(ALLOWED4_B, LOCAL4, udp(1, 30000)).frame(),
        audit(NotRelated),
    );
    fx.out("exempt", &arp(&[]), exempt());
    fx.dp.set_audit(false).unwrap();
    fx.out(
        "address, enforcing again",
        &v4(LOCAL4, UNKNOWN4, tcp(1, 443)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "unsolicited, enforcing again",
        &v4(UNKNOWN4, LOCAL4, tcp(443, 1)).frame(),
        deny(NoAddressMatch),
    );
}

#[test]
fn audit_per_vendor() {
    if !fwd_lab::can_run_as_root("audit_per_vendor") {
        return;
    }
    let fx = Fixture::with_audit_vendors(&["beta"]);
    fx.out(
        "beta allowed",
        &v4(LOCAL4, BETA4, tcp(1, 443)).frame(),
        allow("beta/https"),
    );
    fx.out(
        "beta port",
        &v4(LOCAL4, BETA4, udp(1, 53)).frame(),
        audit(NoPortMatch),
    );
    fx.out(
        "beta v6 port",
        &v6(LOCAL6, BETA6, tcp(1, 80)).frame(),
        audit(NoPortMatch),
    );
    fx.inb(
        "from beta",
        &v4(BETA4, LOCAL4, tcp(443, 2)).frame(),
        audit(NoPortMatch),
    );
    // Other vendors and unknown addresses are enforced.
    fx.out(
        "alpha port",
        &v4(LOCAL4, ALLOWED4, udp(1, 53)).frame(),
        deny(NoPortMatch),
    );
    fx.out(
        "alpha allowed",
        &v4(LOCAL4, ALLOWED4, udp(1, 3478)).frame(),
        allow("alpha/udp"),
    );
    fx.out(
        "unknown",
        &v4(LOCAL4, UNKNOWN4, tcp(1, 443)).frame(),
        deny(NoAddressMatch),
    );
    fx.out(
        "unknown v6",
        &v6(LOCAL6, UNKNOWN6, tcp(1, 443)).frame(),
        deny(NoAddressMatch),
    );
    fx.inb(
        "from alpha",
        &v4(ALLOWED4, LOCAL4, tcp(443, 1)).frame(),
        deny(NoPortMatch),
    );
    // What cannot be tied to a class is enforced.
    let f = v4(LOCAL4, BETA4, tcp(1, 443)).frame();
    fx.out("malformed to beta", &f[..40], deny(Malformed));
}
