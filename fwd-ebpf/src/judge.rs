//! Judging one parsed packet: exemptions, fragments, the flow fast path, then the policy.
//!
//! Outbound (from the protected network): a packet of a flow an egress rule allowed under
//! the current policy epoch passes on that rule without a policy lookup. Otherwise the
//! remote (destination) gives a class and the class's port lists a rule; an allowed packet
//! records its flow (with the epoch) and, where a `related` ingress rule of the class or a
//! learned host's expiry will ask, its remote. What no rule allows may still be a reply
//! of an inbound flow, or an ICMP error about a live flow.
//! Inbound (from a remote): replies of outbound flows and ICMP errors about live flows pass
//! as established; a packet of a flow an ingress rule allowed under the current epoch passes
//! on it (a `related` rule's also needs its remote live); otherwise the remote (source) gives
//! a class, and the local-port and remote-port lists a rule, ranked as `fwd explain` ranks.

use fwd_common::{
    FlowValue, FwdConfig, PortVerdict, Reason, direction,
    tables::{ClassRecord, class},
};

use crate::{
    flow::{
        first_fragment_rule, flow_key, live_entry, live_remote, quoted_flow, record_flow,
        record_remote, remember_first_fragment, touch_flow,
    },
    lookup::{class_of, port_verdict, record},
    maps::{Scratch, Slot, Slot0, Slot1},
    parse::{Frag, is_link_local},
};

/// What the rules say about one packet.
///
/// Plain integers with a sentinel rather than `Option`s: copying an `Option` copies its
/// undefined payload when it is `None`, and the verifier rejects reading that register.
#[derive(Clone, Copy)]
pub struct Outcome {
    pub reason: Reason,
    /// The rule it counts on, or `Outcome::NONE`.
    rule: u32,
    /// The remote's class record if the address matched, or `NONE`.
    class: u32,
    /// The class holds a rule of a vendor in audit mode (1) or not (0).
    pub audit: u32,
}

impl Outcome {
    const NONE: u32 = u32::MAX;

    #[inline(always)]
    fn new(reason: Reason, rule: Option<u32>, class: Option<&Class>) -> Self {
        Self {
            reason,
            rule: rule.unwrap_or(Self::NONE),
            class: class.map_or(Self::NONE, |c| c.index),
            audit: class.map_or(0, |c| c.record.flags & ClassRecord::FLAG_AUDIT),
        }
    }

    /// A verdict with no rule or class (parse errors, exemptions).
    #[inline(always)]
    pub fn of(reason: Reason) -> Self {
        Self::new(reason, None, None)
    }

    #[inline(always)]
    pub fn rule(&self) -> Option<u32> {
        (self.rule != Self::NONE).then_some(self.rule)
    }

    #[inline(always)]
    pub fn class(&self) -> Option<u32> {
        (self.class != Self::NONE).then_some(self.class)
    }
}

/// A remote's class: its record and index.
struct Class {
    index: u32,
    record: &'static ClassRecord,
    /// Record the remote of an allowed outbound flow (`FlowValue::FLAG_REMOTE`).
    track_remote: bool,
}

/// What the address tables say of a remote: `None` if it is exempt, else its class, if a
/// rule lists it.
#[inline(always)]
fn remote<S: Slot>(
    config: &FwdConfig,
    family: u8,
    addr: &fwd_common::Addr,
) -> Option<Option<Class>> {
    let hosts = config.hosts & FwdConfig::hosts_bit(config.active_slot, family) != 0;
    let (index, learned) = class_of::<S>(family, addr, hosts);
    if index == class::EXEMPT {
        return None;
    }
    Some(record::<S>(index).map(|record| Class {
        index,
        record,
        track_remote: learned || record.flags & ClassRecord::FLAG_RELATED_INGRESS != 0,
    }))
}

/// Judges an outbound packet into `s.outcome`.
#[inline(never)]
pub fn judge_outbound(s: &mut Scratch, config: &FwdConfig, now: u64) {
    let outcome = if config.active_slot == 0 {
        outbound::<Slot0>(s, config, now)
    } else {
        outbound::<Slot1>(s, config, now)
    };
    s.outcome = outcome;
}

#[inline(always)]
fn outbound<S: Slot>(s: &mut Scratch, config: &FwdConfig, now: u64) -> Outcome {
    let ip = &s.ip;
    if is_link_local(ip.family, &ip.dst) {
        return Outcome::of(Reason::Exempt);
    }
    if ip.frag == Frag::Later {
        return later_fragment::<S>(s, config, now, false);
    }
    s.flow = flow_key(ip, false);
    let flow = &s.flow;
    let entry = live_entry(flow, config, now);
    // The fast path: a flow an egress rule allowed under this epoch.
    if let Some(e) = entry {
        // SAFETY: a map value pointer, valid during the program run.
        let value = unsafe { *e };
        if !value.inbound() && value.epoch() == config.epoch {
            if touch_flow(e, now)
                && value.flags & FlowValue::FLAG_REMOTE != 0
                && let Err(err) = record_remote(&ip.dst, now)
            {
                s.state_error = err;
            }
            let outcome = Outcome::new(Reason::Allowed, Some(value.rule), None);
            if ip.frag == Frag::First {
                remember_first_fragment(ip, &mut s.frag, value.rule, false, now);
            }
            return outcome;
        }
    }
    let Some(class) = remote::<S>(config, ip.family, &ip.dst) else {
        return Outcome::of(Reason::Exempt);
    };
    let verdict = class
        .as_ref()
        .and_then(|c| port_verdict::<S>(c.record, direction::EGRESS, ip.protocol, ip.dst_port));
    let Some(v) = verdict else {
        // A reply within a flow an ingress rule allowed, or an ICMP error about one.
        if let Some(e) = entry {
            // SAFETY: as above.
            let value = unsafe { *e };
            if value.inbound() {
                touch_flow(e, now);
                return Outcome::new(Reason::Established, Some(value.rule), class.as_ref());
            }
        }
        if let Some(rule) = quoted_flow(ip, &mut s.quoted, true, config, now) {
            return Outcome::new(Reason::Established, Some(rule), class.as_ref());
        }
        let reason = if class.is_some() {
            Reason::NoPortMatch
        } else {
            Reason::NoAddressMatch
        };
        return Outcome::new(reason, None, class.as_ref());
    };
    // `class` is `Some`: a verdict came from its record.
    let track_remote = class.as_ref().is_some_and(|c| c.track_remote);
    let value = FlowValue {
        last_seen_ns: now,
        rule: v.rule,
        flags: FlowValue::flags_for(false, false, track_remote, config.epoch),
    };
    if let Err(e) = record_flow(entry, flow, &value) {
        s.state_error = e;
    }
    if track_remote && let Err(e) = record_remote(&ip.dst, now) {
        s.state_error = e;
    }
    if ip.frag == Frag::First {
        remember_first_fragment(ip, &mut s.frag, v.rule, false, now);
    }
    Outcome::new(Reason::Allowed, Some(v.rule), class.as_ref())
}

/// Judges an inbound packet into `s.outcome`.
#[inline(never)]
pub fn judge_inbound(s: &mut Scratch, config: &FwdConfig, now: u64) {
    let outcome = if config.active_slot == 0 {
        inbound::<Slot0>(s, config, now)
    } else {
        inbound::<Slot1>(s, config, now)
    };
    s.outcome = outcome;
}

#[inline(always)]
fn inbound<S: Slot>(s: &mut Scratch, config: &FwdConfig, now: u64) -> Outcome {
    let ip = &s.ip;
    if is_link_local(ip.family, &ip.src) || is_link_local(ip.family, &ip.dst) {
        return Outcome::of(Reason::Exempt);
    }
    if ip.frag == Frag::Later {
        return later_fragment::<S>(s, config, now, true);
    }
    s.flow = flow_key(ip, true);
    let flow = &s.flow;
    let entry = live_entry(flow, config, now);
    if let Some(e) = entry {
        // SAFETY: a map value pointer, valid during the program run.
        let value = unsafe { *e };
        // A reply of an outbound flow; or, under this epoch, a flow an ingress rule allowed
        // (a `related` one while its remote is live).
        if !value.inbound()
            || (value.epoch() == config.epoch
                && (value.flags & FlowValue::FLAG_RELATED == 0
                    || live_remote(&ip.src, config, now)))
        {
            touch_flow(e, now);
            let reason = if value.inbound() {
                Reason::Allowed
            } else {
                Reason::Established
            };
            let outcome = Outcome::new(reason, Some(value.rule), None);
            if ip.frag == Frag::First {
                remember_first_fragment(ip, &mut s.frag, value.rule, true, now);
            }
            return outcome;
        }
    }
    let Some(class) = remote::<S>(config, ip.family, &ip.src) else {
        return Outcome::of(Reason::Exempt);
    };
    if let Some(rule) = quoted_flow(ip, &mut s.quoted, false, config, now) {
        return Outcome::new(Reason::Established, Some(rule), class.as_ref());
    }
    let Some(c) = class else {
        return Outcome::new(Reason::NoAddressMatch, None, None);
    };
    let chosen = PortVerdict::choose_ingress(
        port_verdict::<S>(
            c.record,
            direction::INGRESS_LOCAL_PORT,
            ip.protocol,
            ip.dst_port,
        ),
        port_verdict::<S>(
            c.record,
            direction::INGRESS_REMOTE_PORT,
            ip.protocol,
            ip.src_port,
        ),
    );
    let Some(v) = chosen else {
        return Outcome::new(Reason::NoPortMatch, None, Some(&c));
    };
    let related = v.flags & PortVerdict::FLAG_RELATED != 0;
    if related && !live_remote(&ip.src, config, now) {
        return Outcome::new(Reason::NotRelated, None, Some(&c));
    }
    // The flow is open: the host's replies pass as established.
    let value = FlowValue {
        last_seen_ns: now,
        rule: v.rule,
        flags: FlowValue::flags_for(true, related, false, config.epoch),
    };
    if let Err(e) = record_flow(entry, flow, &value) {
        s.state_error = e;
    }
    if ip.frag == Frag::First {
        remember_first_fragment(ip, &mut s.frag, v.rule, true, now);
    }
    Outcome::new(Reason::Allowed, Some(v.rule), Some(&c))
}

/// A later fragment: exempt as its datagram's remote is, else it passes on its first
/// fragment's rule, or is dropped.
#[inline(always)]
fn later_fragment<S: Slot>(
    s: &mut Scratch,
    config: &FwdConfig,
    now: u64,
    inbound: bool,
) -> Outcome {
    let ip = &s.ip;
    let addr = if inbound { &ip.src } else { &ip.dst };
    let Some(class) = remote::<S>(config, ip.family, addr) else {
        return Outcome::of(Reason::Exempt);
    };
    match first_fragment_rule(ip, &mut s.frag, config, now) {
        Some(rule) => Outcome::new(Reason::Allowed, Some(rule), None),
        // The remote's class, so a vendor in audit mode passes it like its first fragment.
        None => Outcome::new(Reason::Fragment, None, class.as_ref()),
    }
}
