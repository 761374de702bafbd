//! Bounds-checked header parsing. Anything the parser cannot judge is an error with a reason,
//! never a pass: a firewall that skips what it does not understand can be bypassed.

use crate::{Addr, MAX_IPV6_EXT_HEADERS, Reason, proto, v4_mapped};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// IPv6 extension headers the parser walks.
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers the parser does not walk (Mobility, HIP, Shim6, experimental): a
/// packet carrying one is dropped rather than judged by a guess at what follows.
const NEXTHDR_UNWALKED: [u8; 5] = [135, 139, 140, 253, 254];

/// The packet bytes `[start, end)` as the program sees them.
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Copies the `N` header bytes at `offset`, or `Malformed` if the packet is too short.
    ///
    /// Fields are taken from the copy, never re-read from the packet: otherwise LLVM drops
    /// the copy, keeps only the bounds check, and re-derives the field address from another
    /// base register, which the verifier cannot tie to the check (seen on Linux 6.18).
    #[inline(always)]
    fn header<const N: usize>(&self, offset: usize) -> Result<[u8; N], Reason> {
        let at = self.start + offset;
        if at + N > self.end {
            return Err(Reason::Malformed);
        }
        // SAFETY: bounds checked against the packet end just above.
        Ok(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented (or an atomic IPv6 fragment).
    Whole,
    /// The first fragment: it carries the transport header and is judged by it.
    First,
    /// A later fragment: no transport header; it follows its first fragment's verdict.
    Later,
}

/// What an ICMP error message quotes: the packet that caused it, as sent.
///
/// The addresses come first and the struct is aligned to 8 (like `Ip`, `FlowKey` and
/// `FragKey`), so copying one is two 8-byte moves: with the `[u8; 16]` alone the compiler
/// knows no alignment and copies byte by byte or calls a byte-loop `memset`/`memmove`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Quoted {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// An IP packet's fields that the verdict depends on. The addresses first, aligned to 8
/// (see `Quoted`).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Ip {
    /// Addresses in the `Addr` form (IPv4 mapped into IPv6).
    pub src: Addr,
    pub dst: Addr,
    /// 4 or 6.
    pub family: u8,
    /// The transport protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Transport ports (0 for protocols without ports, and for later fragments).
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
    /// The ICMP echo identifier of an echo request or reply, else 0.
    pub echo_id: u16,
    pub frag: Frag,
    /// The datagram id of a fragment (IPv4's 16 bits, IPv6's 32).
    pub frag_id: u32,
    /// What identifies the datagram's payload in every fragment: IPv4's protocol field, or
    /// the next-header field of IPv6's fragment header (headers after it are only in the
    /// first fragment).
    pub frag_protocol: u8,
    /// For ICMP errors (unreachable, too big, time exceeded, parameter problem): the quoted
    /// packet, so the error can follow the flow it belongs to.
    pub quoted: Option<Quoted>,
}

impl Ip {
    /// Writes both addresses, IPv4 mapped into IPv6, as four word stores (the struct is
    /// aligned to 8 and starts with them): `out.src = v4_mapped(..)` becomes calls of a
    /// byte-loop `memset` in BPF.
    #[inline(always)]
    fn set_v4_addrs(&mut self, src: [u8; 4], dst: [u8; 4]) {
        let mapped = |a: [u8; 4]| u64::from_ne_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]);
        // SAFETY: `src` and `dst` are the first 32 bytes of the 8-aligned struct (`repr(C)`).
        unsafe { *(self as *mut Ip as *mut [u64; 4]) = [0, mapped(src), 0, mapped(dst)] };
    }

    /// Writes both addresses from an IPv6 header's bytes 8..40, as `set_v4_addrs` does.
    #[inline(always)]
    fn set_v6_addrs(&mut self, header: &[u8; IPV6_HLEN]) {
        let word = |at: usize| {
            u64::from_ne_bytes([
                header[at],
                header[at + 1],
                header[at + 2],
                header[at + 3],
                header[at + 4],
                header[at + 5],
                header[at + 6],
                header[at + 7],
            ])
        };
        // SAFETY: as in `set_v4_addrs`.
        unsafe { *(self as *mut Ip as *mut [u64; 4]) = [word(8), word(16), word(24), word(32)] };
    }

    /// The IPv4 address bytes of an `Addr` (valid when `family == 4`).
    #[inline(always)]
    pub fn v4(addr: &Addr) -> [u8; 4] {
        [addr[12], addr[13], addr[14], addr[15]]
    }
}

const _: () = {
    assert!(core::mem::offset_of!(Ip, src) == 0);
    assert!(core::mem::offset_of!(Ip, dst) == 16);
    assert!(core::mem::align_of::<Ip>() == 8);
};

pub enum Parsed {
    /// Link management that always passes (ARP, IPv6 neighbour/router discovery, MLD).
    Exempt,
    /// An IP packet, written to the caller's `Ip`.
    Ip,
}

/// Parses a frame into `out`. Not inlined: the header copies live in this call's own
/// stack frame, and `out` in per-CPU scratch memory, not on the caller's stack.
#[inline(never)]
pub fn parse_ethernet(packet: &Packet, out: &mut Ip) -> Result<Parsed, Reason> {
    // Every IP path writes family, addresses, protocol and the fragment fields; only what
    // a path may leave alone is reset here (a whole-struct clear is a byte-at-a-time memset
    // of 88 bytes: the BPF backend picks the store width from the alignment).
    out.src_port = 0;
    out.dst_port = 0;
    out.icmp_type = 0;
    out.echo_id = 0;
    out.quoted = None;
    let eth: [u8; ETH_HLEN] = packet.header(0)?;
    let mut ethertype = be16(&eth, 12);
    let mut offset = ETH_HLEN;
    // Up to two VLAN tags (802.1ad or 802.1Q outer, 802.1Q inner); a third is unsupported.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        let tag: [u8; 4] = packet.header(offset)?;
        ethertype = be16(&tag, 2);
        offset += 4;
        if ethertype == ETH_P_8021Q {
            let tag: [u8; 4] = packet.header(offset)?;
            ethertype = be16(&tag, 2);
            offset += 4;
        }
    }
    match ethertype {
        ETH_P_ARP => Ok(Parsed::Exempt),
        ETH_P_IP => parse_ipv4(packet, offset, out),
        ETH_P_IPV6 => parse_ipv6(packet, offset, out),
        _ => Err(Reason::UnsupportedProtocol),
    }
}

#[inline(always)]
fn parse_ipv4(packet: &Packet, offset: usize, out: &mut Ip) -> Result<Parsed, Reason> {
    let ip: [u8; IPV4_MIN_HLEN] = packet.header(offset)?;
    let version_ihl = ip[0];
    if version_ihl >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    // IHL honoured: options are skipped, never mistaken for the transport header.
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(Reason::Malformed);
    }
    let total_len = be16(&ip, 2) as usize;
    if total_len < header_len {
        return Err(Reason::Malformed);
    }
    let flags_fragment = be16(&ip, 6);
    let fragment_offset = flags_fragment & 0x1fff;
    let more_fragments = flags_fragment & 0x2000 != 0;
    let frag = if fragment_offset != 0 {
        Frag::Later
    } else if more_fragments {
        Frag::First
    } else {
        Frag::Whole
    };
    let protocol = ip[9];
    // RFC 1858: a fragment at offset 8 bytes can only be an attempt to rewrite the TCP header.
    if protocol == proto::TCP && fragment_offset == 1 {
        return Err(Reason::Fragment);
    }
    out.family = 4;
    out.set_v4_addrs(
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    );
    out.protocol = protocol;
    out.frag = frag;
    out.frag_id = u32::from(be16(&ip, 4));
    out.frag_protocol = protocol;
    if frag != Frag::Later {
        // The first fragment must hold the whole transport header, or it is malformed.
        parse_l4(packet, offset + header_len, out)?;
    }
    Ok(Parsed::Ip)
}

#[inline(always)]
fn parse_ipv6(packet: &Packet, offset: usize, out: &mut Ip) -> Result<Parsed, Reason> {
    let ip: [u8; IPV6_HLEN] = packet.header(offset)?;
    if ip[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    out.set_v6_addrs(&ip);
    let mut next_header = ip[6];
    let hop_limit = ip[7];
    let mut at = offset + IPV6_HLEN;
    let mut frag = Frag::Whole;
    let mut frag_id = 0;
    let mut frag_protocol = 0;
    // Walk the extension-header chain, bounded; a longer chain is not judged.
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next_header {
            NEXTHDR_HOP | NEXTHDR_DEST => {
                let h: [u8; 2] = packet.header(at)?;
                next_header = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_ROUTING => {
                let h: [u8; 4] = packet.header(at)?;
                // Segments left: the packet is on its way to another destination than the
                // one in the header, which the lookup would judge instead. Not judged.
                if h[3] != 0 {
                    return Err(Reason::UnsupportedProtocol);
                }
                next_header = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let h: [u8; 2] = packet.header(at)?;
                next_header = h[0];
                at += (h[1] as usize + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let h: [u8; 8] = packet.header(at)?;
                next_header = h[0];
                let offset_flags = be16(&h, 2);
                let fragment_offset = offset_flags >> 3;
                let more = offset_flags & 1 != 0;
                frag_id = be32(&h, 4);
                frag_protocol = next_header;
                // As for IPv4: 8 bytes into a TCP header can only be an attempt to rewrite it.
                if fragment_offset == 1 && next_header == proto::TCP {
                    return Err(Reason::Fragment);
                }
                if fragment_offset != 0 {
                    frag = Frag::Later;
                } else if more {
                    frag = Frag::First;
                }
                at += 8;
                // A later fragment's payload is not headers: stop walking.
                if frag == Frag::Later {
                    break;
                }
            }
            _ => break,
        }
    }
    if frag != Frag::Later
        && matches!(
            next_header,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
        )
    {
        // The chain is longer than the walk, or a header repeats without end.
        return Err(Reason::UnsupportedProtocol);
    }
    if NEXTHDR_UNWALKED.contains(&next_header) {
        return Err(Reason::UnsupportedProtocol);
    }
    out.family = 6;
    out.protocol = next_header;
    out.frag = frag;
    out.frag_id = frag_id;
    out.frag_protocol = frag_protocol;
    if frag != Frag::Later {
        parse_l4(packet, at, out)?;
        if frag == Frag::Whole && is_link_management(out, hop_limit) {
            return Ok(Parsed::Exempt);
        }
    }
    Ok(Parsed::Ip)
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

#[inline(always)]
fn parse_l4(packet: &Packet, offset: usize, ip: &mut Ip) -> Result<(), Reason> {
    match ip.protocol {
        proto::TCP => {
            // The fixed header must be complete.
            let tcp: [u8; 20] = packet.header(offset)?;
            ip.src_port = be16(&tcp, 0);
            ip.dst_port = be16(&tcp, 2);
        }
        proto::UDP => {
            let udp: [u8; 8] = packet.header(offset)?;
            ip.src_port = be16(&udp, 0);
            ip.dst_port = be16(&udp, 2);
        }
        proto::ICMP | proto::ICMPV6 => {
            let icmp: [u8; 8] = packet.header(offset)?;
            let (ty, v6) = (icmp[0], ip.protocol == proto::ICMPV6);
            ip.icmp_type = ty;
            let echo = if v6 {
                ty == ICMPV6_ECHO_REQUEST || ty == ICMPV6_ECHO_REPLY
            } else {
                ty == ICMP_ECHO || ty == ICMP_ECHO_REPLY
            };
            if echo {
                ip.echo_id = be16(&icmp, 4);
            }
            let error = if v6 {
                (ICMPV6_DEST_UNREACH..=ICMPV6_PARAMETER_PROBLEM).contains(&ty)
            } else {
                ty == ICMP_DEST_UNREACH || ty == ICMP_TIME_EXCEEDED || ty == ICMP_PARAMETER_PROBLEM
            };
            if error {
                // A quote that cannot be read is not an error we can relate to a flow; the
                // message is then judged like any other ICMP by the rules.
                ip.quoted = if v6 {
                    parse_quoted_v6(packet, offset + 8).ok()
                } else {
                    parse_quoted_v4(packet, offset + 8).ok()
                };
            }
        }
        _ => {}
    }
    Ok(())
}

/// The ports of a quoted transport header (the first 8 bytes are all an ICMP error holds).
#[inline(always)]
fn quoted_ports(packet: &Packet, offset: usize, protocol: u8) -> Result<(u16, u16), Reason> {
    match protocol {
        proto::TCP | proto::UDP => {
            let l4: [u8; 4] = packet.header(offset)?;
            Ok((be16(&l4, 0), be16(&l4, 2)))
        }
        proto::ICMP | proto::ICMPV6 => {
            // An echo's identifier is the flow's local port.
            let icmp: [u8; 8] = packet.header(offset)?;
            Ok((be16(&icmp, 4), 0))
        }
        _ => Ok((0, 0)),
    }
}

#[inline(always)]
fn parse_quoted_v4(packet: &Packet, offset: usize) -> Result<Quoted, Reason> {
    let ip: [u8; IPV4_MIN_HLEN] = packet.header(offset)?;
    if ip[0] >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(Reason::Malformed);
    }
    let protocol = ip[9];
    let (src_port, dst_port) = quoted_ports(packet, offset + header_len, protocol)?;
    Ok(Quoted {
        src: v4_mapped([ip[12], ip[13], ip[14], ip[15]]),
        dst: v4_mapped([ip[16], ip[17], ip[18], ip[19]]),
        protocol,
        src_port,
        dst_port,
    })
}

#[inline(always)]
fn parse_quoted_v6(packet: &Packet, offset: usize) -> Result<Quoted, Reason> {
    let ip: [u8; IPV6_HLEN] = packet.header(offset)?;
    if ip[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    // Only a quote without extension headers is followed.
    let protocol = ip[6];
    let (src_port, dst_port) = quoted_ports(packet, offset + IPV6_HLEN, protocol)?;
    Ok(Quoted {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
    })
}

/// Neighbour and router discovery, redirects (133-137, hop limit 255 as RFC 4861 requires)
/// and MLD (130-132, 143, hop limit 1), between link-scoped addresses: a message of these
/// types to or from global addresses could be routed, so it is judged like any packet.
#[inline(always)]
fn is_link_management(ip: &Ip, hop_limit: u8) -> bool {
    if ip.protocol != proto::ICMPV6 {
        return false;
    }
    let hop_ok = match ip.icmp_type {
        133..=137 => hop_limit == 255,
        130..=132 | 143 => hop_limit == 1,
        _ => return false,
    };
    let link_scoped = |a: &Addr| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    let link_multicast = |a: &Addr| a[0] == 0xff && a[1] & 0x0f == 0x02;
    // Neighbour solicitations go to a solicited-node multicast address; advertisements,
    // redirects and unicast probes come from or go to link-local addresses. Address
    // resolution between global addresses of one link needs that prefix exempted.
    hop_ok
        && (link_scoped(&ip.src)
            || link_scoped(&ip.dst)
            || link_multicast(&ip.dst)
            || ip.src == [0; 16])
}

/// Destinations that never leave the link: limited broadcast, IPv4 local network control
/// (224.0.0.0/24), IPv4 and IPv6 link-local unicast, IPv6 link-local multicast (ff02::/16).
/// DHCP, neighbour discovery and routing protocols use them; they are management traffic.
#[inline(always)]
pub fn is_link_local(family: u8, addr: &Addr) -> bool {
    if family == 4 {
        let a = Ip::v4(addr);
        a == [255, 255, 255, 255]
            || (a[0] == 224 && a[1] == 0 && a[2] == 0)
            || (a[0] == 169 && a[1] == 254)
    } else {
        (addr[0] == 0xfe && addr[1] & 0xc0 == 0x80) || (addr[0] == 0xff && addr[1] & 0x0f == 0x02)
    }
}

/// The parser on the host: frames built by etherparse, parsed here, fields checked. The
/// kernel fixtures (fwd-userspace/tests/datapath) run the same code inside the programs.
#[cfg(test)]
mod tests {
    use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};

    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn empty() -> Ip {
        Ip {
            src: [0; 16],
            dst: [0; 16],
            family: 0,
            protocol: 0,
            src_port: 0,
            dst_port: 0,
            icmp_type: 0,
            echo_id: 0,
            frag: Frag::Whole,
            frag_id: 0,
            frag_protocol: 0,
            quoted: None,
        }
    }

    /// Parses `frame`; the `Ip` and the result.
    fn parse(frame: &[u8]) -> (Result<Parsed, Reason>, Ip) {
        let start = frame.as_ptr() as usize;
        let mut ip = empty();
        let result = parse_ethernet(&Packet::new(start, start + frame.len()), &mut ip);
        (result, ip)
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1024)
            .syn()
            .write(&mut out, &[0x5a; 8])
            .unwrap();
        out
    }

    #[test]
    fn ipv4_tcp_fields() {
        let (r, ip) = parse(&tcp4([10, 0, 0, 2], [192, 0, 2, 9], 40000, 443));
        assert!(matches!(r, Ok(Parsed::Ip)));
        assert_eq!(ip.family, 4);
        assert_eq!(ip.src, v4_mapped([10, 0, 0, 2]));
        assert_eq!(ip.dst, v4_mapped([192, 0, 2, 9]));
        assert_eq!(
            (ip.protocol, ip.src_port, ip.dst_port),
            (proto::TCP, 40000, 443)
        );
        assert!(ip.frag == Frag::Whole && ip.quoted.is_none());
    }

    #[test]
    fn ipv6_udp_behind_a_hop_by_hop_header() {
        let (src, dst) = (
            [0xfd; 16],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
        );
        // UDP behind an 8-byte hop-by-hop header (next header 17, length 0, padding).
        let mut l4 = vec![17, 0, 1, 4, 0, 0, 0, 0];
        l4.extend_from_slice(&5000u16.to_be_bytes());
        l4.extend_from_slice(&3478u16.to_be_bytes());
        l4.extend_from_slice(&8u16.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        let ip6 = Ipv6Header {
            payload_length: l4.len() as u16,
            next_header: IpNumber(0),
            hop_limit: 64,
            source: src,
            destination: dst,
            ..Default::default()
        };
        let mut frame = Vec::new();
        frame.extend_from_slice(&MAC);
        frame.extend_from_slice(&MAC);
        frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        ip6.write(&mut frame).unwrap();
        frame.extend_from_slice(&l4);
        let (r, ip) = parse(&frame);
        assert!(matches!(r, Ok(Parsed::Ip)));
        assert_eq!((ip.family, ip.src, ip.dst), (6, src, dst));
        assert_eq!(
            (ip.protocol, ip.src_port, ip.dst_port),
            (proto::UDP, 5000, 3478)
        );
    }

    #[test]
    fn a_vlan_tag_is_skipped_and_arp_is_exempt() {
        let inner = tcp4([10, 0, 0, 2], [192, 0, 2, 9], 1, 2);
        let mut tagged = inner[..12].to_vec();
        tagged.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        tagged.extend_from_slice(&[0, 7]);
        tagged.extend_from_slice(&inner[12..]);
        let (r, ip) = parse(&tagged);
        assert!(matches!(r, Ok(Parsed::Ip)));
        assert_eq!((ip.dst_port, ip.dst), (2, v4_mapped([192, 0, 2, 9])));

        let mut arp = inner[..12].to_vec();
        arp.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[0; 20]);
        assert!(matches!(parse(&arp).0, Ok(Parsed::Exempt)));
    }

    #[test]
    fn truncated_and_fragmented_frames_are_not_passed_blindly() {
        let frame = tcp4([10, 0, 0, 2], [192, 0, 2, 9], 1, 2);
        for cut in [13, ETH_HLEN + 10, ETH_HLEN + IPV4_MIN_HLEN + 5] {
            assert!(
                matches!(parse(&frame[..cut]).0, Err(Reason::Malformed)),
                "cut at {cut}"
            );
        }
        // A later fragment: no ports, it follows its first fragment.
        let later = |offset_units: u16, protocol: u8| {
            let mut h =
                Ipv4Header::new(8, 64, IpNumber(protocol), [10, 0, 0, 2], [192, 0, 2, 9]).unwrap();
            h.identification = 77;
            h.fragment_offset = etherparse::IpFragOffset::try_new(offset_units).unwrap();
            let mut f = frame[..ETH_HLEN].to_vec();
            h.write(&mut f).unwrap();
            f.extend_from_slice(&[0; 8]);
            f
        };
        let (r, ip) = parse(&later(3, proto::UDP));
        assert!(matches!(r, Ok(Parsed::Ip)));
        assert!(ip.frag == Frag::Later);
        assert_eq!((ip.src_port, ip.dst_port, ip.frag_id), (0, 0, 77));
        // RFC 1858: TCP at offset 8 bytes can only rewrite the TCP header.
        assert!(matches!(
            parse(&later(1, proto::TCP)).0,
            Err(Reason::Fragment)
        ));
    }
}
