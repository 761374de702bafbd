//! The evaluator: the kernel's semantics over a compiled image, for `fwd explain`, the
//! DNS proxy and the differential tests.

use std::net::IpAddr;

use super::tables::{SlotTables, class_record};
use fwd_common::tables::port_verdict;
use fwd_common::{
    PortVerdict, direction,
    tables::{ClassRecord, PortRange as TablePortRange, class},
};

use crate::policy::Direction;

use super::{
    image::CompiledRule, image::MapImage, image::PortEntry, learned::LearnedClass,
    ports::class_ports,
};

/// A packet as `explain` and the datapath see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub direction: Direction,
    /// IP protocol number.
    pub protocol: u8,
    pub remote: IpAddr,
    /// The remote's port for TCP/UDP (0 otherwise).
    pub port: u16,
    /// The local port of an ingress packet (0 for egress and portless protocols).
    pub local_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow { rule: u32 },
    NoAddressMatch,
    NoPortMatch { class: u32 },
}

/// The compiled tables as the kernel reads them (`tables::SlotTables`, with the kernel's
/// search), so what it says is what the kernel does.
pub struct Evaluator<'a> {
    pub(super) image: &'a MapImage,
    pub(super) tables: SlotTables,
}

impl<'a> Evaluator<'a> {
    pub fn new(image: &'a MapImage) -> Self {
        Self {
            image,
            tables: SlotTables::build(image, &[]),
        }
    }

    pub fn evaluate(&self, probe: &Probe) -> Verdict {
        let class = self.tables.lookup_address(probe.remote);
        let Some(record) = self.tables.classes.get(class as usize) else {
            debug_assert!(
                class == class::NONE,
                "no exemptions in an evaluator's tables"
            );
            return Verdict::NoAddressMatch;
        };
        decide(record, &self.tables.ports, class, probe)
    }

    /// What happens to `probe` sent to a host called `name`, once the DNS proxy has
    /// learned its address: the domain rules matching the name and the `remote = "any"`
    /// rules form its class, as they do in the kernel for a learned address that no listed
    /// network covers (`MapImage::learned_class`; a name no rule names is not learned and
    /// its address keeps the class of `any`). `probe.remote` is ignored.
    pub fn evaluate_name(&self, name: &str, probe: &Probe) -> Verdict {
        let members: Vec<&CompiledRule> = self
            .image
            .rules
            .iter()
            .filter(|r| r.any_remote || r.matches_name(name))
            .collect();
        if members.is_empty() {
            return Verdict::NoAddressMatch;
        }
        let mut entries = Vec::new();
        class_ports(NAME_CLASS, &members, &mut entries);
        decide_entries(&entries, false, NAME_CLASS, probe)
    }

    /// What happens to `probe` sent to an address the DNS proxy learned with `learned`'s
    /// class (`MapImage::learned_class`): the kernel's verdict for that address.
    pub fn evaluate_learned(&self, learned: &LearnedClass, probe: &Probe) -> Verdict {
        decide_entries(&learned.ports, learned.audit, NAME_CLASS, probe)
    }

    pub fn rule(&self, id: u32) -> Option<&'a CompiledRule> {
        self.image.rule(id)
    }
}

/// The class `evaluate_name` gives the rules matching a name (any value works: the record
/// is that class's only).
pub const NAME_CLASS: u32 = 0;

/// The verdict of one class given as port entries (a name's or a learned address's), made
/// into its record first as the datapath does.
pub(super) fn decide_entries(
    entries: &[PortEntry],
    audit: bool,
    class: u32,
    probe: &Probe,
) -> Verdict {
    let mut ports = Vec::new();
    let record = class_record(entries, audit, &mut ports);
    decide(&record, &ports, class, probe)
}

/// Steps 2 and 3 of the match: `class`'s record and port ranges decide the packet.
pub(super) fn decide(
    record: &ClassRecord,
    ports: &[TablePortRange],
    class: u32,
    probe: &Probe,
) -> Verdict {
    let lookup = |dir: u8, port: u16| {
        port_verdict(record, dir, probe.protocol, port, |i| {
            ports.get(i as usize).copied()
        })
    };
    let chosen = match probe.direction {
        Direction::Egress => lookup(direction::EGRESS, probe.port),
        Direction::Ingress => PortVerdict::choose_ingress(
            lookup(direction::INGRESS_LOCAL_PORT, probe.local_port),
            lookup(direction::INGRESS_REMOTE_PORT, probe.port),
        ),
    };
    chosen.map_or(Verdict::NoPortMatch { class }, |v| Verdict::Allow {
        rule: v.rule,
    })
}
