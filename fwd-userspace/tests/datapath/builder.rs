//! The frame builder itself, against etherparse (no kernel needed).

use etherparse::PacketBuilder;

use crate::policy::*;
use fwd_lab::packet::*;

/// The hand-built frames are byte for byte what etherparse builds, checksums included, so
/// the variations built from them differ only where a test means them to.
#[test]
fn frame_builder_matches_etherparse() {
    if !fwd_lab::can_run_as_root("frame_builder_matches_etherparse") {
        return;
    }
    let eth = || PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut cases: Vec<(&str, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut push = |what, ours: Pkt, theirs: Vec<u8>| cases.push((what, ours.frame(), theirs));
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .tcp(40000, 443, 1, 1024)
        .syn()
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v4 tcp", v4(LOCAL4, ALLOWED4, tcp(40000, 443)), f);
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .udp(40000, 3478)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v4 udp", v4(LOCAL4, ALLOWED4, udp(40000, 3478)), f);
    let mut f = Vec::new();
    eth()
        .ipv4(LOCAL4, ALLOWED4, 64)
        .icmpv4_echo_request(0x1234, 1)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v4 echo", v4(LOCAL4, ALLOWED4, echo(8, 0x1234)), f);
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .tcp(40000, 443, 1, 1024)
        .syn()
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v6 tcp", v6(LOCAL6, ALLOWED6, tcp(40000, 443)), f);
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .udp(40000, 3478)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v6 udp", v6(LOCAL6, ALLOWED6, udp(40000, 3478)), f);
    let mut f = Vec::new();
    eth()
        .ipv6(LOCAL6, ALLOWED6, 64)
        .icmpv6_echo_request(0x1234, 1)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push("v6 echo", v6(LOCAL6, ALLOWED6, echo(128, 0x1234)), f);
    let mut f = Vec::new();
    eth()
        .single_vlan(100.try_into().unwrap())
        .ipv4(LOCAL4, ALLOWED4, 64)
        .udp(40000, 3478)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push(
        "802.1Q",
        v4(LOCAL4, ALLOWED4, udp(40000, 3478)).tagged(&[ETH_P_8021Q]),
        f,
    );
    let mut f = Vec::new();
    eth()
        .double_vlan(100.try_into().unwrap(), 101.try_into().unwrap())
        .ipv6(LOCAL6, ALLOWED6, 64)
        .udp(40000, 3478)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    push(
        "QinQ",
        v6(LOCAL6, ALLOWED6, udp(40000, 3478)).tagged(&[ETH_P_8021AD, ETH_P_8021Q]),
        f,
    );
    for (what, ours, theirs) in cases {
        assert_eq!(ours, theirs, "{what}");
    }
    // And etherparse reads the exotic ones as what they claim to be.
    let pkt = v6(LOCAL6, ALLOWED6, tcp(40000, 443)).exts(&[
        Ext::HopByHop,
        Ext::Dest,
        Ext::Routing { segments_left: 0 },
        Ext::Fragment {
            offset: 0,
            more: false,
            id: 7,
        },
        Ext::Auth,
        Ext::DestLong(2),
    ]);
    let frame = pkt.frame();
    let headers = etherparse::PacketHeaders::from_ethernet_slice(&frame).unwrap();
    assert!(matches!(
        headers.transport,
        Some(etherparse::TransportHeader::Tcp(ref t)) if t.destination_port == 443
    ));
    assert_eq!(pkt.l4_offset(), 14 + 40 + 8 + 8 + 24 + 8 + 24 + 24);
    let pkt = v4(LOCAL4, ALLOWED4, tcp(40000, 443)).options(&[1; 40]);
    let frame = pkt.frame();
    let headers = etherparse::PacketHeaders::from_ethernet_slice(&frame).unwrap();
    assert!(matches!(
        headers.transport,
        Some(etherparse::TransportHeader::Tcp(ref t)) if t.destination_port == 443
    ));
    assert_eq!(pkt.l4_offset(), 14 + 60);
}
