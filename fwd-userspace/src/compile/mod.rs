//! Policy -> map images: normalisation, prefix flattening, class deduplication, port
//! expansion and the capacity check. Knows nothing of aya: the datapath loads the image.
//!
//! Match semantics (the kernel's, and `MapImage::evaluate`'s):
//! 1. the remote address's longest matching prefix gives a class; the compiler flattened
//!    overlapping prefixes so that class is the set of every rule whose remote contains it;
//! 2. the (class, direction, protocol, port) key's longest matching entry gives the rule.
//!    Where several rules of a class cover a port, a rule that needs no live flow beats a
//!    `related` one (which would drop what the other allows), then the narrowest port
//!    range owns it; on a tie a rule that names addresses beats a `remote = "any"` rule,
//!    then the rule compiled first (file-name order, then order in the file) wins. A
//!    protocol-specific rule beats an `any`-protocol rule.
//! 3. ingress looks up both the local-port key and the remote-port key; a rule that needs no
//!    live flow beats a `related` one, a rule naming addresses beats a `remote = "any"`
//!    rule, then the local-port rule wins.
//!
//! Rule ids (counter slots) are stable: see [`RuleIds`].
//!
//! Here: `compile` and its steps; `select` (what a site enforces), `classes` (prefixes
//! flattened into classes), `ports` (each class's port entries), `warnings`, `ids`,
//! `image` (what comes out), `evaluate` (the kernel's semantics over an image), `tables`
//! (the kernel's flat tables), `learned` (the DNS proxy's additions), `lpm`.

mod classes;
mod evaluate;
mod ids;
mod image;
pub mod learned;
pub mod lpm;
mod ports;
mod select;
pub mod tables;
mod warnings;

pub use evaluate::{Evaluator, NAME_CLASS, Probe, Verdict};
pub use ids::{RuleIds, home_slot};
pub use image::{CompiledRule, DatedRule, LearnedClass, MapImage, PortEntry};
pub use select::Selection;
pub use warnings::Warning;

use std::collections::{HashMap, hash_map::Entry};

use fwd_common::{CLASS_AUDIT, MAX_RULES};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{PolicySet, Remote, Rule, RuleRef, remote::any_nets};

#[derive(Clone, Debug)]
pub struct Compiled {
    pub image: MapImage,
    pub warnings: Vec<Warning>,
    /// Selected rules whose `not_before` is still ahead.
    pub pending: Vec<DatedRule>,
    /// Selected rules whose `not_after` has passed.
    pub expired: Vec<DatedRule>,
    /// Rules the selection left out (vendor, level, profile or region).
    pub unselected: usize,
    /// The ids given to the compiled rules; pass them to the next compile.
    pub ids: RuleIds,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the policy needs {needed} entries in map {map}, which holds {capacity}; select fewer vendors or regions"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
}

/// Compiles the rules of `set` that `selection` picks and that are valid today, with ids
/// derived from the rule names.
pub fn compile(set: &PolicySet, selection: &Selection) -> Result<Compiled, CompileError> {
    compile_with_ids(set, selection, &RuleIds::default())
}

/// Like [`compile`], keeping the ids `previous` gave to rules that still exist.
pub fn compile_with_ids(
    set: &PolicySet,
    selection: &Selection,
    previous: &RuleIds,
) -> Result<Compiled, CompileError> {
    let started = std::time::Instant::now();
    let mut rules: Vec<&Rule> = Vec::new();
    let mut infos = Vec::new();
    let mut warnings = Vec::new();
    let mut pairs4 = Vec::new();
    let mut pairs6 = Vec::new();
    let (mut pending, mut expired, mut unselected) = (Vec::new(), Vec::new(), 0);

    for vp in &set.vendors {
        let (mut has4, mut has6) = (false, false);
        // What each rule opens -> the first rule of this vendor that opens it.
        let mut effects: HashMap<Effect<'_>, &str> = HashMap::new();
        for rule in &vp.rules {
            let name = RuleRef::new(&vp.vendor.id, &rule.id).to_string();
            if !selection.includes(&vp.vendor.id, rule) {
                unselected += 1;
                continue;
            }
            if let Some(date) = rule.not_before.filter(|d| *d > selection.today) {
                pending.push(DatedRule {
                    rule: name,
                    date,
                    location: rule.location.clone(),
                });
                continue;
            }
            if let Some(date) = rule.not_after.filter(|d| *d < selection.today) {
                expired.push(DatedRule {
                    rule: name,
                    date,
                    location: rule.location.clone(),
                });
                continue;
            }
            match effects.entry(Effect::of(rule)) {
                Entry::Occupied(first) => warnings.push(Warning::Duplicate {
                    rule: name.clone(),
                    first: first.get().to_string(),
                    location: rule.location.clone(),
                }),
                Entry::Vacant(slot) => {
                    slot.insert(&rule.id);
                }
            }
            let id = rules.len() as u32;
            rules.push(rule);
            infos.push(CompiledRule {
                id,
                vendor: vp.vendor.id.clone(),
                rule: rule.id.clone(),
                service: rule.service.clone(),
                level: rule.level,
                direction: rule.direction,
                related: rule.related,
                source: rule.location.clone(),
                order: id,
                protocols: rule.protocols.clone(),
                ports: rule.ports.clone(),
                port_side: rule.port_side,
                any_remote: rule.remotes.contains(&Remote::Any),
                names: rule
                    .remotes
                    .iter()
                    .filter(|r| matches!(r, Remote::Host(_) | Remote::Wildcard(_)))
                    .cloned()
                    .collect(),
            });
            let mut names = Vec::new();
            for remote in &rule.remotes {
                let nets: Vec<IpNet> = match remote {
                    Remote::Any => {
                        has4 = true;
                        has6 = true;
                        warnings.push(Warning::AnyRemote {
                            rule: name.clone(),
                            location: rule.location.clone(),
                        });
                        any_nets().to_vec()
                    }
                    Remote::Nets(nets) => {
                        has4 |= nets.iter().any(|n| matches!(n, IpNet::V4(_)));
                        has6 |= nets.iter().any(|n| matches!(n, IpNet::V6(_)));
                        nets.clone()
                    }
                    Remote::Host(name) => {
                        names.push(name.clone());
                        Vec::new()
                    }
                    Remote::Wildcard(domain) => {
                        names.push(format!("*.{domain}"));
                        Vec::new()
                    }
                };
                for net in nets {
                    match net {
                        IpNet::V4(n) => pairs4.push((v4_prefix(&n), id)),
                        IpNet::V6(n) => pairs6.push((v6_prefix(&n), id)),
                    }
                }
            }
            if !names.is_empty() {
                warnings.push(Warning::NeedsDns {
                    rule: name.clone(),
                    names,
                    location: rule.location.clone(),
                });
            }
        }
        match (has4, has6) {
            (true, false) => warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv4",
            }),
            (false, true) => warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv6",
            }),
            _ => {}
        }
    }
    check_capacity("RULE_COUNTERS", rules.len(), MAX_RULES)?;

    tracing::debug!(elapsed = ?started.elapsed(), rules = rules.len(), "compile: rules selected");
    let mut classes = Classes::default();
    let flat4 = flatten(pairs4, 32, &mut classes);
    let flat6 = flatten(pairs6, 128, &mut classes);
    tracing::debug!(elapsed = ?started.elapsed(), classes = classes.sets.len(), "compile: prefixes flattened");

    let mut ports = Vec::new();
    let mut members = Vec::new();
    for (class, set) in classes.sets.iter().enumerate() {
        members.clear();
        members.extend(set.iter().map(|&i| &infos[i as usize]));
        class_ports(class as u32, &members, &mut ports);
    }
    tracing::debug!(elapsed = ?started.elapsed(), entries = ports.len(), "compile: port keys built");

    let mut owning = vec![false; rules.len()];
    for entry in &ports {
        owning[entry.verdict.rule as usize] = true;
    }
    let has_addresses = |r: &Rule| {
        r.remotes
            .iter()
            .any(|x| matches!(x, Remote::Any | Remote::Nets(_)))
    };
    for (info, rule) in infos.iter().zip(&rules) {
        if !owning[info.id as usize] && has_addresses(rule) {
            warnings.push(Warning::Shadowed {
                rule: info.rule_ref().to_string(),
                location: info.source.clone(),
            });
        }
    }

    // Classes holding a rule of an audited vendor carry the audit bit in the address maps.
    let audited: Vec<bool> = classes
        .sets
        .iter()
        .map(|set| {
            set.iter()
                .any(|&i| selection.audit_vendors.contains(&infos[i as usize].vendor))
        })
        .collect();
    let value = |class: u32| {
        if audited[class as usize] {
            class | CLASS_AUDIT
        } else {
            class
        }
    };
    // Dense compile-order indices -> stable ids.
    let names: Vec<String> = infos.iter().map(|i| i.rule_ref().to_string()).collect();
    let (ids, by_index) = previous.assign(&names);
    for info in &mut infos {
        info.id = by_index[info.id as usize];
    }
    infos.sort_by_key(|i| i.id);
    for entry in &mut ports {
        entry.verdict.rule = by_index[entry.verdict.rule as usize];
    }

    let image = MapImage {
        dst4: flat4
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv4Net::new((addr as u32).into(), len).expect("valid v4 prefix");
                (net, value(class))
            })
            .collect(),
        dst6: flat6
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv6Net::new(addr.into(), len).expect("valid v6 prefix");
                (net, value(class))
            })
            .collect(),
        ports,
        rules: infos,
        classes: classes.sets.len() as u32,
        class_members: classes
            .sets
            .iter()
            .map(|set| {
                let mut ids: Vec<u32> = set.iter().map(|&i| by_index[i as usize]).collect();
                ids.sort_unstable();
                ids
            })
            .collect(),
        audit_vendors: selection.audit_vendors.clone(),
    };
    Ok(Compiled {
        image,
        warnings,
        pending,
        expired,
        unselected,
        ids,
    })
}

fn check_capacity(map: &'static str, needed: usize, capacity: u32) -> Result<(), CompileError> {
    if needed > capacity as usize {
        return Err(CompileError::Capacity {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
use classes::Classes;
use classes::flatten;
use classes::v4_prefix;
use classes::v6_prefix;
use ports::class_ports;
use warnings::Effect;
