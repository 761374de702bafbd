//! fwd's kernel programs: parse -> classify -> verdict -> count.
//!
//! Lookups (one packet = at most three map lookups plus counters):
//! 1. exemptions (`EXEMPT4`/`EXEMPT6`): management traffic passes before any rule;
//! 2. remote address -> class (`DST4_n`/`DST6_n`, longest prefix; the compiler flattened
//!    overlaps so that one match carries every rule for that address);
//! 3. (class, direction, protocol, port) -> rule (`PORTS_n`, longest prefix over the port).
//!
//! `n` is the active policy slot from `CONFIG`; a reload fills the other slot and flips it.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use fwd_common::{
    Counter, DST4_CAPACITY, DST6_CAPACITY, EXEMPT_CAPACITY, FwdConfig, MAX_RULES, PORTS_CAPACITY,
    PortKey, PortVerdict, Reason, direction,
};
use parse::{Packet, Parsed, parse_ethernet};

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

#[map]
static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULES, 0);
#[map]
static REASON_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Gateway mode: attached to the LAN-facing interface, so every packet is egress.
#[xdp]
pub fn fwd_xdp(ctx: XdpContext) -> u32 {
    let packet = Packet::new(ctx.data(), ctx.data_end());
    let len = packet.len() as u64;
    // One read of the config per packet: the slot and the mode stay consistent within it.
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let (reason, rule) = judge(&packet, direction::EGRESS, config.active_slot);
    count(reason, rule, len);
    let audit = config.mode == FwdConfig::MODE_AUDIT;
    if !reason.is_drop() {
        xdp_action::XDP_PASS
    } else if audit {
        count(Reason::AuditWouldDrop, None, len);
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Decides what a packet is; `Some(rule)` when a rule allowed it.
#[inline(always)]
fn judge(packet: &Packet, dir: u8, slot: u32) -> (Reason, Option<u32>) {
    let parsed = match parse_ethernet(packet) {
        Ok(parsed) => parsed,
        Err(reason) => return (reason, None),
    };
    let (class, l4) = match parsed {
        Parsed::Exempt => return (Reason::Exempt, None),
        Parsed::V4 { dst, l4 } => {
            if EXEMPT4.get(Key::new(32, dst)).is_some() {
                return (Reason::Exempt, None);
            }
            (lookup_dst4(slot, dst), l4)
        }
        Parsed::V6 { dst, l4 } => {
            if EXEMPT6.get(Key::new(128, dst)).is_some() {
                return (Reason::Exempt, None);
            }
            (lookup_dst6(slot, dst), l4)
        }
    };
    let Some(class) = class else {
        return (Reason::NoAddressMatch, None);
    };
    match lookup_port(slot, PortKey::new(class, dir, l4.protocol, l4.port)) {
        Some(verdict) => (Reason::Allowed, Some(verdict.rule)),
        None => (Reason::NoPortMatch, None),
    }
}

#[inline(always)]
fn lookup_dst4(slot: u32, addr: [u8; 4]) -> Option<u32> {
    let key = Key::new(32, addr);
    let class = if slot == 0 {
        DST4_0.get(key)
    } else {
        DST4_1.get(key)
    };
    class.copied()
}

#[inline(always)]
fn lookup_dst6(slot: u32, addr: [u8; 16]) -> Option<u32> {
    let key = Key::new(128, addr);
    let class = if slot == 0 {
        DST6_0.get(key)
    } else {
        DST6_1.get(key)
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
fn count(reason: Reason, rule: Option<u32>, len: u64) {
    bump(&REASON_COUNTERS, reason as u32, len);
    if let Some(rule) = rule {
        bump(&RULE_COUNTERS, rule, len);
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
