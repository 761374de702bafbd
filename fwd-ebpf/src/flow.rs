//! Flow state: live flows (replies ride them, and an allowed flow's next packets skip the
//! policy lookups while the policy epoch is the same), remotes with a live flow (for
//! `related` ingress rules), and first fragments.

use fwd_common::{Addr, FlowKey, FlowValue, FragKey, FragValue, FwdConfig, is_live};

use crate::{
    maps::{FLOWS, FRAGS, REMOTES},
    parse::Ip,
};

/// A live entry's time is rewritten only when it is at least this old: the timeouts are
/// seconds, and an entry that is not written stays clean in other CPUs' caches.
const REFRESH_NS: u64 = 1 << 28;

/// Records an allowed packet's flow. A known entry is rewritten in place: updating an LRU map takes a node from its free list and
/// returns the old one, which costs more than the policy lookups (`cargo xtask bench`).
#[inline(always)]
pub fn record_flow(
    entry: Option<*mut FlowValue>,
    key: &FlowKey,
    value: &FlowValue,
) -> Result<(), i32> {
    if let Some(old) = entry {
        // SAFETY: a map value pointer, valid during the program run. A racing reader sees
        // the old or the new rule, each of which allowed the packet.
        unsafe { *old = *value };
        return Ok(());
    }
    FLOWS.insert(key, value, 0)
}

/// Refreshes a flow's time if it is due.
#[inline(always)]
pub fn touch_flow(entry: *mut FlowValue, now: u64) -> bool {
    // SAFETY: a map value pointer, valid during the program run; racing writers only store
    // a newer time.
    unsafe {
        if now.saturating_sub((*entry).last_seen_ns) < REFRESH_NS {
            return false;
        }
        (*entry).last_seen_ns = now;
    }
    true
}

/// Records that the protected network sent an allowed packet to `remote` now (for
/// `related` ingress rules), refreshing an existing entry in place as `record_flow` does.
#[inline(always)]
pub fn record_remote(remote: &Addr, now: u64) -> Result<(), i32> {
    if let Some(seen) = REMOTES.get_ptr_mut(remote) {
        // SAFETY: as in `touch_flow`.
        unsafe { *seen = now };
        return Ok(());
    }
    REMOTES.insert(remote, &now, 0)
}

/// Whether the protected network has a live allowed flow with `remote`.
#[inline(always)]
pub fn live_remote(remote: &Addr, config: &FwdConfig, now: u64) -> bool {
    // SAFETY: a plain value read.
    match unsafe { REMOTES.get(remote) } {
        Some(seen) => is_live(now, *seen, config.udp_timeout_s),
        None => false,
    }
}

/// The flow a packet belongs to, seen from the protected host: an inbound packet's local
/// end is its destination. An ICMP echo's identifier stands in for the local port.
#[inline(always)]
pub fn flow_key(ip: &Ip, inbound: bool) -> FlowKey {
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

/// The live entry of a flow (its pointer), without refreshing it.
#[inline(always)]
pub fn live_entry(key: &FlowKey, config: &FwdConfig, now: u64) -> Option<*mut FlowValue> {
    let entry = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a map value pointer, valid during the program run.
    let last_seen = unsafe { (*entry).last_seen_ns };
    is_live(now, last_seen, config.timeout_s(key.protocol)).then_some(entry)
}

/// For an ICMP error: the rule of the live flow the quoted packet belongs to. The quote is
/// a packet going the other way: an outbound error quotes an inbound packet.
#[inline(always)]
pub fn quoted_flow(
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
    *key = if outbound {
        FlowKey::new(ip.family, q.dst, q.src, q.dst_port, q.src_port, q.protocol)
    } else {
        FlowKey::new(ip.family, q.src, q.dst, q.src_port, q.dst_port, q.protocol)
    };
    let entry = live_entry(key, config, now)?;
    touch_flow(entry, now);
    // SAFETY: as in `live_entry`.
    Some(unsafe { (*entry).rule })
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
pub fn remember_first_fragment(ip: &Ip, key: &mut FragKey, rule: u32, inbound: bool, now: u64) {
    let value = FragValue {
        last_seen_ns: now,
        rule,
        inbound: inbound as u32,
    };
    *key = frag_key(ip);
    let _ = FRAGS.insert(key, &value, 0);
}

/// The rule a later fragment passes on (its first fragment's), if that is still live.
#[inline(always)]
pub fn first_fragment_rule(
    ip: &Ip,
    key: &mut FragKey,
    config: &FwdConfig,
    now: u64,
) -> Option<u32> {
    *key = frag_key(ip);
    // SAFETY: a plain value read.
    let v = unsafe { FRAGS.get(key) }?;
    is_live(now, v.last_seen_ns, config.other_timeout_s).then_some(v.rule)
}
