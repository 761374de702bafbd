//! Regressions of bypasses found in earlier versions (each failed on the datapath as
//! found, Linux 6.18), and the programs' log.

use fwd::datapath::Datapath;
use fwd_common::Reason;

use Reason::{Fragment, NoAddressMatch, NoPortMatch};

use crate::{fixture::*, policy::*};
use fwd_lab::packet::*;

/// An IPv6 packet must never ride an IPv4 flow: the flow table keys IPv4 addresses in their
/// IPv4-mapped form, so an IPv6 packet from `::ffff:<remote>` to `::ffff:<local>` looks
/// like the flow's reply.
#[test]
fn bypass_ipv6_packet_on_an_ipv4_flow() {
    if !fwd_lab::can_run_as_root("bypass_ipv6_packet_on_an_ipv4_flow") {
        return;
    }
    let fx = Fixture::new();
    fx.out(
        "v4 flow",
        &v4(LOCAL4, ALLOWED4, tcp(40000, 443)).frame(),
        allow("alpha/tcp"),
    );
    let f = v6(mapped(ALLOWED4), mapped(LOCAL4), tcp(443, 40000)).frame();
    fx.inb("v6 reply on the v4 flow", &f, deny(NoAddressMatch));
    // And the other way: an inbound v4 flow must not let an IPv6 packet out.
    fx.inb(
        "v4 webhook",
        &v4(PEER4, LOCAL4, tcp(51000, 8443)).frame(),
        allow("alpha/webhook"),
    );
    let f = v6(mapped(LOCAL4), mapped(PEER4), tcp(8443, 51000)).frame();
    fx.out("v6 reply on the v4 webhook flow", &f, deny(NoAddressMatch));
}

/// Same for fragments: an IPv6 later fragment must not follow an IPv4 first fragment.
#[test]
fn bypass_ipv6_fragment_on_an_ipv4_datagram() {
    if !fwd_lab::can_run_as_root("bypass_ipv6_fragment_on_an_ipv4_datagram") {
        return;
    }
    let fx = Fixture::new();
    let first = v4(LOCAL4, ALLOWED4, tcp(40000, 443))
        .frag4(0, true, 300)
        .payload(&[0x11; 32]);
    fx.out("v4 first", &first.frame(), allow("alpha/tcp"));
    let f = v6(mapped(LOCAL4), mapped(ALLOWED4), L4::Raw(6))
        .exts(&[Ext::Fragment {
            offset: 5,
            more: false,
            id: 300,
        }])
        .payload(&[0x22; 512])
        .frame();
    fx.out(
        "v6 later fragment with the v4 datagram's key",
        &f,
        deny(Fragment),
    );
}

/// The host sends ICMP errors to the packet's sender: an outbound error to another address
/// than the quoted packet's source is not about that flow, whatever it quotes.
#[test]
fn bypass_icmp_error_to_another_destination() {
    if !fwd_lab::can_run_as_root("bypass_icmp_error_to_another_destination") {
        return;
    }
    let fx = Fixture::new();
    let flow = v4(LOCAL4, ALLOWED4, tcp(40000, 443));
    fx.out("flow", &flow.frame(), allow("alpha/tcp"));
    // An "error" about the flow's reply, carrying 1000 bytes, to an address no rule allows.
    let mut e = icmp4_error(LOCAL4, UNKNOWN4, 3, 3, &flow.reversed());
    e.payload.extend_from_slice(&[0x42; 1000]);
    fx.out(
        "v4 error to an unknown address",
        &e.frame(),
        deny(NoAddressMatch),
    );
    let flow6 = v6(LOCAL6, ALLOWED6, udp(40000, 3478));
    fx.out("v6 flow", &flow6.frame(), allow("alpha/udp"));
    let mut e = icmp6_error(LOCAL6, UNKNOWN6, 1, 4, [0; 4], &flow6.reversed());
    e.payload.extend_from_slice(&[0x42; 1000]);
    fx.out(
        "v6 error to an unknown address",
        &e.frame(),
        deny(NoAddressMatch),
    );
    // Inbound: an error about this host's flow, sent to another local host.
    let e = icmp4_error(ROUTER4, OTHER_LOCAL4, 3, 4, &flow);
    fx.inb(
        "error to another local host",
        &e.frame(),
        deny(NoAddressMatch),
    );
}

/// Neighbour discovery and MLD are link management: addressed off the link they are not.
#[test]
fn bypass_neighbour_discovery_types_to_a_global_destination() {
    if !fwd_lab::can_run_as_root("bypass_neighbour_discovery_types_to_a_global_destination") {
        return;
    }
    let fx = Fixture::new();
    for ty in [130, 131, 132, 133, 134, 135, 136, 137, 143] {
        let f = v6(LOCAL6, UNKNOWN6, icmp(ty, 0, [0; 4]))
            .hop_limit(255)
            .payload(&[0x42; 1000])
            .frame();
        fx.out(
            &format!("icmpv6 {ty} out to an unknown global address"),
            &f,
            deny(NoAddressMatch),
        );
        let f = v6(UNKNOWN6, LOCAL6, icmp(ty, 0, [0; 4]))
            .hop_limit(255)
            .payload(&[0x42; 1000])
            .frame();
        fx.inb(
            &format!("icmpv6 {ty} in from an unknown global address"),
            &f,
            deny(NoAddressMatch),
        );
    }
}

/// Later fragments follow their first fragment when the fragmentable part begins with a
/// destination-options header (RFC 8200 4.5: every fragment's Fragment header names the
/// first header of the fragmentable part, here 60, while the first fragment is judged as TCP).
#[test]
fn ipv6_later_fragments_behind_dest_options_follow_their_first() {
    if !fwd_lab::can_run_as_root("ipv6_later_fragments_behind_dest_options_follow_their_first") {
        return;
    }
    let fx = Fixture::new();
    let id = 0x7_0000;
    let first = v6(LOCAL6, ALLOWED6, tcp(40000, 443)).exts(&[
        Ext::Fragment {
            offset: 0,
            more: true,
            id,
        },
        Ext::Dest,
    ]);
    fx.out("first", &first.frame(), allow("alpha/tcp"));
    let later = v6(LOCAL6, ALLOWED6, L4::Raw(60)).exts(&[Ext::Fragment {
        offset: 5,
        more: false,
        id,
    }]);
    fx.out("later", &later.frame(), allow("alpha/tcp"));
}

/// The IPv6 counterpart of RFC 1858: a TCP fragment at offset 8 can only rewrite the TCP
/// header of its first fragment.
#[test]
fn ipv6_tcp_fragment_at_offset_1_is_dropped() {
    if !fwd_lab::can_run_as_root("ipv6_tcp_fragment_at_offset_1_is_dropped") {
        return;
    }
    let fx = Fixture::new();
    let frag = |offset, more| Ext::Fragment {
        offset,
        more,
        id: 0x8_0000,
    };
    let first = v6(LOCAL6, ALLOWED6, tcp(40000, 443))
        .exts(&[frag(0, true)])
        .payload(&[0x11; 32]);
    fx.out("first", &first.frame(), allow("alpha/tcp"));
    let later = v6(LOCAL6, ALLOWED6, L4::Raw(6)).exts(&[frag(1, false)]);
    fx.out("offset 1", &later.frame(), deny(Fragment));
}

/// Audit rollout of a vendor: the later fragments of a datagram whose first fragment passed
/// in audit mode pass too (the first fragment passed; dropping the rest breaks the traffic
/// audit mode promises not to touch).
#[test]
fn audit_per_vendor_later_fragments() {
    if !fwd_lab::can_run_as_root("audit_per_vendor_later_fragments") {
        return;
    }
    let fx = Fixture::with_audit_vendors(&["beta"]);
    let first = v4(LOCAL4, BETA4, udp(40000, 53))
        .frag4(0, true, 400)
        .payload(&[0x11; 32]);
    fx.out("first", &first.frame(), audit(NoPortMatch));
    let later = v4(LOCAL4, BETA4, L4::Raw(17)).frag4(5, false, 400);
    fx.out("later", &later.frame(), audit(Fragment));
}

/// The programs carry aya-log, and the datapath hands its reader to one taker (the daemon
/// passes the records to its log).
#[test]
fn the_programs_log_reaches_userspace_through_one_reader() {
    if !fwd_lab::can_run_as_root("the_programs_log_reaches_userspace_through_one_reader") {
        return;
    }
    let mut dp = Datapath::load().expect("loading the programs");
    assert!(dp.take_program_log().is_some(), "no aya-log ring buffer");
    assert!(
        dp.take_program_log().is_none(),
        "the reader was handed out twice"
    );
}
