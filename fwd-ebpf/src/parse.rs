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

    /// Reads a `T` at `offset`, or `Malformed` if the packet is too short.
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Result<T, Reason> {
        let at = self.start + offset;
        if at + core::mem::size_of::<T>() > self.end {
            return Err(Reason::Malformed);
        }
        // SAFETY: bounds checked against the packet end just above.
        Ok(unsafe { core::ptr::read_unaligned(at as *const T) })
    }

    #[inline(always)]
    fn be16(&self, offset: usize) -> Result<u16, Reason> {
        self.load::<[u8; 2]>(offset).map(u16::from_be_bytes)
    }
}

/// The transport part of the lookup key. `port` is the remote port (0 for protocols without
/// ports; rules for such protocols cover every port value).
pub struct L4 {
    pub protocol: u8,
    pub port: u16,
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
    let mut ethertype = packet.be16(12)?;
    let mut offset = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner); a third tag is unsupported below.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        ethertype = packet.be16(offset + 2)?;
        offset += 4;
        if ethertype == ETH_P_8021Q {
            ethertype = packet.be16(offset + 2)?;
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
    let version_ihl: u8 = packet.load(offset)?;
    if version_ihl >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    // IHL honoured: options are skipped, never mistaken for the transport header.
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(Reason::Malformed);
    }
    let total_len = packet.be16(offset + 2)? as usize;
    if total_len < header_len {
        return Err(Reason::Malformed);
    }
    let flags_fragment = packet.be16(offset + 6)?;
    // More-fragments set or a non-zero offset: not judged until fragment tracking exists.
    if flags_fragment & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    let protocol: u8 = packet.load(offset + 9)?;
    let dst: [u8; 4] = packet.load(offset + 16)?;
    // The whole header, options included, must be present.
    packet.load::<u8>(offset + header_len - 1)?;
    let l4 = parse_l4(packet, offset + header_len, protocol)?;
    Ok(Parsed::V4 { dst, l4 })
}

#[inline(always)]
fn parse_ipv6(packet: &Packet, offset: usize) -> Result<Parsed, Reason> {
    let version: u8 = packet.load(offset)?;
    if version >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let next_header: u8 = packet.load(offset + 6)?;
    let dst: [u8; 16] = packet.load(offset + 24)?;
    let l4_offset = offset + IPV6_HLEN;
    if next_header == proto::ICMPV6 {
        let icmp_type: u8 = packet.load(l4_offset)?;
        // Router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
        if (133..=137).contains(&icmp_type) {
            return Ok(Parsed::Exempt);
        }
    }
    let l4 = match next_header {
        proto::TCP | proto::UDP | proto::ICMPV6 => parse_l4(packet, l4_offset, next_header)?,
        // Extension headers and anything else are not judged yet: dropped with a reason.
        _ => return Err(Reason::UnsupportedProtocol),
    };
    Ok(Parsed::V6 { dst, l4 })
}

#[inline(always)]
fn parse_l4(packet: &Packet, offset: usize, protocol: u8) -> Result<L4, Reason> {
    let port = match protocol {
        proto::TCP => {
            // Full fixed header present (20 bytes), destination port at +2.
            packet.load::<[u8; 20]>(offset)?;
            packet.be16(offset + 2)?
        }
        proto::UDP => {
            packet.load::<[u8; 8]>(offset)?;
            packet.be16(offset + 2)?
        }
        proto::ICMP | proto::ICMPV6 => {
            packet.load::<[u8; 4]>(offset)?;
            0
        }
        _ => 0,
    };
    Ok(L4 { protocol, port })
}
