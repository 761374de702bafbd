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
//! `judge` has the order of the checks, `lookup` the policy tables and their precedence,
//! `flow` the flow state, `sample` the counters and samples of denied packets; `maps` lists
//! every map. `n` is the active policy slot from `CONFIG`: a reload fills the other slot and
//! flips it.
#![no_std]
#![no_main]

mod flow;
mod judge;
mod lookup;
mod maps;
mod sample;

use core::hint::black_box;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::warn;
use fwd_common::parse::{self, Packet, Parsed, parse_ethernet};
use fwd_common::{DeniedEvent, FwdConfig, Reason};
use judge::{Outcome, judge_inbound, judge_outbound};
use maps::{CONFIG, SCRATCH};
use sample::{bump_reason, bump_rule, sample};

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

/// The config, read once per packet. Its first word (slot, mode, host bits, epoch) is one
/// 8-byte load: the daemon stores it at once, so the four always belong together.
#[inline(always)]
fn read_config() -> FwdConfig {
    match CONFIG.get_ptr(0) {
        // SAFETY: a map value pointer, valid and 8-aligned (FwdConfig is align(8)) during
        // the program run.
        Some(p) => unsafe { (*p).with_head(core::ptr::read_volatile(p.cast::<u64>())) },
        None => FwdConfig::default(),
    }
}

/// What `process` decided.
struct Decision {
    pass: bool,
    /// See `Scratch::state_error`.
    state_error: i32,
}

/// Judges, counts and samples one packet.
#[inline(always)]
fn process(packet: &Packet, inbound: bool, len: u64, ifindex: u32) -> Decision {
    let pass = |pass| Decision {
        pass,
        state_error: 0,
    };
    let config = read_config();
    // The coarse clock (a jiffy) is enough: the timeouts are seconds.
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a one-entry per-CPU array); never pass unjudged.
        bump_reason(Reason::Malformed, inbound, len);
        return pass(false);
    };
    // SAFETY: this CPU's scratch entry; nothing else uses it during this run.
    let scratch = unsafe { &mut *scratch };
    scratch.state_error = 0;
    let (outcome, ip) = match parse_ethernet(packet, &mut scratch.ip) {
        Err(reason) => (Outcome::of(reason), false),
        Ok(Parsed::Exempt) => (Outcome::of(Reason::Exempt), false),
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
    bump_reason(outcome.reason, inbound, len);
    if let Some(rule) = outcome.rule() {
        bump_rule(rule, inbound, len);
    }
    let state_error = scratch.state_error;
    if !outcome.reason.is_drop() {
        return Decision {
            pass: true,
            state_error,
        };
    }
    let audited = config.mode == FwdConfig::MODE_AUDIT || outcome.audit != 0;
    sample(
        &outcome,
        ip,
        u64::from(ifindex)
            | (inbound as u64 * DeniedEvent::WHERE_INBOUND)
            | (audited as u64 * DeniedEvent::WHERE_AUDITED),
        config.samples_per_second,
        now,
    );
    if audited {
        bump_reason(Reason::AuditWouldDrop, inbound, len);
        return pass(true);
    }
    pass(false)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
