//! Reading what the programs count and track: per-rule and per-reason counters (summed
//! over CPUs), live flows and live remotes; zeroing the counters of rules new to a policy.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::{
    Pod,
    maps::{HashMap, Map, MapData, PerCpuArray},
};
use fwd_common::{
    Counter, FlowKey, FlowValue, FwdConfig, RULE_COUNTER_SLOTS, Reason, reason_counter_index,
    rule_counter_index, rule_counter_slot,
};

use crate::compile::MapImage;

use super::{Datapath, DatapathError, map_err, mmap::MmapArray, monotonic_ns};

/// Counters of one reason, by packet direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonCounters {
    pub reason: Reason,
    /// Packets from the protected network out.
    pub outbound: Counter,
    /// Packets in.
    pub inbound: Counter,
}

impl ReasonCounters {
    /// Both directions.
    pub fn total(&self) -> Counter {
        self.outbound + self.inbound
    }
}

/// Counters of one rule, by packet direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets from the protected network out (egress rules, replies of inbound flows).
    pub outbound: Counter,
    /// Packets in (ingress rules, replies of outbound flows).
    pub inbound: Counter,
}

/// `RULE_COUNTERS`, mapped: a block of `RULE_COUNTER_SLOTS` counters per possible CPU, each
/// written only by programs on its CPU. Read as memory (no syscall per rule and CPU).
pub(super) struct RuleCounterMap {
    array: MmapArray<Counter>,
    cpus: usize,
}

impl RuleCounterMap {
    pub(super) fn new(map: Map) -> Result<Self, DatapathError> {
        let array = MmapArray::new(map, "RULE_COUNTERS")?;
        let cpus = array.capacity() / RULE_COUNTER_SLOTS as usize;
        Ok(Self { array, cpus })
    }

    /// Entries for `cpus` possible CPUs (the map's size at load).
    pub(super) fn entries(cpus: usize) -> u32 {
        RULE_COUNTER_SLOTS * cpus.max(1) as u32
    }

    /// Counter `index` (`rule_counter_index`) summed over CPUs.
    fn sum(&self, index: u32) -> Counter {
        (0..self.cpus as u32)
            .filter_map(|cpu| self.array.read(rule_counter_slot(cpu, index) as usize))
            .fold(Counter::default(), |acc, c| acc + c)
    }

    pub(super) fn read(&self, ids: impl IntoIterator<Item = u32>) -> Vec<RuleCounters> {
        ids.into_iter()
            .map(|id| RuleCounters {
                outbound: self.sum(rule_counter_index(id, false)),
                inbound: self.sum(rule_counter_index(id, true)),
            })
            .collect()
    }

    /// Zeroes counter `index` on every CPU.
    fn zero(&mut self, index: u32) -> Result<(), DatapathError> {
        for cpu in 0..self.cpus as u32 {
            self.array.write(
                rule_counter_slot(cpu, index) as usize,
                &[Counter::default()],
            )?;
        }
        Ok(())
    }

    /// Adds `counts` (by `rule_counter_index`) to CPU 0's block: what an earlier layout
    /// counted carries on.
    pub(super) fn carry(&mut self, counts: &[(u32, Counter)]) -> Result<(), DatapathError> {
        for (index, c) in counts {
            let slot = rule_counter_slot(0, *index) as usize;
            let old = self.array.read(slot).unwrap_or_default();
            self.array.write(slot, &[old + *c])?;
        }
        Ok(())
    }
}

pub(super) fn read_reason_counters(
    map: &PerCpuArray<MapData, Counter>,
) -> Result<Vec<ReasonCounters>, DatapathError> {
    let read = |r, inbound| sum_cpus(map, reason_counter_index(r, inbound), "REASON_COUNTERS");
    Reason::ALL
        .iter()
        .map(|r| {
            Ok(ReasonCounters {
                reason: *r,
                outbound: read(*r, false)?,
                inbound: read(*r, true)?,
            })
        })
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
    Ok(values.iter().fold(Counter::default(), |acc, c| acc + *c))
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
                    self.rule_counters
                        .zero(rule_counter_index(rule.id, inbound))?;
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
        Ok(self.rule_counters.read(ids))
    }

    /// Per-reason counters summed over CPUs, by direction.
    pub fn reason_counters(&self) -> Result<Vec<ReasonCounters>, DatapathError> {
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

    /// Whether `REMOTES` holds `addr`: the programs record a remote only for classes with
    /// a `related` ingress rule and for learned hosts (what asks about live remotes).
    pub fn remote_recorded(&self, addr: IpAddr) -> Result<bool, DatapathError> {
        let remotes: HashMap<&MapData, fwd_common::Addr, u64> = self.hash_map("REMOTES")?;
        match remotes.get(&addr_key(addr), 0) {
            Ok(_) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err("REMOTES")(e)),
        }
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
