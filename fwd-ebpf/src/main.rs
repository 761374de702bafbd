//! fwd's kernel programs: parse -> classify -> verdict -> count.
//!
//! Three programs share one set of maps:
//! - `fwd_xdp` (XDP) and `fwd_tc_out` (TC) judge *outbound* packets: from the protected
//!   network to a remote. A gateway runs `fwd_xdp` on its LAN interface's ingress; a host
//!   runs `fwd_tc_out` on its uplink's egress.
//! - `fwd_tc_in` (TC) judges *inbound* packets: from a remote into the protected network. A
//!   gateway runs it on its LAN interface's egress (after NAT has been undone, so the
//!   destination is the LAN host); a host on its uplink's ingress.
//!
//! `fwd_xdp_parse` and `fwd_tc_parse` are bench baselines: the same parse, then pass.
//!
//! Outbound: exemptions (`EXEMPT4`/`EXEMPT6` on the destination), later fragments (`FRAGS`),
//! then remote address -> class (`DST4_n`/`DST6_n`) -> (class, direction, protocol, port) ->
//! rule (`PORTS_n`); an allowed packet records its flow in `FLOWS` and its remote in
//! `REMOTES`. What no rule allows may still be a reply of an inbound flow (`FLOWS`).
//! Inbound: exemptions on the source, fragments, live flows (replies and ICMP errors about
//! them), then ingress rules on the source's class, local and remote port; "related" rules
//! also need a live flow with that remote.
//!
//! `n` is the active policy slot from `CONFIG`; a reload fills the other slot and flips it.
#![no_std]
#![no_main]

mod parse;

use core::hint::black_box;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use fwd_common::{
    Addr, CLASS_AUDIT, Counter, DENIED_RING_BYTES, DST4_CAPACITY, DST6_CAPACITY, DeniedEvent,
    EXEMPT_CAPACITY, FLOWS_CAPACITY, FRAGS_CAPACITY, FlowKey, FlowValue, FragKey, FragValue,
    FwdConfig, PORTS_CAPACITY, PortKey, PortVerdict, REMOTES_CAPACITY, RULE_COUNTER_SLOTS, Reason,
    SampleBudget, direction, rule_counter_index,
};
use parse::{Frag, Ip, Packet, Parsed, is_link_local, parse_ethernet};

#[map]
static CONFIG: Array<FwdConfig> = Array::with_max_entries(1, 0);

#[map]
static DST4_0: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DST4_CAPACITY, 0);
#[map]
static DST4_1: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DST4_CAPACITY, 0);
#[map]
static DST6_0: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DST6_CAPACITY, 0);
#[map]
static DST6_1: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DST6_CAPACITY, 0);
#[map]
static PORTS_0: LpmTrie<PortKey, PortVerdict> = LpmTrie::with_max_entries(PORTS_CAPACITY, 0);
#[map]
static PORTS_1: LpmTrie<PortKey, PortVerdict> = LpmTrie::with_max_entries(PORTS_CAPACITY, 0);

#[map]
static EXEMPT4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(EXEMPT_CAPACITY, 0);
#[map]
static EXEMPT6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(EXEMPT_CAPACITY, 0);

/// Live flows, from the protected host's point of view.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(FLOWS_CAPACITY, 0);
/// Remotes the protected network has a live allowed flow with -> last packet time.
#[map]
static REMOTES: LruHashMap<Addr, u64> = LruHashMap::with_max_entries(REMOTES_CAPACITY, 0);
/// First fragments that passed, so their datagram's later fragments may follow.
#[map]
static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAGS_CAPACITY, 0);

/// Indexed by `rule_counter_index(rule, inbound)`.
#[map]
static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(RULE_COUNTER_SLOTS, 0);
#[map]
static REASON_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Samples of denied packets for `fwd monitor`, at most `samples_per_second` per CPU.
#[map]
static DENIED: RingBuf = RingBuf::with_byte_size(DENIED_RING_BYTES, 0);
#[map]
static SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for one packet. The BPF stack is 512 bytes for the whole call
/// chain; the parsed packet and the lookup keys live here instead. Programs do not nest on
/// a CPU (XDP and TC ingress run in softirq, TC egress with softirqs off).
struct Scratch {
    ip: Ip,
    flow: FlowKey,
    /// The flow an ICMP error quotes.
    quoted: FlowKey,
    frag: FragKey,
    /// The verdict, written by `judge_*` (returning structs from BPF calls trips the
    /// verifier's spill checks).
    outcome: Outcome,
    /// The error of a failed flow-state update for this packet (0: none), for the log.
    state_error: i32,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const NS_PER_S: u64 = 1_000_000_000;

/// Gateway mode, LAN interface ingress: packets from the protected network.
#[xdp]
pub fn fwd_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let len = (end - start) as u64;
    let ifindex = ctx.ingress_ifindex() as u32;
    let verdict = process(&Packet::new(start, end), false, len, ifindex);
    if verdict.state_error != 0 {
        log_state_error(&ctx, verdict.state_error);
    }
    if verdict.pass {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Through aya-log to the daemon's log. Rare: the flow tables are LRU maps, which make room
/// rather than fail, so this means the kernel is short of memory.
#[inline(never)]
fn log_state_error<C: EbpfContext>(ctx: &C, error: i32) {
    warn!(
        ctx,
        "recording a flow failed (error {}); its replies may be dropped", error
    );
}

/// Host mode, uplink egress: packets the host sends.
#[classifier]
pub fn fwd_tc_out(ctx: TcContext) -> i32 {
    tc(&ctx, false)
}

/// Inbound: host mode on the uplink's ingress, gateway mode on the LAN interface's egress.
#[classifier]
pub fn fwd_tc_in(ctx: TcContext) -> i32 {
    tc(&ctx, true)
}

/// Bytes the parser may need in the linear part of an skb: Ethernet, two VLAN tags, an IPv6
/// header with extension headers, an ICMP error's quote.
const TC_PULL_BYTES: u32 = 256;

/// The headers of an skb, pulled into its linear part if they are not there yet, and the
/// skb's length.
#[inline(always)]
fn tc_packet(ctx: &TcContext) -> (Packet, u32) {
    let len = ctx.len();
    // Headers in paged data are pulled into the linear part, only when they are not there:
    // pulling a cloned skb copies it.
    let want = if len < TC_PULL_BYTES {
        len
    } else {
        TC_PULL_BYTES
    };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    (Packet::new(ctx.data(), ctx.data_end()), len)
}

#[inline(always)]
fn tc(ctx: &TcContext, inbound: bool) -> i32 {
    let (packet, len) = tc_packet(ctx);
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let verdict = process(&packet, inbound, u64::from(len), ifindex);
    if verdict.state_error != 0 {
        log_state_error(ctx, verdict.state_error);
    }
    if verdict.pass {
        // Pass on to the next program or the stack (TCX_NEXT / TC_ACT_UNSPEC).
        TC_ACT_UNSPEC
    } else {
        TC_ACT_SHOT as i32
    }
}

/// Bench only: the parse of `fwd_xdp` into the same scratch memory, then `XDP_PASS`; no
/// policy lookup, flow, counter or clock. `cargo xtask bench` subtracts its cost from
/// `fwd_xdp`'s to get the cost of judging and counting. The daemon never loads it.
#[xdp]
pub fn fwd_xdp_parse(ctx: XdpContext) -> u32 {
    parse_only(&Packet::new(ctx.data(), ctx.data_end()));
    xdp_action::XDP_PASS
}

/// Bench only: the pull and parse of `fwd_tc_out`, always `TC_ACT_UNSPEC` (see
/// `fwd_xdp_parse`).
#[classifier]
pub fn fwd_tc_parse(ctx: TcContext) -> i32 {
    parse_only(&tc_packet(&ctx).0);
    TC_ACT_UNSPEC
}

/// Parses into this CPU's scratch entry, as `process` does (a stack copy would have to be
/// zeroed before the call, and `parse_ethernet` zeroes it again), and keeps the result:
/// `black_box` stops the compiler from dropping a parse whose result nothing reads.
#[inline(always)]
fn parse_only(packet: &Packet) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry; nothing else uses it during this run.
    let ip = unsafe { &mut (*scratch).ip };
    let _ = black_box(parse_ethernet(packet, ip));
}

/// What the rules say about one packet.
#[derive(Clone, Copy)]
///
/// Plain integers with a sentinel rather than `Option`s: copying an `Option` copies its
/// undefined payload when it is `None`, and the verifier rejects reading that register.
struct Outcome {
    reason: Reason,
    /// The rule it counts on, or `Outcome::NONE`.
    rule: u32,
    /// The remote's class if the address matched (with `CLASS_AUDIT` if set), or `NONE`.
    class: u32,
}

impl Outcome {
    const NONE: u32 = u32::MAX;

    #[inline(always)]
    fn new(reason: Reason, rule: Option<u32>, class: Option<u32>) -> Self {
        Self {
            reason,
            rule: rule.unwrap_or(Self::NONE),
            class: class.unwrap_or(Self::NONE),
        }
    }

    #[inline(always)]
    fn rule(&self) -> Option<u32> {
        (self.rule != Self::NONE).then_some(self.rule)
    }

    #[inline(always)]
    fn class(&self) -> Option<u32> {
        (self.class != Self::NONE).then_some(self.class)
    }
}

/// What `process` decided.
struct Verdict {
    pass: bool,
    /// See `Scratch::state_error`.
    state_error: i32,
}

/// Judges, counts and samples one packet.
#[inline(always)]
fn process(packet: &Packet, inbound: bool, len: u64, ifindex: u32) -> Verdict {
    let pass = |pass| Verdict {
        pass,
        state_error: 0,
    };
    // One read of the config per packet: the slot and the mode stay consistent within it.
    let config = CONFIG.get(0).copied().unwrap_or_default();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a one-entry per-CPU array); never pass unjudged.
        bump(&REASON_COUNTERS, Reason::Malformed as u32, len);
        return pass(false);
    };
    // SAFETY: this CPU's scratch entry; nothing else uses it during this run.
    let scratch = unsafe { &mut *scratch };
    scratch.state_error = 0;
    let (outcome, ip) = match parse_ethernet(packet, &mut scratch.ip) {
        Err(reason) => (Outcome::new(reason, None, None), false),
        Ok(Parsed::Exempt) => (Outcome::new(Reason::Exempt, None, None), false),
        Ok(Parsed::Ip) => {
            if inbound {
                judge_inbound(scratch, &config, now);
            } else {
                judge_outbound(scratch, &config, now);
            }
            (scratch.outcome, true)
        }
    };
    let ip = if ip { Some(&scratch.ip) } else { None };
    bump(&REASON_COUNTERS, outcome.reason as u32, len);
    if let Some(rule) = outcome.rule() {
        bump(&RULE_COUNTERS, rule_counter_index(rule, inbound), len);
    }
    let state_error = scratch.state_error;
    if !outcome.reason.is_drop() {
        return Verdict {
            pass: true,
            state_error,
        };
    }
    sample(
        &outcome,
        ip,
        u64::from(ifindex) | (u64::from(inbound) << 32),
        config.samples_per_second,
        now,
    );
    let audited_class = outcome.class().is_some_and(|c| c & CLASS_AUDIT != 0);
    if config.mode == FwdConfig::MODE_AUDIT || audited_class {
        bump(&REASON_COUNTERS, Reason::AuditWouldDrop as u32, len);
        return pass(true);
    }
    pass(false)
}

/// Judges an outbound packet into `s.outcome`.
#[inline(never)]
fn judge_outbound(s: &mut Scratch, config: &FwdConfig, now: u64) {
    let outcome = outbound(s, config, now);
    s.outcome = outcome;
}

#[inline(always)]
fn outbound(s: &mut Scratch, config: &FwdConfig, now: u64) -> Outcome {
    let ip = &s.ip;
    if is_link_local(ip.family, &ip.dst) || exempt(ip.family, &ip.dst) {
        return Outcome::new(Reason::Exempt, None, None);
    }
    if ip.frag == Frag::Later {
        return later_fragment(ip, &mut s.frag, false, config, now);
    }
    let slot = config.active_slot;
    s.flow = flow_key(ip, false);
    let flow = &s.flow;
    let class = lookup_class(slot, ip.family, &ip.dst);
    let verdict = class.and_then(|c| {
        lookup_port(
            slot,
            PortKey::new(
                c & !CLASS_AUDIT,
                direction::EGRESS,
                ip.protocol,
                ip.dst_port,
            ),
        )
    });
    let outcome = match verdict {
        Some(v) => {
            let value = FlowValue {
                last_seen_ns: now,
                rule: v.rule,
                flags: 0,
            };
            if let Err(e) = record_flow(flow, &value) {
                s.state_error = e;
            }
            if let Err(e) = record_remote(&ip.dst, now) {
                s.state_error = e;
            }
            Outcome::new(Reason::Allowed, Some(v.rule), class)
        }
        None => {
            // A reply within a flow an ingress rule allowed, or an ICMP error about one.
            if let Some(rule) = live_flow(flow, Began::Inbound, config, now) {
                return Outcome::new(Reason::Established, Some(rule), class);
            }
            if let Some(rule) = quoted_flow(ip, &mut s.quoted, true, config, now) {
                return Outcome::new(Reason::Established, Some(rule), class);
            }
            let reason = if class.is_some() {
                Reason::NoPortMatch
            } else {
                Reason::NoAddressMatch
            };
            return Outcome::new(reason, None, class);
        }
    };
    if ip.frag == Frag::First
        && let Some(rule) = outcome.rule()
    {
        remember_first_fragment(ip, &mut s.frag, rule, false, now);
    }
    outcome
}

/// Judges an inbound packet into `s.outcome`.
#[inline(never)]
fn judge_inbound(s: &mut Scratch, config: &FwdConfig, now: u64) {
    let outcome = inbound(s, config, now);
    s.outcome = outcome;
}

#[inline(always)]
fn inbound(s: &mut Scratch, config: &FwdConfig, now: u64) -> Outcome {
    let ip = &s.ip;
    if is_link_local(ip.family, &ip.src)
        || is_link_local(ip.family, &ip.dst)
        || exempt(ip.family, &ip.src)
    {
        return Outcome::new(Reason::Exempt, None, None);
    }
    if ip.frag == Frag::Later {
        return later_fragment(ip, &mut s.frag, true, config, now);
    }
    s.flow = flow_key(ip, true);
    let flow = &s.flow;
    let slot = config.active_slot;
    let class = lookup_class(slot, ip.family, &ip.src);
    let outcome = if let Some(rule) = live_flow(flow, Began::Outbound, config, now) {
        Outcome::new(Reason::Established, Some(rule), class)
    } else if let Some(rule) = quoted_flow(ip, &mut s.quoted, false, config, now) {
        Outcome::new(Reason::Established, Some(rule), class)
    } else {
        let Some(c) = class else {
            return Outcome::new(Reason::NoAddressMatch, None, None);
        };
        let c = c & !CLASS_AUDIT;
        let local = lookup_port(
            slot,
            PortKey::new(c, direction::INGRESS_LOCAL_PORT, ip.protocol, ip.dst_port),
        );
        let remote = lookup_port(
            slot,
            PortKey::new(c, direction::INGRESS_REMOTE_PORT, ip.protocol, ip.src_port),
        );
        // A rule that needs no live flow beats a `related` one, a rule naming addresses beats
        // a `remote = "any"` rule, then local port beats remote (as `fwd explain` ranks).
        let rank = |v: &PortVerdict| {
            (v.flags & PortVerdict::FLAG_RELATED != 0) as u32 * 2
                + (v.flags & PortVerdict::FLAG_ANY_REMOTE != 0) as u32
        };
        let chosen = match (local, remote) {
            (Some(l), Some(r)) if rank(&r) < rank(&l) => Some(r),
            (Some(l), _) => Some(l),
            (None, r) => r,
        };
        let Some(v) = chosen else {
            return Outcome::new(Reason::NoPortMatch, None, class);
        };
        if v.flags & PortVerdict::FLAG_RELATED != 0 && !live_remote(&ip.src, config, now) {
            return Outcome::new(Reason::NotRelated, None, class);
        }
        // The flow is open: the host's replies pass as established.
        let value = FlowValue {
            last_seen_ns: now,
            rule: v.rule,
            flags: FlowValue::FLAG_INBOUND,
        };
        if let Err(e) = record_flow(flow, &value) {
            s.state_error = e;
        }
        Outcome::new(Reason::Allowed, Some(v.rule), class)
    };
    if ip.frag == Frag::First
        && let Some(rule) = outcome.rule()
    {
        remember_first_fragment(ip, &mut s.frag, rule, true, now);
    }
    outcome
}

/// Records an allowed packet's flow. An entry that already holds the same rule and flags
/// only gets its time refreshed in place: updating an LRU map takes a node from its free
/// list and returns the old one, which cost more per packet than the policy lookups
/// (`cargo xtask bench`, datapath section). A lookup marks the entry as recently used.
#[inline(always)]
fn record_flow(key: &FlowKey, value: &FlowValue) -> Result<(), i32> {
    if let Some(old) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a map value pointer, valid during the program run; racing writers only
        // store a newer time.
        unsafe {
            if (*old).rule == value.rule && (*old).flags == value.flags {
                (*old).last_seen_ns = value.last_seen_ns;
                return Ok(());
            }
        }
    }
    FLOWS.insert(key, value, 0)
}

/// Records that the protected network sent an allowed packet to `remote` now (for
/// `related` ingress rules), refreshing an existing entry in place as `record_flow` does.
#[inline(always)]
fn record_remote(remote: &Addr, now: u64) -> Result<(), i32> {
    if let Some(seen) = REMOTES.get_ptr_mut(remote) {
        // SAFETY: as in `record_flow`.
        unsafe { *seen = now };
        return Ok(());
    }
    REMOTES.insert(remote, &now, 0)
}

/// The flow a packet belongs to, seen from the protected host: an inbound packet's local
/// end is its destination. An ICMP echo's identifier stands in for the local port.
#[inline(always)]
fn flow_key(ip: &Ip, inbound: bool) -> FlowKey {
    let (local, remote, local_port, remote_port) = if inbound {
        (ip.dst, ip.src, ip.dst_port, ip.src_port)
    } else {
        (ip.src, ip.dst, ip.src_port, ip.dst_port)
    };
    let local_port = if ip.echo_id != 0 {
        ip.echo_id
    } else {
        local_port
    };
    FlowKey::new(
        ip.family,
        local,
        remote,
        local_port,
        remote_port,
        ip.protocol,
    )
}

/// Which flows a lookup accepts: a packet in the direction a flow began in is judged by
/// the rules again (a reload that drops the rule stops it); only replies ride the flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Began {
    Outbound,
    Inbound,
    Either,
}

/// The rule of a live flow with this key that began as `began` says, refreshing it.
#[inline(always)]
fn live_flow(key: &FlowKey, began: Began, config: &FwdConfig, now: u64) -> Option<u32> {
    let value = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a map value pointer, valid during the program run; racing writers only
    // store a newer time.
    unsafe {
        let inbound = (*value).flags & FlowValue::FLAG_INBOUND != 0;
        if (began == Began::Inbound && !inbound) || (began == Began::Outbound && inbound) {
            return None;
        }
        let timeout = u64::from(config.timeout_s(key.protocol)) * NS_PER_S;
        if now.saturating_sub((*value).last_seen_ns) > timeout {
            return None;
        }
        (*value).last_seen_ns = now;
        Some((*value).rule)
    }
}

/// For an ICMP error: the rule of the live flow the quoted packet belongs to. The quote is
/// a packet going the other way: an outbound error quotes an inbound packet.
#[inline(always)]
fn quoted_flow(
    ip: &Ip,
    key: &mut FlowKey,
    outbound: bool,
    config: &FwdConfig,
    now: u64,
) -> Option<u32> {
    let q = ip.quoted.as_ref()?;
    // An error goes back to the quoted packet's sender; anything else is not an error
    // about that flow (and must not ride it to another destination).
    if ip.dst != q.src {
        return None;
    }
    // An outbound error quotes a packet that came in (remote -> local), an inbound error
    // one that went out.
    *key = if outbound {
        FlowKey::new(ip.family, q.dst, q.src, q.dst_port, q.src_port, q.protocol)
    } else {
        FlowKey::new(ip.family, q.src, q.dst, q.src_port, q.dst_port, q.protocol)
    };
    live_flow(key, Began::Either, config, now)
}

/// Whether the protected network has a live allowed flow with `remote`.
#[inline(always)]
fn live_remote(remote: &Addr, config: &FwdConfig, now: u64) -> bool {
    // SAFETY: a plain value read.
    match unsafe { REMOTES.get(remote) } {
        Some(seen) => now.saturating_sub(*seen) <= u64::from(config.udp_timeout_s) * NS_PER_S,
        None => false,
    }
}

#[inline(always)]
fn frag_key(ip: &Ip) -> FragKey {
    FragKey {
        src: ip.src,
        dst: ip.dst,
        id: ip.frag_id,
        protocol: ip.frag_protocol,
        family: ip.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn remember_first_fragment(ip: &Ip, key: &mut FragKey, rule: u32, inbound: bool, now: u64) {
    let value = FragValue {
        last_seen_ns: now,
        rule,
        inbound: inbound as u32,
    };
    *key = frag_key(ip);
    let _ = FRAGS.insert(key, &value, 0);
}

/// A later fragment passes on its first fragment's rule, or is dropped.
#[inline(always)]
fn later_fragment(
    ip: &Ip,
    key: &mut FragKey,
    inbound: bool,
    config: &FwdConfig,
    now: u64,
) -> Outcome {
    *key = frag_key(ip);
    // SAFETY: a plain value read.
    match unsafe { FRAGS.get(key) } {
        Some(v)
            if now.saturating_sub(v.last_seen_ns)
                <= u64::from(config.other_timeout_s) * NS_PER_S =>
        {
            Outcome::new(Reason::Allowed, Some(v.rule), None)
        }
        _ => {
            // The remote's class, so a vendor in audit mode passes it like its first fragment.
            let remote = if inbound { &ip.src } else { &ip.dst };
            let class = lookup_class(config.active_slot, ip.family, remote);
            Outcome::new(Reason::Fragment, None, class)
        }
    }
}

#[inline(always)]
fn exempt(family: u8, addr: &Addr) -> bool {
    if family == 4 {
        EXEMPT4.get(Key::new(32, Ip::v4(addr))).is_some()
    } else {
        EXEMPT6.get(Key::new(128, *addr)).is_some()
    }
}

#[inline(always)]
fn lookup_class(slot: u32, family: u8, addr: &Addr) -> Option<u32> {
    let class = if family == 4 {
        let key = Key::new(32, Ip::v4(addr));
        if slot == 0 {
            DST4_0.get(key)
        } else {
            DST4_1.get(key)
        }
    } else {
        let key = Key::new(128, *addr);
        if slot == 0 {
            DST6_0.get(key)
        } else {
            DST6_1.get(key)
        }
    };
    class.copied()
}

#[inline(always)]
fn lookup_port(slot: u32, port_key: PortKey) -> Option<PortVerdict> {
    let key = Key::new(PortKey::FULL_BITS, port_key);
    let verdict = if slot == 0 {
        PORTS_0.get(key)
    } else {
        PORTS_1.get(key)
    };
    verdict.copied()
}

#[inline(always)]
fn bump(counters: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, so no other program instance writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

/// Sends a sample of a denied packet, within the per-CPU budget. `where_` holds the
/// ifindex in its low 32 bits and 1 for inbound above (BPF calls take at most 5 arguments).
///
/// Not inlined, like the other large steps: each gets its own stack frame, and together
/// they would not fit in one 512-byte frame.
#[inline(never)]
fn sample(outcome: &Outcome, ip: Option<&Ip>, where_: u64, per_second: u32, now: u64) {
    let Some(budget) = SAMPLE_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot.
    unsafe {
        if now.saturating_sub((*budget).window_start_ns) >= NS_PER_S {
            (*budget).window_start_ns = now;
            (*budget).sent = 0;
        }
        if (*budget).sent >= u64::from(per_second) {
            return;
        }
        (*budget).sent += 1;
    }
    let Some(mut entry) = DENIED.reserve::<DeniedEvent>(0) else {
        return;
    };
    let mut event = DeniedEvent {
        ts_ns: now,
        ifindex: where_ as u32,
        class: outcome
            .class()
            .map_or(DeniedEvent::NO_CLASS, |c| c & !CLASS_AUDIT),
        reason: outcome.reason as u8,
        inbound: (where_ >> 32) as u8,
        ..DeniedEvent::default()
    };
    if let Some(ip) = ip {
        event.src = ip.src;
        event.dst = ip.dst;
        event.src_port = ip.src_port;
        event.dst_port = ip.dst_port;
        event.protocol = ip.protocol;
        event.family = ip.family;
        event.icmp_type = ip.icmp_type;
    }
    entry.write(event);
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
