//! The one frame builder of fwd's tests: Ethernet with VLAN tags, IPv4 with options, IPv6
//! with extension headers, TCP/UDP/ICMP with correct checksums, fragments, ICMP errors.
//! The kernel fixtures use all of it; the other tests `to(dst, l4)`.

use std::net::IpAddr;

use fwd_common::proto;

pub const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const PAYLOAD: [u8; 16] = [0x5a; 16];
/// The address in a routing header (2001:db8:1::6).
const ROUTING_HOP: [u8; 16] = 0x2001_0db8_0001_0000_0000_0000_0000_0006u128.to_be_bytes();
/// The sender of `arp`'s request (10.1.0.2).
const ARP_SENDER: [u8; 4] = [10, 1, 0, 2];
/// The protected host `to` sends from.
pub const FROM4: [u8; 4] = [10, 200, 0, 2];
pub const FROM6: [u8; 16] = [0xfd; 16];

/// The transport part of a packet; its payload follows.
#[derive(Clone, Debug)]
pub enum L4 {
    /// A 20-byte TCP header (SYN).
    Tcp {
        src: u16,
        dst: u16,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    /// ICMP or ICMPv6 by the packet's family: type, code, the 4 bytes after the checksum.
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Any protocol number; the payload is all there is (later fragments, tunnels).
    Raw(u8),
}

pub fn tcp(src: u16, dst: u16) -> L4 {
    L4::Tcp { src, dst }
}

pub fn udp(src: u16, dst: u16) -> L4 {
    L4::Udp { src, dst }
}

pub fn icmp(ty: u8, code: u8, rest: [u8; 4]) -> L4 {
    L4::Icmp { ty, code, rest }
}

/// An ICMP/ICMPv6 echo message of type `ty` with identifier `id`, sequence 1.
pub fn echo(ty: u8, id: u16) -> L4 {
    let id = id.to_be_bytes();
    icmp(ty, 0, [id[0], id[1], 0, 1])
}

/// IPv6 extension headers.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options, 8 bytes (PadN).
    HopByHop,
    /// Hop-by-hop options with a router alert (MLD).
    RouterAlert,
    /// Destination options, 8 bytes (PadN).
    Dest,
    /// Destination options of (n + 1) * 8 bytes.
    DestLong(u8),
    /// A segment routing header with one segment.
    Routing { segments_left: u8 },
    /// Fragment header; offset in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header with a 12-byte ICV (24 bytes).
    Auth,
    /// A header the parser does not walk, shaped like an 8-byte options header.
    Other(u8),
}

impl Ext {
    pub fn number(self) -> u8 {
        match self {
            Ext::HopByHop | Ext::RouterAlert => 0,
            Ext::Dest | Ext::DestLong(_) => 60,
            Ext::Routing { .. } => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::Other(n) => n,
        }
    }

    pub fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop | Ext::Dest | Ext::Other(_) => vec![next, 0, 1, 4, 0, 0, 0, 0],
            Ext::RouterAlert => vec![next, 0, 5, 2, 0, 0, 1, 0],
            Ext::DestLong(n) => {
                let len = (usize::from(n) + 1) * 8;
                let mut b = vec![next, n, 1, (len - 4) as u8];
                b.resize(len, 0);
                b
            }
            Ext::Routing { segments_left } => {
                let mut b = vec![next, 2, 4, segments_left, 0, 0, 0, 0];
                b.extend_from_slice(&ROUTING_HOP);
                b
            }
            Ext::Fragment { offset, more, id } => {
                let of = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&of.to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
                b
            }
            Ext::Auth => {
                let mut b = vec![next, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
                b.extend_from_slice(&[0xaa; 12]);
                b
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Net {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        options: Vec<u8>,
        id: u16,
        /// Fragment offset in 8-byte units.
        offset: u16,
        more: bool,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        exts: Vec<Ext>,
        hop_limit: u8,
    },
}

/// A test packet: VLAN tags, IP header, transport header, payload.
#[derive(Clone, Debug)]
pub struct Pkt {
    /// TPIDs of the VLAN tags, outermost first.
    pub tags: Vec<u16>,
    pub net: Net,
    pub l4: L4,
    pub payload: Vec<u8>,
}

pub fn v4(src: [u8; 4], dst: [u8; 4], l4: L4) -> Pkt {
    Pkt {
        tags: Vec::new(),
        net: Net::V4 {
            src,
            dst,
            options: Vec::new(),
            id: 0,
            offset: 0,
            more: false,
        },
        l4,
        payload: PAYLOAD.to_vec(),
    }
}

pub fn v6(src: [u8; 16], dst: [u8; 16], l4: L4) -> Pkt {
    Pkt {
        tags: Vec::new(),
        net: Net::V6 {
            src,
            dst,
            exts: Vec::new(),
            hop_limit: 64,
        },
        l4,
        payload: PAYLOAD.to_vec(),
    }
}

/// One's complement sum of `parts` (each but the last of even length).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for chunk in part.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pkt {
    pub fn tagged(mut self, tags: &[u16]) -> Self {
        self.tags = tags.to_vec();
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// IPv4 options (padded with NOPs to a multiple of 4 bytes).
    pub fn options(mut self, bytes: &[u8]) -> Self {
        let Net::V4 { options, .. } = &mut self.net else {
            panic!("options are IPv4's")
        };
        *options = bytes.to_vec();
        while options.len() % 4 != 0 {
            options.push(1);
        }
        self
    }

    /// An IPv4 fragment (offset in 8-byte units).
    pub fn frag4(mut self, frag_offset: u16, more_fragments: bool, datagram: u16) -> Self {
        let Net::V4 {
            id, offset, more, ..
        } = &mut self.net
        else {
            panic!("frag4 is IPv4's")
        };
        (*id, *offset, *more) = (datagram, frag_offset, more_fragments);
        self
    }

    /// IPv6 extension headers, in order.
    pub fn exts(mut self, headers: &[Ext]) -> Self {
        let Net::V6 { exts, .. } = &mut self.net else {
            panic!("extension headers are IPv6's")
        };
        *exts = headers.to_vec();
        self
    }

    pub fn hop_limit(mut self, limit: u8) -> Self {
        let Net::V6 { hop_limit, .. } = &mut self.net else {
            panic!("hop limit is IPv6's")
        };
        *hop_limit = limit;
        self
    }

    pub fn protocol(&self) -> u8 {
        match (&self.l4, &self.net) {
            (L4::Tcp { .. }, _) => proto::TCP,
            (L4::Udp { .. }, _) => proto::UDP,
            (L4::Icmp { .. }, Net::V4 { .. }) => proto::ICMP,
            (L4::Icmp { .. }, Net::V6 { .. }) => proto::ICMPV6,
            (L4::Raw(p), _) => *p,
        }
    }

    /// The same flow the other way: addresses and ports swapped, echo request <-> reply.
    pub fn reversed(&self) -> Pkt {
        let mut out = self.clone();
        out.net = match &self.net {
            Net::V4 { src, dst, .. } => v4(*dst, *src, L4::Raw(0)).net,
            Net::V6 { src, dst, .. } => v6(*dst, *src, L4::Raw(0)).net,
        };
        out.l4 = match self.l4 {
            L4::Tcp { src, dst } => tcp(dst, src),
            L4::Udp { src, dst } => udp(dst, src),
            L4::Icmp { ty, code, rest } => {
                let ty = match ty {
                    8 => 0,
                    0 => 8,
                    128 => 129,
                    129 => 128,
                    t => t,
                };
                icmp(ty, code, rest)
            }
            L4::Raw(p) => L4::Raw(p),
        };
        out
    }

    pub fn pseudo_header(&self, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        match &self.net {
            Net::V4 { src, dst, .. } => {
                p.extend_from_slice(src);
                p.extend_from_slice(dst);
                p.extend_from_slice(&[0, self.protocol()]);
                p.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Net::V6 { src, dst, .. } => {
                p.extend_from_slice(src);
                p.extend_from_slice(dst);
                p.extend_from_slice(&(len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, self.protocol()]);
            }
        }
        p
    }

    /// Transport header and payload, with a correct checksum.
    pub fn transport(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let checksum_at = match self.l4 {
            L4::Tcp { src, dst } => {
                b.extend_from_slice(&src.to_be_bytes());
                b.extend_from_slice(&dst.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02]);
                b.extend_from_slice(&1024u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                Some(16)
            }
            L4::Udp { src, dst } => {
                b.extend_from_slice(&src.to_be_bytes());
                b.extend_from_slice(&dst.to_be_bytes());
                b.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4::Icmp { ty, code, rest } => {
                b.extend_from_slice(&[ty, code, 0, 0]);
                b.extend_from_slice(&rest);
                Some(2)
            }
            L4::Raw(_) => None,
        };
        b.extend_from_slice(&self.payload);
        if let Some(at) = checksum_at {
            let sum = match (&self.l4, &self.net) {
                (L4::Icmp { .. }, Net::V4 { .. }) => checksum(&[&b]),
                _ => checksum(&[&self.pseudo_header(b.len()), &b]),
            };
            let sum = match (&self.l4, sum) {
                (L4::Udp { .. }, 0) => 0xffff,
                (_, s) => s,
            };
            b[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        b
    }

    /// The IP packet.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let transport = self.transport();
        let mut b = Vec::new();
        match &self.net {
            Net::V4 {
                src,
                dst,
                options,
                id,
                offset,
                more,
            } => {
                let header_len = 20 + options.len();
                assert!(header_len <= 60 && options.len() % 4 == 0);
                let flags = if *offset == 0 && !*more {
                    0x4000 // don't fragment
                } else {
                    (u16::from(*more) << 13) | offset
                };
                b.push(0x40 | (header_len / 4) as u8);
                b.push(0);
                b.extend_from_slice(&((header_len + transport.len()) as u16).to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&flags.to_be_bytes());
                b.extend_from_slice(&[64, self.protocol(), 0, 0]);
                b.extend_from_slice(src);
                b.extend_from_slice(dst);
                b.extend_from_slice(options);
                let sum = checksum(&[&b]);
                b[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            Net::V6 {
                src,
                dst,
                exts,
                hop_limit,
            } => {
                let mut chain = Vec::new();
                for (i, ext) in exts.iter().enumerate() {
                    let next = exts.get(i + 1).map_or(self.protocol(), |e| e.number());
                    chain.extend(ext.bytes(next));
                }
                let first = exts.first().map_or(self.protocol(), |e| e.number());
                b.extend_from_slice(&[0x60, 0, 0, 0]);
                b.extend_from_slice(&((chain.len() + transport.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[first, *hop_limit]);
                b.extend_from_slice(src);
                b.extend_from_slice(dst);
                b.extend(chain);
            }
        }
        b.extend(transport);
        b
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let ethertype = match self.net {
            Net::V4 { .. } => ETH_P_IP,
            Net::V6 { .. } => ETH_P_IPV6,
        };
        let mut b = ethernet(&self.tags, ethertype);
        b.extend(self.ip_bytes());
        b
    }

    /// Offset of the first byte after the IP header chain in `frame()`.
    pub fn l4_offset(&self) -> usize {
        let tags = 4 * self.tags.len();
        match &self.net {
            Net::V4 { options, .. } => 14 + tags + 20 + options.len(),
            Net::V6 { exts, .. } => {
                14 + tags + 40 + exts.iter().map(|e| e.bytes(0).len()).sum::<usize>()
            }
        }
    }
}

/// An Ethernet header with VLAN tags (TPIDs outermost first; VLAN ids 100, 101, ...).
pub fn ethernet(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&DST_MAC);
    b.extend_from_slice(&SRC_MAC);
    for (i, tpid) in tags.iter().enumerate() {
        b.extend_from_slice(&tpid.to_be_bytes());
        b.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    b.extend_from_slice(&ethertype.to_be_bytes());
    b
}

/// An ARP request (who has 10.1.0.1, tell 10.1.0.2).
pub fn arp(tags: &[u16]) -> Vec<u8> {
    let mut b = ethernet(tags, ETH_P_ARP);
    b.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    b.extend_from_slice(&SRC_MAC);
    b.extend_from_slice(&ARP_SENDER);
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&[10, 1, 0, 1]);
    b
}

/// An ICMP error from `from` to `to` quoting `quoted` (IPv4: its header and 8 bytes).
pub fn icmp4_error(from: [u8; 4], to: [u8; 4], ty: u8, code: u8, quoted: &Pkt) -> Pkt {
    let ip = quoted.ip_bytes();
    let quote_len = quoted.l4_offset() - 14 - 4 * quoted.tags.len() + 8;
    v4(from, to, icmp(ty, code, [0; 4])).payload(&ip[..quote_len])
}

/// An ICMPv6 error from `from` to `to` quoting all of `quoted`.
pub fn icmp6_error(
    from: [u8; 16],
    to: [u8; 16],
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &Pkt,
) -> Pkt {
    v6(from, to, icmp(ty, code, rest)).payload(&quoted.ip_bytes())
}

/// Copies `frame` with `bytes` written at `at`.
pub fn patched(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out
}

/// A frame from the protected host (`FROM4` or `FROM6`) to `dst`.
pub fn to(dst: IpAddr, l4: L4) -> Vec<u8> {
    match dst {
        IpAddr::V4(d) => v4(FROM4, d.octets(), l4).frame(),
        IpAddr::V6(d) => v6(FROM6, d.octets(), l4).frame(),
    }
}
