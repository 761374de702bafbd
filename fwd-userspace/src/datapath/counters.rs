//! Reading what the programs count and track: per-rule and per-reason counters (summed
//! over CPUs), live flows and live remotes; zeroing the counters of rules new to a policy.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::{
    Pod,
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use fwd_common::{Counter, FlowKey, FlowValue, FwdConfig, Reason, rule_counter_index};

use crate::compile::MapImage;

use super::{Datapath, DatapathError, map_err, monotonic_ns};

/// Counters of one rule, by packet direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets from the protected network out (egress rules, replies of inbound flows).
    pub outbound: Counter,
    /// Packets in (ingress rules, replies of outbound flows).
    pub inbound: Counter,
}

pub(super) fn read_rule_counters(
    map: &PerCpuArray<MapData, Counter>,
    ids: impl IntoIterator<Item = u32>,
) -> Result<Vec<RuleCounters>, DatapathError> {
    let read = |id, inbound| sum_cpus(map, rule_counter_index(id, inbound), "RULE_COUNTERS");
    ids.into_iter()
        .map(|id| {
            Ok(RuleCounters {
                outbound: read(id, false)?,
                inbound: read(id, true)?,
            })
        })
        .collect()
}

pub(super) fn read_reason_counters(
    map: &PerCpuArray<MapData, Counter>,
) -> Result<Vec<(Reason, Counter)>, DatapathError> {
    Reason::ALL
        .iter()
        .map(|r| Ok((*r, sum_cpus(map, *r as u32, "REASON_COUNTERS")?)))
        .collect()
}

/// Flows whose last packet is within their protocol's timeout.
pub(super) fn count_live_flows<T: std::borrow::Borrow<MapData>>(
    flows: &HashMap<T, FlowKey, FlowValue>,
    config: &FwdConfig,
) -> Result<u64, DatapathError> {
    let now = monotonic_ns();
    let mut live = 0;
    for entry in flows {
        // An entry evicted between listing and lookup is simply gone.
        let Ok((key, value)) = entry else { continue };
        if fwd_common::is_live(now, value.last_seen_ns, config.timeout_s(key.protocol)) {
            live += 1;
        }
    }
    Ok(live)
}

pub(super) fn sum_cpus(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DatapathError> {
    let values = map.get(&index, 0).map_err(map_err(name))?;
    Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

/// An address as the programs key it (`fwd_common::Addr`).
pub(super) fn addr_key(addr: IpAddr) -> fwd_common::Addr {
    match addr {
        IpAddr::V4(a) => fwd_common::v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

impl Datapath {
    /// Zeroes the counters of rules `image` brings that the active policy does not have
    /// (same id and name), so a new rule never starts with another rule's counts. Rules
    /// that stay keep counting across the swap. An adopted policy's rules are known from
    /// `set_adopted_rules`; without them every counter starts at zero.
    pub(super) fn reset_new_rule_counters(
        &mut self,
        image: &MapImage,
    ) -> Result<(), DatapathError> {
        let active = self.state[self.active].image.as_ref().map(|(i, _)| i);
        let adopted = self.adopted_rules.as_deref().unwrap_or_default();
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        for rule in &image.rules {
            let kept = match active {
                Some(a) => a
                    .rule(rule.id)
                    .is_some_and(|old| old.vendor == rule.vendor && old.rule == rule.rule),
                None => adopted.iter().any(|(id, name)| {
                    *id == rule.id && name.vendor == rule.vendor && name.rule == rule.rule
                }),
            };
            if !kept {
                for inbound in [false, true] {
                    let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
                        .map_err(DatapathError::Cpus)?;
                    self.rule_counters
                        .set(rule_counter_index(rule.id, inbound), zero, 0)
                        .map_err(map_err("RULE_COUNTERS"))?;
                }
            }
        }
        Ok(())
    }

    /// Per-rule counters summed over CPUs, one per id of `ids`.
    pub fn rule_counters(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<RuleCounters>, DatapathError> {
        read_rule_counters(&self.rule_counters, ids)
    }

    /// Per-reason counters summed over CPUs.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        read_reason_counters(&self.reason_counters)
    }

    /// A hash map the programs share (the daemon reads it, the programs write it).
    pub(super) fn hash_map<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<&MapData, K, V>, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()
            .map_err(map_err(name))
    }

    /// Flows in the flow table whose last packet is within their protocol's timeout.
    /// Walks the table: cost grows with the number of entries.
    pub fn flows_active(&self) -> Result<u64, DatapathError> {
        let flows: HashMap<&MapData, FlowKey, FlowValue> = self.hash_map("FLOWS")?;
        count_live_flows(&flows, &self.read_config()?)
    }

    /// Those of `addrs` the protected network has a live allowed flow with: a packet to
    /// the address within the UDP timeout (`REMOTES`), or else a flow in `FLOWS` within its
    /// protocol's timeout. The flow table is walked only for addresses `REMOTES` does not
    /// settle.
    pub fn live_remotes(
        &self,
        addrs: &BTreeSet<IpAddr>,
    ) -> Result<BTreeSet<IpAddr>, DatapathError> {
        let config = self.read_config()?;
        let now = monotonic_ns();
        let remotes: HashMap<&MapData, fwd_common::Addr, u64> = self.hash_map("REMOTES")?;
        let mut live = BTreeSet::new();
        let mut unsettled = BTreeMap::new();
        for &addr in addrs {
            let key = addr_key(addr);
            match remotes.get(&key, 0) {
                Ok(seen) if fwd_common::is_live(now, seen, config.udp_timeout_s) => {
                    live.insert(addr);
                }
                _ => {
                    unsettled.insert(key, addr);
                }
            }
        }
        if unsettled.is_empty() {
            return Ok(live);
        }
        let flows: HashMap<&MapData, FlowKey, FlowValue> = self.hash_map("FLOWS")?;
        for entry in &flows {
            let Ok((key, value)) = entry else { continue };
            let Some(addr) = unsettled.get(&key.remote) else {
                continue;
            };
            if fwd_common::is_live(now, value.last_seen_ns, config.timeout_s(key.protocol)) {
                live.insert(*addr);
            }
        }
        Ok(live)
    }
}
