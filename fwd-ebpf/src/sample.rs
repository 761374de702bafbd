//! Counting and sampling: per-CPU counters by rule and by reason, and rate-limited samples
//! of denied packets for `fwd monitor`.

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use fwd_common::{
    Counter, DeniedEvent, Reason, reason_counter_index, rule_counter_index, rule_counter_slot,
};

use crate::{
    judge::Outcome,
    maps::{DENIED, REASON_COUNTERS, RULE_COUNTERS, SAMPLE_BUDGET},
    parse::Ip,
};

const NS_PER_S: u64 = 1_000_000_000;

/// Counts a packet of `len` bytes on `reason`, its direction's.
#[inline(always)]
pub fn bump_reason(reason: Reason, inbound: bool, len: u64) {
    add(
        REASON_COUNTERS.get_ptr_mut(reason_counter_index(reason, inbound)),
        len,
    );
}

/// Counts a packet of `len` bytes on `rule`, its direction's, in this CPU's block.
#[inline(always)]
pub fn bump_rule(rule: u32, inbound: bool, len: u64) {
    // SAFETY: a helper without arguments (inlined by the kernel on x86-64).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    add(
        RULE_COUNTERS.get_ptr_mut(rule_counter_slot(cpu, rule_counter_index(rule, inbound))),
        len,
    );
}

#[inline(always)]
fn add(counter: Option<*mut Counter>, len: u64) {
    if let Some(counter) = counter {
        // SAFETY: this CPU's entry (a per-CPU map, or this CPU's block of RULE_COUNTERS),
        // and programs do not nest on a CPU, so no other program instance writes it now.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

/// Sends a sample of a denied packet, within the per-CPU budget. `where_` holds the
/// ifindex in its low 32 bits and `DeniedEvent::WHERE_*` bits above (BPF calls take at
/// most 5 arguments).
///
/// Not inlined, like the other large steps: each gets its own stack frame, and together
/// they would not fit in one 512-byte frame.
#[inline(never)]
pub fn sample(outcome: &Outcome, ip: Option<&Ip>, where_: u64, per_second: u32, now: u64) {
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
        class: outcome.class().unwrap_or(DeniedEvent::NO_CLASS),
        reason: outcome.reason as u8,
        inbound: (where_ & DeniedEvent::WHERE_INBOUND != 0) as u8,
        audited: (where_ & DeniedEvent::WHERE_AUDITED != 0) as u8,
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
