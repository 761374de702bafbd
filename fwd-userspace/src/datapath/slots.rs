//! The two policy slots: their tables (`compile::tables`, written through `mmap`), the
//! learned hosts and runtime classes of the DNS proxy, install and flip, and the policy epoch
//! that makes established flows be judged again after anything that can narrow the policy.
//!
//! A slot's arrays need no clearing: the direct index is rewritten whole, and ranges, class
//! records and port ranges are only reached through it. Runtime classes are appended to the
//! active slot's records and port ranges, past the compiled ones; an install lays them out
//! afresh in the slot it fills.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use fwd_common::{
    CLASS_AUDIT, CLASSES_CAPACITY, FwdConfig, HOSTS_CAPACITY, NODE_ENTRIES_CAPACITY,
    PORT_RANGES_CAPACITY, RANGES4_CAPACITY, RANGES6_CAPACITY,
    tables::{ClassRecord, INDEX_ENTRIES, IndexEntry, PortRange, Range4, Range6},
};
use ipnet::IpNet;
use tracing::debug;

use super::{
    Datapath, DatapathError, InstallTimings, Learned, SLOT_GRACE, map_err, mmap::MmapArray, take,
};
use crate::compile::{
    MapImage, PortEntry,
    learned::Change,
    tables::{SlotTables, TableSizes, class_record},
};

/// Entries of each slot's tables, chosen at load (the maps are preallocated arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableCapacity {
    pub ranges4: u32,
    pub ranges6: u32,
    /// Node entries per family (256 a node).
    pub nodes: u32,
    /// Class records: the compiled classes and the DNS proxy's runtime classes.
    pub classes: u32,
    /// Port ranges of all class records.
    pub port_ranges: u32,
    /// Learned hosts per family.
    pub hosts: u32,
}

impl Default for TableCapacity {
    fn default() -> Self {
        Self {
            ranges4: RANGES4_CAPACITY,
            ranges6: RANGES6_CAPACITY,
            nodes: NODE_ENTRIES_CAPACITY,
            classes: CLASSES_CAPACITY,
            port_ranges: PORT_RANGES_CAPACITY,
            hosts: HOSTS_CAPACITY,
        }
    }
}

impl TableCapacity {
    /// Room for a policy of `sizes` and reloads that grow it by half, with room for the
    /// DNS proxy's runtime classes; never below the defaults.
    pub fn for_policy(sizes: TableSizes) -> Self {
        let room = |needed: usize, default: u32| {
            let wanted = needed.saturating_add(needed / 2).min(u32::MAX as usize) as u32;
            wanted.max(default).next_multiple_of(1024)
        };
        let default = Self::default();
        Self {
            ranges4: room(sizes.ranges4, default.ranges4),
            ranges6: room(sizes.ranges6, default.ranges6),
            nodes: room(sizes.nodes4.max(sizes.nodes6), default.nodes),
            classes: room(sizes.classes, 0) + default.classes,
            port_ranges: room(sizes.port_ranges, 0) + default.port_ranges,
            hosts: default.hosts,
        }
    }

    /// `(map, entries)` overrides for the loader, both slots.
    pub(super) fn max_entries(&self) -> Vec<(&'static str, u32)> {
        let mut out = Vec::new();
        for n in 0..2 {
            out.push((RNG4[n], self.ranges4));
            out.push((RNG6[n], self.ranges6));
            out.push((NODES4[n], self.nodes));
            out.push((NODES6[n], self.nodes));
            out.push((CLASSES[n], self.classes));
            out.push((PORT_RANGES[n], self.port_ranges));
            out.push((HOSTS4[n], self.hosts));
            out.push((HOSTS6[n], self.hosts));
        }
        out
    }
}

const IDX4: [&str; 2] = ["IDX4_0", "IDX4_1"];
const RNG4: [&str; 2] = ["RNG4_0", "RNG4_1"];
const IDX6: [&str; 2] = ["IDX6_0", "IDX6_1"];
const RNG6: [&str; 2] = ["RNG6_0", "RNG6_1"];
const NODES4: [&str; 2] = ["NODES4_0", "NODES4_1"];
const NODES6: [&str; 2] = ["NODES6_0", "NODES6_1"];
const CLASSES: [&str; 2] = ["CLASSES_0", "CLASSES_1"];
const PORT_RANGES: [&str; 2] = ["PORT_RANGES_0", "PORT_RANGES_1"];
const HOSTS4: [&str; 2] = ["HOSTS4_0", "HOSTS4_1"];
const HOSTS6: [&str; 2] = ["HOSTS6_0", "HOSTS6_1"];

/// One slot's maps.
pub(super) struct SlotMaps {
    idx4: MmapArray<IndexEntry>,
    nodes4: MmapArray<IndexEntry>,
    rng4: MmapArray<Range4>,
    idx6: MmapArray<IndexEntry>,
    nodes6: MmapArray<IndexEntry>,
    rng6: MmapArray<Range6>,
    classes: MmapArray<ClassRecord>,
    ports: MmapArray<PortRange>,
    hosts4: HashMap<MapData, [u8; 4], u32>,
    hosts6: HashMap<MapData, [u8; 16], u32>,
}

impl SlotMaps {
    pub(super) fn take(ebpf: &mut Ebpf, n: usize) -> Result<Self, DatapathError> {
        let mut array =
            |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::MissingMap(name));
        Ok(Self {
            idx4: MmapArray::new(array(IDX4[n])?, IDX4[n])?,
            nodes4: MmapArray::new(array(NODES4[n])?, NODES4[n])?,
            nodes6: MmapArray::new(array(NODES6[n])?, NODES6[n])?,
            rng4: MmapArray::new(array(RNG4[n])?, RNG4[n])?,
            idx6: MmapArray::new(array(IDX6[n])?, IDX6[n])?,
            rng6: MmapArray::new(array(RNG6[n])?, RNG6[n])?,
            classes: MmapArray::new(array(CLASSES[n])?, CLASSES[n])?,
            ports: MmapArray::new(array(PORT_RANGES[n])?, PORT_RANGES[n])?,
            hosts4: take(ebpf, HOSTS4[n])?,
            hosts6: take(ebpf, HOSTS6[n])?,
        })
    }

    /// Writes an image's tables; the index last, so nothing refers to a range or record
    /// before it is written (the slot is inactive anyway).
    fn write_tables(&mut self, t: &SlotTables) -> Result<(), DatapathError> {
        debug_assert_eq!(t.idx4.len(), INDEX_ENTRIES as usize);
        self.rng4.write(0, &t.rng4)?;
        self.rng6.write(0, &t.rng6)?;
        self.nodes4.write(0, &t.nodes4)?;
        self.nodes6.write(0, &t.nodes6)?;
        self.ports.write(0, &t.ports)?;
        self.classes.write(0, &t.classes)?;
        self.idx4.write(0, &t.idx4)?;
        self.idx6.write(0, &t.idx6)
    }

    fn set_host(&mut self, addr: IpAddr, record: u32) -> Result<(), DatapathError> {
        match addr {
            IpAddr::V4(a) => self
                .hosts4
                .insert(a.octets(), record, 0)
                .map_err(map_err("HOSTS4")),
            IpAddr::V6(a) => self
                .hosts6
                .insert(a.octets(), record, 0)
                .map_err(map_err("HOSTS6")),
        }
    }

    fn remove_host(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        let removed = match addr {
            IpAddr::V4(a) => self.hosts4.remove(&a.octets()),
            IpAddr::V6(a) => self.hosts6.remove(&a.octets()),
        };
        match removed {
            // Or already gone (a slot adopted from an earlier run holds what it held).
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DatapathError::Map {
                map: if addr.is_ipv4() { "HOSTS4" } else { "HOSTS6" },
                source: e,
            }),
        }
    }

    /// Removes every learned host, listing them from the maps (for a slot whose contents no
    /// state here records).
    fn clear_all_hosts(&mut self) -> Result<(), DatapathError> {
        let v4: Vec<[u8; 4]> = self
            .hosts4
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("HOSTS4"))?;
        for k in v4 {
            self.remove_host(IpAddr::from(k))?;
        }
        let v6: Vec<[u8; 16]> = self
            .hosts6
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("HOSTS6"))?;
        for k in v6 {
            self.remove_host(IpAddr::from(k))?;
        }
        Ok(())
    }

    /// (map, capacity) of each table, for `fwd status` and the metrics.
    fn capacities(&self) -> [(&'static str, usize); 4] {
        [
            ("ranges4", self.rng4.capacity()),
            ("ranges6", self.rng6.capacity()),
            ("classes", self.classes.capacity()),
            ("port_ranges", self.ports.capacity()),
        ]
    }
}

/// A slot's tables built ahead of an install, for example by a reload without the daemon's
/// lock: `SlotTables::build` is most of an install's time at a large policy. They are
/// used if the install's exemptions are the ones they were built with, else built again.
pub struct PreparedTables {
    tables: SlotTables,
    exemptions: Vec<IpNet>,
}

impl PreparedTables {
    /// The tables of `image` with `exemptions`; install them with the same `image`.
    pub fn build(image: &MapImage, exemptions: &[IpNet]) -> Self {
        // In the form the install compares with (`stage_exemptions`).
        let exemptions = normal_exemptions(exemptions);
        Self {
            tables: SlotTables::build(image, &exemptions),
            exemptions,
        }
    }
}

/// Exemptions as the datapath keeps them: each network's host bits cleared, sorted, once.
fn normal_exemptions(nets: &[IpNet]) -> Vec<IpNet> {
    nets.iter()
        .map(IpNet::trunc)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What one slot holds.
#[derive(Default)]
pub(super) struct SlotState {
    /// The installed image and its tables' sizes.
    pub(super) image: Option<(MapImage, TableSizes)>,
    /// Adopted from pins of an earlier run: what it holds is not recorded here.
    pub(super) unknown: bool,
    /// Entries learned at run time, as the DNS proxy numbers them.
    pub(super) learned: Learned,
    /// Runtime class number -> its record, past the compiled ones.
    records: BTreeMap<u32, u32>,
    free_records: Vec<u32>,
    next_record: u32,
    next_port: u32,
}

impl SlotState {
    fn new(image: &MapImage, sizes: TableSizes) -> Self {
        Self {
            image: Some((image.clone(), sizes)),
            next_record: sizes.classes as u32,
            next_port: sizes.port_ranges as u32,
            ..Self::default()
        }
    }

    /// The record of a class number: compiled classes are their own records.
    fn record_of(&self, class: u32) -> Option<u32> {
        let (image, _) = self.image.as_ref()?;
        if class < image.classes {
            Some(class)
        } else {
            self.records.get(&class).copied()
        }
    }
}

impl Datapath {
    /// Installs `image` atomically: fill the inactive slot, flip, wait, clear the old one.
    /// A packet sees either the old policy or the new one, never a mix. Learned entries
    /// are carried over unchanged; when the new image changes what they should be (other
    /// rules, other class numbers), use `install_with_learned`.
    pub fn install(
        &mut self,
        image: &MapImage,
        generation: u32,
    ) -> Result<InstallTimings, DatapathError> {
        let learned = self.state[self.active].learned.clone();
        self.install_with_learned(image, generation, learned)
    }

    /// Puts a whole policy in force with one flip: `image`, the learned entries judged
    /// under it, the exemptions and the mode (audit or enforce) go into the same `CONFIG`
    /// write, so no packet sees one of them new and another old. Start-up and reload both
    /// come here. On an error before the flip nothing changes, the settings included.
    pub fn apply(
        &mut self,
        image: &MapImage,
        generation: u32,
        learned: Learned,
        exemptions: &[IpNet],
        audit: bool,
    ) -> Result<InstallTimings, DatapathError> {
        self.apply_prepared(image, generation, learned, exemptions, audit, None)
    }

    /// Whether `image` (with `exemptions`) fits the tables this datapath was loaded with,
    /// without writing anything: the error an install would give, or `Ok`.
    pub fn check_capacity(
        &self,
        image: &MapImage,
        exemptions: &[IpNet],
    ) -> Result<(), DatapathError> {
        let sizes = SlotTables::build(image, exemptions).sizes();
        let c = &self.capacity;
        for (map, needed, capacity) in [
            (RNG4[0], sizes.ranges4, c.ranges4),
            (RNG6[0], sizes.ranges6, c.ranges6),
            (NODES4[0], sizes.nodes4, c.nodes),
            (NODES6[0], sizes.nodes6, c.nodes),
            (CLASSES[0], sizes.classes, c.classes),
            (PORT_RANGES[0], sizes.port_ranges, c.port_ranges),
        ] {
            if needed > capacity as usize {
                return Err(DatapathError::Capacity {
                    map,
                    needed,
                    capacity: capacity as usize,
                });
            }
        }
        Ok(())
    }

    /// Installs `image` together with the learned entries that go with it, atomically.
    pub fn install_with_learned(
        &mut self,
        image: &MapImage,
        generation: u32,
        learned: Learned,
    ) -> Result<InstallTimings, DatapathError> {
        self.install_tables(image, generation, learned, None)
    }

    /// `apply` with tables built ahead (`PreparedTables::build` of the same `image`).
    pub fn apply_prepared(
        &mut self,
        image: &MapImage,
        generation: u32,
        learned: Learned,
        exemptions: &[IpNet],
        audit: bool,
        prepared: Option<PreparedTables>,
    ) -> Result<InstallTimings, DatapathError> {
        let before = (self.exemptions.clone(), self.mode);
        let epoch = self.read_config()?.epoch;
        self.stage_exemptions(exemptions);
        self.stage_audit(audit);
        let result = self.install_tables(image, generation, learned, prepared);
        let flipped = self.read_config().is_ok_and(|c| c.epoch != epoch);
        if result.is_err() && !flipped {
            (self.exemptions, self.mode) = before;
        }
        result
    }

    /// From now on an install flips and returns; the slot it left is cleared by
    /// `finish_install` once `SLOT_GRACE` has passed (the caller need not hold its lock
    /// while programs finish with the old slot). An install that comes first waits out
    /// the rest of the grace before it writes that slot.
    pub fn defer_slot_clear(&mut self, on: bool) {
        self.defer_clear = on;
    }

    /// Clears the slot the last install left, once `SLOT_GRACE` has passed since its flip
    /// (waiting for the rest of it); nothing if no clean-up is due.
    pub fn finish_install(&mut self) -> Result<(), DatapathError> {
        let Some((slot, flipped)) = self.pending_clear.take() else {
            return Ok(());
        };
        if let Some(rest) = SLOT_GRACE.checked_sub(flipped.elapsed()) {
            std::thread::sleep(rest);
        }
        if slot != self.active {
            self.clear_slot(slot)?;
        }
        Ok(())
    }

    /// Whether an install's clean-up of the slot it left is still due.
    pub fn install_pending(&self) -> bool {
        self.pending_clear.is_some()
    }

    /// `finish_install` if the grace has passed, without waiting; whether it cleared.
    pub fn finish_install_if_due(&mut self) -> Result<bool, DatapathError> {
        match self.pending_clear {
            Some((_, flipped)) if flipped.elapsed() >= SLOT_GRACE => {
                self.finish_install()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn install_tables(
        &mut self,
        image: &MapImage,
        generation: u32,
        learned: Learned,
        prepared: Option<PreparedTables>,
    ) -> Result<InstallTimings, DatapathError> {
        let started = Instant::now();
        // The slot to fill may still be read by programs of the last flip.
        self.finish_install()?;
        // The active slot is free only before the first install of a fresh datapath; an
        // adopted one is in force and is left alone until the flip.
        let active = &self.state[self.active];
        let target = if active.image.is_none() && !active.unknown {
            self.active
        } else {
            1 - self.active
        };
        self.clear_slot(target)?;
        let tables = match prepared {
            Some(p) if p.exemptions == self.exemptions => p.tables,
            _ => SlotTables::build(image, &self.exemptions),
        };
        self.slots[target].write_tables(&tables)?;
        self.state[target] = SlotState::new(image, tables.sizes());
        // Runtime classes before the hosts that use them.
        for (class, ports) in &learned.classes {
            self.add_class(target, *class, ports)?;
        }
        for (addr, value) in &learned.hosts {
            self.set_host(target, *addr, *value)?;
        }
        self.state[target].learned = learned;
        self.reset_new_rule_counters(image)?;
        let filled = Instant::now();
        let mut config = self.read_config()?;
        config.active_slot = target as u8;
        config.mode = self.mode;
        config.generation = generation;
        config.epoch = FwdConfig::next_epoch(config.epoch);
        self.write_config(config)?;
        let previous = self.active;
        self.active = target;
        // An earlier layout's slot keeps its hosts (and stays `unknown`, so the install
        // that next writes it clears them).
        if previous != target && self.earlier_slot.take() != Some(previous) {
            self.pending_clear = Some((previous, Instant::now()));
            if !self.defer_clear {
                self.finish_install()?;
            }
        }
        self.adopted_rules = None;
        Ok(InstallTimings {
            fill: filled - started,
            swap: filled.elapsed(),
        })
    }

    /// Forgets what a slot holds: its learned hosts leave the maps (the arrays are
    /// overwritten by the next install).
    fn clear_slot(&mut self, index: usize) -> Result<(), DatapathError> {
        let state = std::mem::take(&mut self.state[index]);
        if state.unknown {
            return self.slots[index].clear_all_hosts();
        }
        for addr in state.learned.hosts.keys() {
            self.slots[index].remove_host(*addr)?;
        }
        Ok(())
    }

    /// Replaces the exemptions (addresses that always pass: management, own addresses).
    /// They live in the address tables, so a change in force is installed like a reload
    /// (the old exemptions hold until the flip).
    pub fn set_exemptions(&mut self, nets: &[IpNet]) -> Result<(), DatapathError> {
        if !self.stage_exemptions(nets) {
            return Ok(());
        }
        let active = &self.state[self.active];
        if let Some((image, _)) = active.image.clone() {
            let generation = self.read_config()?.generation;
            let learned = active.learned.clone();
            self.install_with_learned(&image, generation, learned)?;
        }
        Ok(())
    }

    /// Sets the exemptions the next install puts in force, without installing; returns
    /// whether they changed.
    fn stage_exemptions(&mut self, nets: &[IpNet]) -> bool {
        let wanted = normal_exemptions(nets);
        if wanted == self.exemptions {
            return false;
        }
        self.exemptions = wanted;
        true
    }

    /// Makes the DNS table's changes to the learned entries, in order.
    pub fn apply_learned(&mut self, changes: &[Change]) -> Result<(), DatapathError> {
        for change in changes {
            match change {
                Change::AddClass(class, ports) => self.learn_class(*class, ports)?,
                Change::SetHost(addr, value) => self.learn(*addr, *value)?,
                Change::RemoveHost(addr) => self.forget(*addr)?,
                Change::RemoveClass(class) => self.forget_class(*class)?,
            }
        }
        Ok(())
    }

    /// Sets enforce or audit for the whole policy for the next install to put in force with
    /// its flip, in the same `CONFIG` write; returns whether it changed.
    fn stage_audit(&mut self, audit: bool) -> bool {
        let mode = if audit {
            FwdConfig::MODE_AUDIT
        } else {
            FwdConfig::MODE_ENFORCE
        };
        std::mem::replace(&mut self.mode, mode) != mode
    }

    /// Enforce or audit for the whole policy, now, without an install. Moving to enforce
    /// narrows what passes, so flows are judged again.
    pub fn set_audit(&mut self, audit: bool) -> Result<(), DatapathError> {
        self.stage_audit(audit);
        let mut config = self.read_config()?;
        if config.mode == self.mode {
            return Ok(());
        }
        config.mode = self.mode;
        config.epoch = FwdConfig::next_epoch(config.epoch);
        self.write_config(config)
    }

    /// `FwdConfig::hosts`: the slots and families that have learned hosts in their maps.
    /// `IpAddr` orders IPv4 before IPv6, so the first and last learned host say it.
    pub(super) fn host_bits(&self) -> u8 {
        let mut bits = 0;
        for (slot, state) in self.state.iter().enumerate() {
            let slot = slot as u8;
            if state.unknown {
                // Whatever an earlier run left there.
                bits |= FwdConfig::hosts_bit(slot, 4) | FwdConfig::hosts_bit(slot, 6);
                continue;
            }
            if state.image.is_none() {
                continue;
            }
            let hosts = &state.learned.hosts;
            if hosts.keys().next().is_some_and(IpAddr::is_ipv4) {
                bits |= FwdConfig::hosts_bit(slot, 4);
            }
            if hosts.keys().next_back().is_some_and(IpAddr::is_ipv6) {
                bits |= FwdConfig::hosts_bit(slot, 6);
            }
        }
        bits
    }

    /// The policy epoch in force (`FwdConfig::epoch`): it moves on with every change that
    /// can narrow what is allowed.
    pub fn policy_epoch(&self) -> Result<u32, DatapathError> {
        Ok(self.read_config()?.epoch)
    }

    /// Moves the policy epoch on: every flow's next packet is judged by the rules again.
    fn bump_epoch(&mut self) -> Result<(), DatapathError> {
        let mut config = self.read_config()?;
        config.epoch = FwdConfig::next_epoch(config.epoch);
        self.write_config(config)
    }

    /// Adds a host entry (an address learned at run time, e.g. from DNS) with a class value
    /// (`CLASS_AUDIT` included) of the active image or of a runtime class added with
    /// `learn_class`, without a recompile. It beats a compiled network covering it until
    /// `forget`.
    pub fn learn(&mut self, addr: IpAddr, class: u32) -> Result<(), DatapathError> {
        let slot = self.active;
        let previous = self.state[slot].learned.hosts.get(&addr).copied();
        if self.state[slot].image.is_some() {
            self.set_host(slot, addr, class)?;
        }
        let bits = self.host_bits();
        self.state[slot].learned.hosts.insert(addr, class);
        match previous {
            // Another class for a known host may allow less than before.
            Some(p) if p != class => self.bump_epoch(),
            // The first host of its family: in the map before the config says to look there.
            None if self.host_bits() != bits => {
                let config = self.read_config()?;
                self.write_config(config)
            }
            _ => Ok(()),
        }
    }

    fn set_host(&mut self, slot: usize, addr: IpAddr, value: u32) -> Result<(), DatapathError> {
        let class = value & !CLASS_AUDIT;
        let record = self.state[slot]
            .record_of(class)
            .ok_or(DatapathError::UnknownClass(class))?;
        if value & CLASS_AUDIT != 0 {
            // The audit bit travels with the host value; the kernel reads it in the record.
            let maps = &mut self.slots[slot];
            let mut r = maps.classes.read(record as usize).unwrap_or_default();
            if r.flags & ClassRecord::FLAG_AUDIT == 0 {
                r.flags |= ClassRecord::FLAG_AUDIT;
                maps.classes.write(record as usize, &[r])?;
            }
        }
        self.slots[slot].set_host(addr, record)
    }

    /// Adds the port entries of a class made at run time (see `Learned::classes`) to the
    /// active policy; learn addresses of that class only after this returns.
    pub fn learn_class(&mut self, class: u32, ports: &[PortEntry]) -> Result<(), DatapathError> {
        let slot = self.active;
        if self.state[slot].image.is_some() {
            self.add_class(slot, class, ports)?;
        }
        self.state[slot]
            .learned
            .classes
            .insert(class, ports.to_vec());
        Ok(())
    }

    /// Writes a runtime class's record and port ranges past the compiled ones: the ranges
    /// first, the record next; only a host added afterwards refers to it.
    fn add_class(
        &mut self,
        slot: usize,
        class: u32,
        entries: &[PortEntry],
    ) -> Result<(), DatapathError> {
        let mut ranges = Vec::new();
        let mut record = class_record(entries, false, &mut ranges);
        let state = &mut self.state[slot];
        let base = state.next_port;
        record.rebase(base);
        let index = match state.records.get(&class) {
            Some(&i) => i,
            None => state.free_records.pop().unwrap_or(state.next_record),
        };
        let maps = &mut self.slots[slot];
        maps.ports.write(base as usize, &ranges)?;
        maps.classes.write(index as usize, &[record])?;
        let state = &mut self.state[slot];
        state.next_port = base + ranges.len() as u32;
        if index == state.next_record {
            state.next_record += 1;
        }
        state.records.insert(class, index);
        Ok(())
    }

    /// Removes a class made at run time; forget its addresses first. Its port ranges are
    /// reclaimed by the next install.
    pub fn forget_class(&mut self, class: u32) -> Result<(), DatapathError> {
        let state = &mut self.state[self.active];
        if state.learned.classes.remove(&class).is_none() {
            return Ok(());
        }
        if let Some(record) = state.records.remove(&class) {
            state.free_records.push(record);
        }
        Ok(())
    }

    /// Removes a learned host entry; the compiled networks covering it apply again. Flows
    /// with it are judged again.
    pub fn forget(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        let slot = self.active;
        if self.state[slot].learned.hosts.remove(&addr).is_none() {
            return Ok(());
        }
        if self.state[slot].image.is_some() {
            self.slots[slot].remove_host(addr)?;
        }
        debug!(%addr, "learned host forgotten");
        self.bump_epoch()
    }

    /// The learned entries of the active policy.
    pub fn learned(&self) -> &Learned {
        &self.state[self.active].learned
    }

    /// The image in force, if this datapath installed one.
    pub fn active_image(&self) -> Option<&MapImage> {
        self.state[self.active].image.as_ref().map(|(i, _)| i)
    }

    /// (table, entries used, capacity) of the active slot.
    pub fn table_fill(&self) -> Vec<(&'static str, usize, usize)> {
        let state = &self.state[self.active];
        let sizes = state.image.as_ref().map(|(_, s)| *s).unwrap_or_default();
        let used = [
            sizes.ranges4,
            sizes.ranges6,
            state.next_record as usize,
            state.next_port as usize,
        ];
        let mut out: Vec<_> = self.slots[self.active]
            .capacities()
            .into_iter()
            .zip(used)
            .map(|((name, capacity), used)| (name, used, capacity))
            .collect();
        let hosts = state.learned.hosts.len();
        out.push(("hosts", hosts, self.capacity.hosts as usize * 2));
        out
    }
}
