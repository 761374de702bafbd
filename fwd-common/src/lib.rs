//! Types and constants shared by fwd's kernel programs and its userspace controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so the kernel and userspace agree on
//! the byte layout; sizes are checked at compile time. Multi-byte fields that take part in an
//! LPM prefix are stored in network byte order (the trie compares bytes most significant first).
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod parse;
pub mod tables;

/// Number of policy slots. A reload fills the inactive slot and flips `FwdConfig::active_slot`.
pub const SLOTS: u32 = 2;

/// Default capacity of each slot's IPv4 range table (`RNG4_n`); the daemon sizes it from
/// the policy at start (`tables::` explains the layout).
pub const RANGES4_CAPACITY: u32 = 1 << 16;
/// Default capacity of each slot's node tables (`NODES4_n`, `NODES6_n`), in entries (256 a
/// node).
pub const NODE_ENTRIES_CAPACITY: u32 = 1 << 14;
/// Default capacity of each slot's IPv6 range table (`RNG6_n`).
pub const RANGES6_CAPACITY: u32 = 1 << 15;
/// Default capacity of each slot's class records (`CLASSES_n`), runtime classes included.
pub const CLASSES_CAPACITY: u32 = 1 << 12;
/// Default capacity of each slot's port ranges (`PORT_RANGES_n`), runtime classes included.
pub const PORT_RANGES_CAPACITY: u32 = 1 << 16;
/// Capacity of each slot's learned host tables (`HOSTS4_n`, `HOSTS6_n`): the DNS proxy's
/// addresses.
pub const HOSTS_CAPACITY: u32 = 1 << 16;
/// Number of rule ids.
pub const MAX_RULES: u32 = 1 << 16;
/// Counters of each CPU in `RULE_COUNTERS`: one outbound and one inbound counter per rule
/// id. The map holds one such block per possible CPU, one after another
/// (`rule_counter_slot`).
pub const RULE_COUNTER_SLOTS: u32 = MAX_RULES * 2;
/// Default size of the flow table (LRU: the least recently used flow makes room).
pub const FLOWS_CAPACITY: u32 = 1 << 18;
/// Size of the table of remotes with a live flow (for "related" ingress rules).
pub const REMOTES_CAPACITY: u32 = 1 << 16;
/// Size of the table of allowed first fragments.
pub const FRAGS_CAPACITY: u32 = 1 << 14;
/// Size of the ring buffer of denied-packet samples, in bytes.
pub const DENIED_RING_BYTES: u32 = 1 << 18;
/// At most this many IPv6 extension headers are walked; a longer chain is dropped.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// The index of `rule`'s outbound or inbound counter within a CPU's block of
/// `RULE_COUNTERS`.
#[inline(always)]
pub const fn rule_counter_index(rule: u32, inbound: bool) -> u32 {
    rule * 2 + inbound as u32
}

/// The `RULE_COUNTERS` entry of counter `index` (`rule_counter_index`) on `cpu`. A plain
/// array in CPU-sized blocks rather than a per-CPU array: a per-CPU array's lookup reads
/// a pointer table first, a second dependent cache miss on every counted packet
/// (`cargo xtask bench`: about 100 ns of an established flow's packet at 1,000,000
/// prefixes).
#[inline(always)]
pub const fn rule_counter_slot(cpu: u32, index: u32) -> u32 {
    cpu * RULE_COUNTER_SLOTS + index
}

/// The `REASON_COUNTERS` index of `reason` for packets going out (from the protected
/// network) or in.
#[inline(always)]
pub const fn reason_counter_index(reason: Reason, inbound: bool) -> u32 {
    reason as u32 + inbound as u32 * Reason::COUNT
}

/// Size of `REASON_COUNTERS`: every reason, outbound then inbound.
pub const REASON_COUNTER_SLOTS: u32 = Reason::COUNT * 2;

/// Bit of a compiled address entry's class value (`MapImage::dst4`/`dst6`, learned host
/// values): the class holds a rule of a vendor in audit mode, so a packet to it that no rule
/// allows passes as `audit_would_drop`. The class id is the value without this bit; the
/// kernel's tables carry it as `ClassRecord::FLAG_AUDIT`.
pub const CLASS_AUDIT: u32 = 1 << 31;

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
    /// Part of a live flow that a rule allowed: a reply, or a later packet of an allowed
    /// inbound flow.
    Established = 8,
    /// A "related" ingress rule matched, but the protected host has no live flow with the
    /// remote.
    NotRelated = 9,
}

impl Reason {
    /// Number of reasons; size of `REASON_COUNTERS`.
    pub const COUNT: u32 = 10;
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
        Reason::Established,
        Reason::NotRelated,
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
            Reason::Established => "established",
            Reason::NotRelated => "not_related",
        }
    }

    /// Whether a packet with this reason is a drop in enforce mode.
    pub const fn is_drop(self) -> bool {
        !matches!(
            self,
            Reason::Allowed | Reason::Exempt | Reason::AuditWouldDrop | Reason::Established
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

    /// Which of an ingress packet's two matches wins, lower first: a rule that needs no live
    /// flow beats a `related` one, then a rule naming addresses beats a `remote = "any"`
    /// one.
    #[inline(always)]
    pub const fn ingress_rank(&self) -> u32 {
        (self.flags & Self::FLAG_RELATED != 0) as u32 * 2
            + (self.flags & Self::FLAG_ANY_REMOTE != 0) as u32
    }

    /// The verdict of an ingress packet from its local-port and remote-port matches: the
    /// better `ingress_rank`, the local-port match on a tie.
    #[inline(always)]
    pub fn choose_ingress(local: Option<Self>, remote: Option<Self>) -> Option<Self> {
        match (local, remote) {
            (Some(l), Some(r)) if r.ingress_rank() < l.ingress_rank() => Some(r),
            (Some(l), _) => Some(l),
            (None, r) => r,
        }
    }
}

/// Packets and bytes of a rule or a reason (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl core::ops::Add for Counter {
    type Output = Counter;

    #[inline(always)]
    fn add(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// The one-entry runtime configuration map.
///
/// The first 8 bytes are what a packet's verdict depends on together: the slot, the mode,
/// the learned-host bits and the epoch. The programs read them as one 8-byte load and the
/// daemon writes them with one 8-byte store (the map is mmapable), so no packet sees a slot
/// with another slot's mode, host bits or epoch (`FwdConfig::head`, `FwdConfig::with_head`).
/// The generation stays the third `u32`, as in every earlier layout.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FwdConfig {
    /// Which policy slot (0 or 1) the programs read.
    pub active_slot: u8,
    /// `FwdConfig::MODE_*`.
    pub mode: u8,
    /// `FwdConfig::hosts_bit`s: which slots have learned hosts of which family, so a new
    /// flow probes the learned-host table only when it can hold the address.
    pub hosts: u8,
    pub _pad0: u8,
    /// The policy epoch: a flow entry judged under another epoch is judged again. Every
    /// change that can narrow what is allowed moves it on (`FwdConfig::next_epoch`). Never 0,
    /// so entries of an earlier layout (epoch bits 0) are never taken as current.
    pub epoch: u32,
    /// Policy generation, for diagnostics.
    pub generation: u32,
    /// Denied-packet samples each CPU may send per second (0: none).
    pub samples_per_second: u32,
    /// A TCP flow with no packet for this long is over.
    pub tcp_timeout_s: u32,
    /// A UDP flow with no packet for this long is over.
    pub udp_timeout_s: u32,
    /// ICMP echo and other protocols' flows, and first-fragment records.
    pub other_timeout_s: u32,
    /// Room for settings to come without another layout (48 bytes, which no earlier
    /// layout had: a pinned map of an earlier one is recognised by its size).
    pub _reserved: [u32; 5],
}

impl FwdConfig {
    /// Drop what no rule allows.
    pub const MODE_ENFORCE: u8 = 0;
    /// Pass everything; count what would have been dropped.
    pub const MODE_AUDIT: u8 = 1;

    pub const DEFAULT_TCP_TIMEOUT_S: u32 = 3600;
    pub const DEFAULT_UDP_TIMEOUT_S: u32 = 120;
    pub const DEFAULT_OTHER_TIMEOUT_S: u32 = 30;
    pub const DEFAULT_SAMPLES_PER_SECOND: u32 = 100;

    /// Seconds after which a flow of `protocol` is over.
    #[inline(always)]
    pub const fn timeout_s(&self, protocol: u8) -> u32 {
        match protocol {
            proto::TCP => self.tcp_timeout_s,
            proto::UDP => self.udp_timeout_s,
            _ => self.other_timeout_s,
        }
    }

    /// The `hosts` bit of `slot`'s learned hosts of `family` (4 or 6).
    #[inline(always)]
    pub const fn hosts_bit(slot: u8, family: u8) -> u8 {
        1 << ((slot & 1) * 2 + (family == 6) as u8)
    }

    /// The first 8 bytes (slot, mode, host bits, epoch) as the one word they are read and
    /// written as.
    #[inline(always)]
    pub const fn head(&self) -> u64 {
        let e = self.epoch.to_ne_bytes();
        u64::from_ne_bytes([
            self.active_slot,
            self.mode,
            self.hosts,
            self._pad0,
            e[0],
            e[1],
            e[2],
            e[3],
        ])
    }

    /// This config with the first 8 bytes from `head` (a word read at once).
    #[inline(always)]
    pub const fn with_head(mut self, head: u64) -> Self {
        let b = head.to_ne_bytes();
        self.active_slot = b[0];
        self.mode = b[1];
        self.hosts = b[2];
        self._pad0 = b[3];
        self.epoch = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        self
    }

    /// The epoch after `epoch`: 24 bits (they share `FlowValue::flags`), skipping 0.
    #[inline(always)]
    pub const fn next_epoch(epoch: u32) -> u32 {
        let next = epoch.wrapping_add(1) & FlowValue::EPOCH_MASK;
        if next == 0 { 1 } else { next }
    }
}

/// Whether something last seen at `last_seen_ns` is still live at `now_ns` with a timeout of
/// `timeout_s` seconds (one definition for the kernel and userspace).
#[inline(always)]
pub const fn is_live(now_ns: u64, last_seen_ns: u64, timeout_s: u32) -> bool {
    now_ns.saturating_sub(last_seen_ns) <= timeout_s as u64 * 1_000_000_000
}

impl Default for FwdConfig {
    fn default() -> Self {
        Self {
            active_slot: 0,
            mode: Self::MODE_ENFORCE,
            generation: 0,
            samples_per_second: Self::DEFAULT_SAMPLES_PER_SECOND,
            tcp_timeout_s: Self::DEFAULT_TCP_TIMEOUT_S,
            udp_timeout_s: Self::DEFAULT_UDP_TIMEOUT_S,
            other_timeout_s: Self::DEFAULT_OTHER_TIMEOUT_S,
            epoch: 1,
            hosts: 0,
            _pad0: 0,
            _reserved: [0; 5],
        }
    }
}

/// An address in the flow, fragment and remote tables: IPv6, or IPv4 mapped into IPv6
/// (`::ffff:a.b.c.d`), so the two families never collide.
pub type Addr = [u8; 16];

/// Maps an IPv4 address into the `Addr` form.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Key of the flow table, from the protected host's point of view. For ICMP echo the local
/// port holds the echo identifier and the remote port is 0; other portless protocols use 0
/// for both. Aligned to 8 (the layout is the same: 40 bytes, no implicit padding), so the
/// kernel programs copy and compare it in words rather than bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub local: Addr,
    pub remote: Addr,
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    /// 4 or 6: an IPv6 packet with `::ffff:` addresses never matches an IPv4 flow.
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    #[inline(always)]
    pub const fn new(
        family: u8,
        local: Addr,
        remote: Addr,
        local_port: u16,
        remote_port: u16,
        protocol: u8,
    ) -> Self {
        Self {
            local,
            remote,
            local_port,
            remote_port,
            protocol,
            family,
            _pad: [0; 2],
        }
    }
}

/// Value of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowValue {
    /// `bpf_ktime_get_ns` of the last packet either way.
    pub last_seen_ns: u64,
    /// The rule that allowed the flow; replies count on it.
    pub rule: u32,
    /// `FlowValue::FLAG_*` in the low byte; the policy epoch it was judged under above.
    pub flags: u32,
}

impl FlowValue {
    /// The flow began inbound (an ingress rule allowed it).
    pub const FLAG_INBOUND: u32 = 1;
    /// The rule that allowed it is `related`: its packets also need a live remote.
    pub const FLAG_RELATED: u32 = 2;
    /// Its remote is recorded in `REMOTES` (`ClassRecord::FLAG_RELATED_INGRESS`, or a
    /// learned host), and refreshed with the flow.
    pub const FLAG_REMOTE: u32 = 4;
    const EPOCH_SHIFT: u32 = 8;
    /// The bits of an epoch (`FwdConfig::epoch`).
    pub const EPOCH_MASK: u32 = (1 << (32 - Self::EPOCH_SHIFT)) - 1;

    /// `flags` of a flow judged under `epoch`.
    #[inline(always)]
    pub const fn flags_for(inbound: bool, related: bool, remote: bool, epoch: u32) -> u32 {
        (inbound as u32 * Self::FLAG_INBOUND)
            | (related as u32 * Self::FLAG_RELATED)
            | (remote as u32 * Self::FLAG_REMOTE)
            | ((epoch & Self::EPOCH_MASK) << Self::EPOCH_SHIFT)
    }

    /// The epoch the flow was judged under.
    #[inline(always)]
    pub const fn epoch(&self) -> u32 {
        self.flags >> Self::EPOCH_SHIFT
    }

    #[inline(always)]
    pub const fn inbound(&self) -> bool {
        self.flags & Self::FLAG_INBOUND != 0
    }
}

/// Key of the first-fragment table: the datagram's (src, dst, id, protocol). Aligned to 8
/// like `FlowKey`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    pub id: u32,
    /// IPv4's protocol field, or the next-header field of IPv6's fragment header.
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of the first-fragment table: the first fragment passed on `rule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue {
    pub last_seen_ns: u64,
    pub rule: u32,
    /// 1 if the datagram is inbound.
    pub inbound: u32,
}

/// A sample of a denied packet, sent through the `DENIED` ring buffer (rate limited per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeniedEvent {
    pub ts_ns: u64,
    pub ifindex: u32,
    /// The remote's class (without `CLASS_AUDIT`), or `DeniedEvent::NO_CLASS`.
    pub class: u32,
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// A `Reason` index.
    pub reason: u8,
    /// 1 if the packet came in from a remote.
    pub inbound: u8,
    pub protocol: u8,
    /// 4 or 6 (0 if the packet had no IP header).
    pub family: u8,
    pub icmp_type: u8,
    /// 1 if the packet passed anyway: the policy or its vendor is in audit mode.
    pub audited: u8,
    pub _pad: [u8; 6],
}

impl DeniedEvent {
    pub const NO_CLASS: u32 = u32::MAX;
    /// `sample`'s `where_` bit for an inbound packet (the ifindex is below).
    pub const WHERE_INBOUND: u64 = 1 << 32;
    /// `sample`'s `where_` bit for a packet that passed in audit mode.
    pub const WHERE_AUDITED: u64 = 1 << 33;
}

/// Per-CPU state of the denied-sample rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleBudget {
    /// Start of the current one-second window.
    pub window_start_ns: u64,
    /// Samples sent in it.
    pub sent: u64,
}

const _: () = {
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::align_of::<PortKey>() == 4);
    assert!(core::mem::size_of::<PortVerdict>() == 8);
    assert!(core::mem::size_of::<Counter>() == 16);
    assert!(core::mem::size_of::<FwdConfig>() == 48);
    assert!(core::mem::offset_of!(FwdConfig, epoch) == 4);
    assert!(core::mem::offset_of!(FwdConfig, generation) == 8);
    assert!(FwdConfig::next_epoch(FlowValue::EPOCH_MASK) == 1);
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::align_of::<FlowKey>() == 8);
    assert!(core::mem::align_of::<FragKey>() == 8);
    assert!(core::mem::size_of::<FlowValue>() == 16);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<FragValue>() == 16);
    assert!(core::mem::size_of::<DeniedEvent>() == 64);
    assert!(core::mem::size_of::<SampleBudget>() == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain integers with no implicit padding (checked above).
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::PortVerdict {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::FwdConfig {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::DeniedEvent {}
    unsafe impl aya::Pod for super::SampleBudget {}
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

    #[test]
    fn config_head_is_the_first_eight_bytes() {
        let c = FwdConfig {
            active_slot: 1,
            mode: FwdConfig::MODE_AUDIT,
            hosts: FwdConfig::hosts_bit(1, 6),
            epoch: 0x00ab_cdef,
            generation: 7,
            ..FwdConfig::default()
        };
        // SAFETY: FwdConfig is repr(C) plain integers, 48 bytes, no implicit padding.
        let bytes: [u8; 48] = unsafe { core::mem::transmute(c) };
        assert_eq!(c.head().to_ne_bytes(), bytes[..8]);
        let other = FwdConfig::default().with_head(c.head());
        assert_eq!(
            (
                other.active_slot,
                other.mode,
                other.hosts,
                other.epoch,
                other.generation
            ),
            (1, FwdConfig::MODE_AUDIT, 0b1000, 0x00ab_cdef, 0)
        );
    }
}
