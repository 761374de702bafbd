//! Bounds-checked header parsing. Anything the parser cannot judge is an error with a reason,
//! never a pass: a firewall that skips what it does not understand can be bypassed.

use fwd_common::{Reason, proto};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

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

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
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

/// The transport part of the lookup key. `port` is the remote port (0 for protocols without
/// ports; rules for such protocols cover every port value).
pub struct L4 {
    pub protocol: u8,
    pub port: u16,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
}

pub enum Parsed {
    /// Management traffic that always passes (ARP, IPv6 neighbour/router discovery).
    Exempt,
    V4 {
        dst: [u8; 4],
        l4: L4,
    },
    V6 {
        dst: [u8; 16],
        l4: L4,
    },
}

#[inline(always)]
pub fn parse_ethernet(packet: &Packet) -> Result<Parsed, Reason> {
    let eth: [u8; ETH_HLEN] = packet.header(0)?;
    let mut ethertype = be16(&eth, 12);
    let mut offset = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner); a third tag is unsupported below.
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
        ETH_P_IP => parse_ipv4(packet, offset),
        ETH_P_IPV6 => parse_ipv6(packet, offset),
        _ => Err(Reason::UnsupportedProtocol),
    }
}

#[inline(always)]
fn parse_ipv4(packet: &Packet, offset: usize) -> Result<Parsed, Reason> {
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
    // More-fragments set or a non-zero offset: not judged until fragment tracking exists.
    if flags_fragment & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    let protocol = ip[9];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    // Options are skipped by IHL; parse_l4 checks its own header is present after them.
    let l4 = parse_l4(packet, offset + header_len, protocol)?;
    Ok(Parsed::V4 { dst, l4 })
}

#[inline(always)]
fn parse_ipv6(packet: &Packet, offset: usize) -> Result<Parsed, Reason> {
    let ip: [u8; IPV6_HLEN] = packet.header(offset)?;
    if ip[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let next_header = ip[6];
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    let l4 = match next_header {
        proto::TCP | proto::UDP | proto::ICMPV6 => {
            parse_l4(packet, offset + IPV6_HLEN, next_header)?
        }
        // Extension headers and anything else are not judged yet: dropped with a reason.
        _ => return Err(Reason::UnsupportedProtocol),
    };
    // Router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
    if next_header == proto::ICMPV6 && (133..=137).contains(&l4.icmp_type) {
        return Ok(Parsed::Exempt);
    }
    Ok(Parsed::V6 { dst, l4 })
}

#[inline(always)]
fn parse_l4(packet: &Packet, offset: usize, protocol: u8) -> Result<L4, Reason> {
    let (port, icmp_type) = match protocol {
        proto::TCP => {
            // The fixed header must be complete; the destination port is at +2.
            let tcp: [u8; 20] = packet.header(offset)?;
            (be16(&tcp, 2), 0)
        }
        proto::UDP => {
            let udp: [u8; 8] = packet.header(offset)?;
            (be16(&udp, 2), 0)
        }
        proto::ICMP | proto::ICMPV6 => {
            let icmp: [u8; 4] = packet.header(offset)?;
            (0, icmp[0])
        }
        _ => (0, 0),
    };
    Ok(L4 {
        protocol,
        port,
        icmp_type,
    })
}
