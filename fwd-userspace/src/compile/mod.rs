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
pub use image::{CompiledRule, DatedRule, MapImage, PortEntry};
pub use learned::LearnedClass;
pub use select::Selection;
pub use warnings::Warning;

use classes::{Classes, Prefix, flatten, v4_prefix, v6_prefix};
use ports::class_ports;
use warnings::Effect;

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
    let Selected {
        rules,
        mut infos,
        pairs4,
        pairs6,
        pending,
        expired,
        unselected,
        mut warnings,
    } = select_rules(set, selection);
    check_capacity("RULE_COUNTERS", rules.len(), MAX_RULES)?;
    tracing::debug!(elapsed = ?started.elapsed(), rules = rules.len(), "compile: rules selected");

    let mut classes = Classes::default();
    let flat4 = flatten(pairs4, 32, &mut classes);
    let flat6 = flatten(pairs6, 128, &mut classes);
    tracing::debug!(elapsed = ?started.elapsed(), classes = classes.sets.len(), "compile: prefixes flattened");

    let mut ports = build_ports(&classes, &infos);
    tracing::debug!(elapsed = ?started.elapsed(), entries = ports.len(), "compile: port keys built");

    warnings.extend(find_shadowed(&rules, &infos, &ports));
    let audited = audited_classes(&classes, &infos, selection);
    let (ids, by_index) = assign_ids(previous, &mut infos, &mut ports);
    let value = |class: u32| {
        if audited[class as usize] {
            class | CLASS_AUDIT
        } else {
            class
        }
    };
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

/// The rules a selection enforces today, in compile order (their index is their dense id
/// until `assign_ids`), with the prefixes they list and what the selection left out.
struct Selected<'a> {
    rules: Vec<&'a Rule>,
    infos: Vec<CompiledRule>,
    /// (prefix, dense rule id) of every listed network.
    pairs4: Vec<(Prefix, u32)>,
    pairs6: Vec<(Prefix, u32)>,
    pending: Vec<DatedRule>,
    expired: Vec<DatedRule>,
    unselected: usize,
    warnings: Vec<Warning>,
}

/// Step 1: selection and dates, duplicates, and each rule's prefixes and names.
fn select_rules<'a>(set: &'a PolicySet, selection: &Selection) -> Selected<'a> {
    let mut out = Selected {
        rules: Vec::new(),
        infos: Vec::new(),
        pairs4: Vec::new(),
        pairs6: Vec::new(),
        pending: Vec::new(),
        expired: Vec::new(),
        unselected: 0,
        warnings: Vec::new(),
    };
    for vp in &set.vendors {
        let (mut has4, mut has6) = (false, false);
        // What each rule opens -> the first rule of this vendor that opens it.
        let mut effects: HashMap<Effect<'_>, &str> = HashMap::new();
        for rule in &vp.rules {
            let name = RuleRef::new(&vp.vendor.id, &rule.id).to_string();
            if !selection.includes(&vp.vendor.id, rule) {
                out.unselected += 1;
                continue;
            }
            let dated = |date| DatedRule {
                rule: name.clone(),
                date,
                location: rule.location.clone(),
            };
            if let Some(date) = rule.not_before.filter(|d| *d > selection.today) {
                out.pending.push(dated(date));
                continue;
            }
            if let Some(date) = rule.not_after.filter(|d| *d < selection.today) {
                out.expired.push(dated(date));
                continue;
            }
            match effects.entry(Effect::of(rule)) {
                Entry::Occupied(first) => out.warnings.push(Warning::Duplicate {
                    rule: name.clone(),
                    first: first.get().to_string(),
                    location: rule.location.clone(),
                }),
                Entry::Vacant(slot) => {
                    slot.insert(&rule.id);
                }
            }
            let id = out.rules.len() as u32;
            out.rules.push(rule);
            out.infos.push(compiled_rule(&vp.vendor.id, rule, id));
            let (v4, v6) = collect_prefixes(rule, id, &name, &mut out);
            has4 |= v4;
            has6 |= v6;
        }
        match (has4, has6) {
            (true, false) => out.warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv4",
            }),
            (false, true) => out.warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv6",
            }),
            _ => {}
        }
    }
    out
}

/// What the counters and `explain` keep of a selected rule; `id` is its dense index.
fn compiled_rule(vendor: &str, rule: &Rule, id: u32) -> CompiledRule {
    CompiledRule {
        id,
        vendor: vendor.to_string(),
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
    }
}

/// Adds the prefixes `rule` lists (`remote = "any"`: both families whole) and warns of
/// what needs the DNS proxy; returns whether it lists IPv4 and IPv6 addresses.
fn collect_prefixes(rule: &Rule, id: u32, name: &str, out: &mut Selected<'_>) -> (bool, bool) {
    let (mut has4, mut has6) = (false, false);
    let mut names = Vec::new();
    for remote in &rule.remotes {
        let nets: Vec<IpNet> = match remote {
            Remote::Any => {
                has4 = true;
                has6 = true;
                out.warnings.push(Warning::AnyRemote {
                    rule: name.to_string(),
                    location: rule.location.clone(),
                });
                any_nets().to_vec()
            }
            Remote::Nets(nets) => {
                has4 |= nets.iter().any(|n| matches!(n, IpNet::V4(_)));
                has6 |= nets.iter().any(|n| matches!(n, IpNet::V6(_)));
                nets.clone()
            }
            Remote::Host(host) => {
                names.push(host.clone());
                Vec::new()
            }
            Remote::Wildcard(domain) => {
                names.push(format!("*.{domain}"));
                Vec::new()
            }
        };
        for net in nets {
            match net {
                IpNet::V4(n) => out.pairs4.push((v4_prefix(&n), id)),
                IpNet::V6(n) => out.pairs6.push((v6_prefix(&n), id)),
            }
        }
    }
    if !names.is_empty() {
        out.warnings.push(Warning::NeedsDns {
            rule: name.to_string(),
            names,
            location: rule.location.clone(),
        });
    }
    (has4, has6)
}

/// Step 3: every class's port entries, in the kernel's precedence.
fn build_ports(classes: &Classes, infos: &[CompiledRule]) -> Vec<PortEntry> {
    let mut ports = Vec::new();
    let mut members = Vec::new();
    for (class, set) in classes.sets.iter().enumerate() {
        members.clear();
        members.extend(set.iter().map(|&i| &infos[i as usize]));
        class_ports(class as u32, &members, &mut ports);
    }
    ports
}

/// Step 4: rules that list addresses but own no port entry anywhere (other rules take
/// every packet they would allow).
fn find_shadowed(rules: &[&Rule], infos: &[CompiledRule], ports: &[PortEntry]) -> Vec<Warning> {
    let mut owning = vec![false; rules.len()];
    for entry in ports {
        owning[entry.verdict.rule as usize] = true;
    }
    let has_addresses = |r: &Rule| {
        r.remotes
            .iter()
            .any(|x| matches!(x, Remote::Any | Remote::Nets(_)))
    };
    infos
        .iter()
        .zip(rules)
        .filter(|(info, rule)| !owning[info.id as usize] && has_addresses(rule))
        .map(|(info, _)| Warning::Shadowed {
            rule: info.rule_ref().to_string(),
            location: info.source.clone(),
        })
        .collect()
}

/// Step 5: the classes holding a rule of an audited vendor (they carry the audit bit in
/// the address maps).
fn audited_classes(classes: &Classes, infos: &[CompiledRule], selection: &Selection) -> Vec<bool> {
    classes
        .sets
        .iter()
        .map(|set| {
            set.iter()
                .any(|&i| selection.audit_vendors.contains(&infos[i as usize].vendor))
        })
        .collect()
}

/// Step 6: dense compile-order indices -> stable ids, in the rules and the port entries;
/// returns the ids and the index -> id map.
fn assign_ids(
    previous: &RuleIds,
    infos: &mut [CompiledRule],
    ports: &mut [PortEntry],
) -> (RuleIds, Vec<u32>) {
    let names: Vec<String> = infos.iter().map(|i| i.rule_ref().to_string()).collect();
    let (ids, by_index) = previous.assign(&names);
    for info in infos.iter_mut() {
        info.id = by_index[info.id as usize];
    }
    infos.sort_by_key(|i| i.id);
    for entry in ports {
        entry.verdict.rule = by_index[entry.verdict.rule as usize];
    }
    (ids, by_index)
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
