//! Types and constants shared by fwd's kernel programs and its userspace controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so the kernel and userspace agree on
//! the byte layout; sizes are checked at compile time. Multi-byte fields that take part in an
//! LPM prefix are stored in network byte order (the trie compares bytes most significant first).
#![cfg_attr(target_arch = "bpf", no_std)]

/// Number of policy slots. A reload fills the inactive slot and flips `FwdConfig::active_slot`.
pub const SLOTS: u32 = 2;

/// Capacity of each IPv4 remote-address trie (per slot).
pub const DST4_CAPACITY: u32 = 1 << 20;
/// Capacity of each IPv6 remote-address trie (per slot).
pub const DST6_CAPACITY: u32 = 1 << 19;
/// Capacity of each (class, direction, protocol, port) trie (per slot).
pub const PORTS_CAPACITY: u32 = 1 << 18;
/// Capacity of the exemption tries (management subnets, the gateway's own addresses).
pub const EXEMPT_CAPACITY: u32 = 4096;
/// Number of rule ids (rule counters are indexed by rule id).
pub const MAX_RULES: u32 = 1 << 16;

/// The `direction` byte of a port key: which way the packet goes, and which port the key holds.
pub mod direction {
    /// From the protected network to a remote host; the key holds the remote (destination) port.
    pub const EGRESS: u8 = 0;
    /// From a remote host into the protected network; the key holds the local (destination) port.
    pub const INGRESS_LOCAL_PORT: u8 = 1;
    /// From a remote host into the protected network; the key holds the remote (source) port.
    pub const INGRESS_REMOTE_PORT: u8 = 2;
}

/// IP protocol numbers used in port keys.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Why a packet got its verdict. Index into `REASON_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Matched a rule and passed.
    Allowed = 0,
    /// Management or configured exemption (ARP, neighbour discovery, own addresses).
    Exempt = 1,
    /// The remote address matched no rule.
    NoAddressMatch = 2,
    /// The remote address matched, but no rule of its class covers the protocol and port.
    NoPortMatch = 3,
    /// A header was truncated or inconsistent.
    Malformed = 4,
    /// A network or transport protocol the datapath does not judge (dropped, never passed).
    UnsupportedProtocol = 5,
    /// An IP fragment that cannot be judged.
    Fragment = 6,
    /// Audit mode: the packet would have been dropped, but passed.
    AuditWouldDrop = 7,
}

impl Reason {
    /// Number of reasons; size of `REASON_COUNTERS`.
    pub const COUNT: u32 = 8;
    /// Every reason, in index order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Allowed,
        Reason::Exempt,
        Reason::NoAddressMatch,
        Reason::NoPortMatch,
        Reason::Malformed,
        Reason::UnsupportedProtocol,
        Reason::Fragment,
        Reason::AuditWouldDrop,
    ];

    /// The label used in metrics and CLI output.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Exempt => "exempt",
            Reason::NoAddressMatch => "no_address_match",
            Reason::NoPortMatch => "no_port_match",
            Reason::Malformed => "malformed",
            Reason::UnsupportedProtocol => "unsupported_protocol",
            Reason::Fragment => "fragment",
            Reason::AuditWouldDrop => "audit_would_drop",
        }
    }

    /// Whether a packet with this reason is a drop in enforce mode.
    pub const fn is_drop(self) -> bool {
        !matches!(
            self,
            Reason::Allowed | Reason::Exempt | Reason::AuditWouldDrop
        )
    }
}

/// Key of the `PORTS` tries: which rule covers this (class, direction, protocol, port).
///
/// The LPM prefix runs over the fields in order; port ranges become a few entries whose
/// prefix stops inside `port` (10000-60000 is 14 entries). `class` and `port` are big-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub class_be: u32,
    pub direction: u8,
    pub protocol: u8,
    pub port_be: u16,
}

impl PortKey {
    /// Prefix length covering class, direction and protocol: where port bits begin.
    pub const PORT_OFFSET_BITS: u32 = 48;
    /// Prefix length of a key that matches one exact port.
    pub const FULL_BITS: u32 = 64;

    #[inline(always)]
    pub const fn new(class: u32, direction: u8, protocol: u8, port: u16) -> Self {
        Self {
            class_be: class.to_be(),
            direction,
            protocol,
            port_be: port.to_be(),
        }
    }

    pub const fn class(&self) -> u32 {
        u32::from_be(self.class_be)
    }

    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// Value of the `PORTS` tries: the rule that matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortVerdict {
    pub rule: u32,
    /// `PortVerdict::FLAG_*` bits.
    pub flags: u32,
}

impl PortVerdict {
    /// Ingress only from a remote the protected host has a live flow with ("related").
    pub const FLAG_RELATED: u32 = 1;
    /// The rule's remote is `any`: an ingress match on the other port key that names
    /// addresses takes precedence.
    pub const FLAG_ANY_REMOTE: u32 = 2;
}

/// Packets and bytes of a rule or a reason (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// The one-entry runtime configuration map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdConfig {
    /// Which policy slot (0 or 1) the programs read.
    pub active_slot: u32,
    /// `FwdConfig::MODE_*`.
    pub mode: u32,
    /// Policy generation, for diagnostics.
    pub generation: u32,
    pub _pad: u32,
}

impl FwdConfig {
    /// Drop what no rule allows.
    pub const MODE_ENFORCE: u32 = 0;
    /// Pass everything; count what would have been dropped.
    pub const MODE_AUDIT: u32 = 1;
}

const _: () = {
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::align_of::<PortKey>() == 4);
    assert!(core::mem::size_of::<PortVerdict>() == 8);
    assert!(core::mem::size_of::<Counter>() == 16);
    assert!(core::mem::size_of::<FwdConfig>() == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain integers with no implicit padding (checked above).
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::PortVerdict {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::FwdConfig {}
}

/// Port-range expansion into LPM prefixes over the 16 port bits.
///
/// Returns `(port, prefix_bits)` blocks, in ascending order, whose union is exactly
/// `lo..=hi`; each block is aligned (`port` has its low `16 - prefix_bits` bits clear).
pub fn port_range_blocks(lo: u16, hi: u16, mut emit: impl FnMut(u16, u32)) {
    if lo > hi {
        return;
    }
    let mut start = lo as u32;
    let end = hi as u32;
    while start <= end {
        // The largest aligned block starting at `start` that does not pass `end`.
        let mut size_log = if start == 0 {
            16
        } else {
            start.trailing_zeros().min(16)
        };
        while start + (1u32 << size_log) - 1 > end {
            size_log -= 1;
        }
        emit(start as u16, 16 - size_log);
        start += 1u32 << size_log;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(lo: u16, hi: u16) -> Vec<(u16, u32)> {
        let mut v = Vec::new();
        port_range_blocks(lo, hi, |p, b| v.push((p, b)));
        v
    }

    #[test]
    fn architecture_examples() {
        assert_eq!(blocks(10000, 60000).len(), 14);
        assert_eq!(blocks(1024, 65535).len(), 6);
        assert_eq!(blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(blocks(443, 443), vec![(443, 16)]);
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        for (lo, hi) in [
            (0, 0),
            (1, 1),
            (5, 9),
            (10000, 20000),
            (65535, 65535),
            (3, 65534),
        ] {
            let mut covered = vec![false; 65536];
            port_range_blocks(lo, hi, |p, bits| {
                let size = 1u32 << (16 - bits);
                assert_eq!(p as u32 % size, 0, "block {p}/{bits} not aligned");
                for q in p as u32..p as u32 + size {
                    assert!(!covered[q as usize], "port {q} covered twice");
                    covered[q as usize] = true;
                }
            });
            for (q, c) in covered.iter().enumerate() {
                assert_eq!(*c, (lo as usize..=hi as usize).contains(&q), "port {q}");
            }
        }
    }

    #[test]
    fn port_key_is_network_order() {
        let k = PortKey::new(0x0102_0304, direction::EGRESS, proto::TCP, 443);
        // SAFETY: PortKey is repr(C) of integers, 8 bytes, no padding.
        let bytes: [u8; 8] = unsafe { core::mem::transmute(k) };
        assert_eq!(bytes, [1, 2, 3, 4, 0, 6, 0x01, 0xbb]);
        assert_eq!(k.class(), 0x0102_0304);
        assert_eq!(k.port(), 443);
    }
}
