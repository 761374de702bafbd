//! `fwd diff`'s model: every rule of a policy in a stable, comparable form (`RuleView`), and
//! what changed between two policies, per vendor and rule. Networks are compared as
//! address ranges, so a list merged, split or reordered differently is no change, and what
//! a change opens or closes is said exactly.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::{Date, Direction, PolicySet, PortSide, Remote};

/// A rule as it is compared: what changes what passes, and its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    pub vendor: String,
    pub rule: String,
    pub service: String,
    pub level: String,
    pub profile: Option<String>,
    pub region: Option<String>,
    pub direction: String,
    pub protocols: Vec<String>,
    /// `443`, `10000-20000`; on `port_side`.
    pub ports: Vec<String>,
    pub port_side: String,
    pub related: bool,
    /// `remote = "any"`.
    pub any: bool,
    /// The networks as merged address ranges, each written as a CIDR where it is one
    /// (`198.51.100.0/24`) and as `FIRST-LAST` otherwise.
    pub networks: Vec<String>,
    /// Hostnames and `*.domain` patterns.
    pub names: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// The rules of `set`, sorted by vendor and rule.
pub fn views(set: &PolicySet) -> Vec<RuleView> {
    let mut out = Vec::new();
    for v in &set.vendors {
        for r in &v.rules {
            let mut nets = Vec::new();
            let mut names = Vec::new();
            let mut any = false;
            for remote in &r.remotes {
                match remote {
                    Remote::Any => any = true,
                    Remote::Nets(n) => nets.extend(n.iter().copied()),
                    Remote::Host(h) => names.push(h.clone()),
                    Remote::Wildcard(w) => names.push(format!("*.{w}")),
                }
            }
            names.sort();
            names.dedup();
            let mut protocols: Vec<String> =
                r.protocols.iter().map(|p| p.as_str().to_string()).collect();
            protocols.sort();
            out.push(RuleView {
                vendor: v.vendor.id.clone(),
                rule: r.id.clone(),
                service: r.service.clone(),
                level: r.level.as_str().to_string(),
                profile: r.profile.clone(),
                region: r.region.clone(),
                direction: match r.direction {
                    Direction::Egress => "egress".into(),
                    Direction::Ingress => "ingress".into(),
                },
                protocols,
                ports: r.ports.iter().map(ToString::to_string).collect(),
                port_side: match r.port_side {
                    PortSide::Remote => "remote".into(),
                    PortSide::Local => "local".into(),
                },
                related: r.related,
                any,
                networks: ranges_text(&merged(&nets)),
                names,
                not_before: r.not_before.map(|d| d.to_string()),
                not_after: r.not_after.map(|d| d.to_string()),
            });
        }
    }
    out.sort_by(|a, b| (&a.vendor, &a.rule).cmp(&(&b.vendor, &b.rule)));
    out
}

/// An address range: (IPv6?, first, last) with IPv4 in the low 32 bits.
type Range = (bool, u128, u128);

fn range(net: &IpNet) -> Range {
    match net {
        IpNet::V4(n) => (
            false,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Sorted, disjoint, with adjacent ranges joined.
fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::new();
    for (v6, lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.0 == v6 && lo <= last.2.saturating_add(1) => {
                last.2 = last.2.max(hi);
            }
            _ => out.push((v6, lo, hi)),
        }
    }
    out
}

fn merged(nets: &[IpNet]) -> Vec<Range> {
    merge(nets.iter().map(range).collect())
}

/// `a` less `b` (both merged).
fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(v6, lo, hi) in a {
        let mut start = lo;
        let mut open = true;
        for &(bv6, blo, bhi) in b.iter().filter(|r| r.0 == v6) {
            let _ = bv6;
            if bhi < start || blo > hi {
                continue;
            }
            if blo > start {
                out.push((v6, start, blo - 1));
            }
            if bhi >= hi {
                open = false;
                break;
            }
            start = bhi + 1;
        }
        if open {
            out.push((v6, start, hi));
        }
    }
    out
}

fn address(v6: bool, a: u128) -> std::net::IpAddr {
    if v6 {
        std::net::Ipv6Addr::from(a).into()
    } else {
        std::net::Ipv4Addr::from(a as u32).into()
    }
}

/// A range as text: a CIDR where it is one, `FIRST-LAST` otherwise.
fn range_text(&(v6, lo, hi): &Range) -> String {
    let size = hi - lo;
    let bits = if v6 { 128 } else { 32 };
    if size.wrapping_add(1).is_power_of_two() || (size == u128::MAX) {
        let host_bits = if size == u128::MAX {
            128
        } else {
            (size + 1).trailing_zeros()
        };
        if lo.trailing_zeros() >= host_bits {
            let len = bits - host_bits.min(bits);
            return format!("{}/{len}", address(v6, lo));
        }
    }
    format!("{}-{}", address(v6, lo), address(v6, hi))
}

fn ranges_text(ranges: &[Range]) -> Vec<String> {
    ranges.iter().map(range_text).collect()
}

/// Parses what `range_text` writes.
fn parse_range(text: &str) -> Option<Range> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(range(&net));
    }
    let (a, b) = text.split_once('-')?;
    let (a, b): (std::net::IpAddr, std::net::IpAddr) = (a.parse().ok()?, b.parse().ok()?);
    let n = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        std::net::IpAddr::V6(v6) => (true, u128::from(v6)),
    };
    let ((v6a, lo), (v6b, hi)) = (n(a), n(b));
    (v6a == v6b && lo <= hi).then_some((v6a, lo, hi))
}

/// One field's change: what it gained and lost (a scalar field loses its old value and
/// gains its new one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// One rule that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDiff {
    pub vendor: String,
    pub rule: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    pub fields: Vec<FieldChange>,
}

fn list_change(field: &str, old: &[String], new: &[String]) -> Option<FieldChange> {
    let added: Vec<String> = new.iter().filter(|x| !old.contains(x)).cloned().collect();
    let removed: Vec<String> = old.iter().filter(|x| !new.contains(x)).cloned().collect();
    (!added.is_empty() || !removed.is_empty()).then(|| FieldChange {
        field: field.to_string(),
        added,
        removed,
    })
}

fn scalar_change(field: &str, old: String, new: String) -> Option<FieldChange> {
    (old != new).then(|| FieldChange {
        field: field.to_string(),
        added: vec![new],
        removed: vec![old],
    })
}

fn networks_change(old: &[String], new: &[String]) -> Option<FieldChange> {
    let parse = |l: &[String]| merge(l.iter().filter_map(|t| parse_range(t)).collect());
    let (old, new) = (parse(old), parse(new));
    let added = ranges_text(&subtract(&new, &old));
    let removed = ranges_text(&subtract(&old, &new));
    (!added.is_empty() || !removed.is_empty()).then(|| FieldChange {
        field: "networks".to_string(),
        added,
        removed,
    })
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// What differs between two rules of the same vendor and id.
fn fields(old: &RuleView, new: &RuleView) -> Vec<FieldChange> {
    [
        scalar_change("service", old.service.clone(), new.service.clone()),
        scalar_change("level", old.level.clone(), new.level.clone()),
        scalar_change("profile", opt(&old.profile), opt(&new.profile)),
        scalar_change("region", opt(&old.region), opt(&new.region)),
        scalar_change("direction", old.direction.clone(), new.direction.clone()),
        list_change("protocols", &old.protocols, &new.protocols),
        list_change("ports", &old.ports, &new.ports),
        scalar_change("port_side", old.port_side.clone(), new.port_side.clone()),
        scalar_change("related", old.related.to_string(), new.related.to_string()),
        scalar_change("any", old.any.to_string(), new.any.to_string()),
        networks_change(&old.networks, &new.networks),
        list_change("names", &old.names, &new.names),
        scalar_change("not_before", opt(&old.not_before), opt(&new.not_before)),
        scalar_change("not_after", opt(&old.not_after), opt(&new.not_after)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The whole of a rule, as the fields of an added or removed one.
fn all_fields(r: &RuleView, added: bool) -> Vec<FieldChange> {
    let empty = RuleView {
        vendor: r.vendor.clone(),
        rule: r.rule.clone(),
        service: String::new(),
        level: String::new(),
        profile: None,
        region: None,
        direction: String::new(),
        protocols: Vec::new(),
        ports: Vec::new(),
        port_side: String::new(),
        related: false,
        any: false,
        networks: Vec::new(),
        names: Vec::new(),
        not_before: None,
        not_after: None,
    };
    let mut out = if added {
        fields(&empty, r)
    } else {
        fields(r, &empty)
    };
    // An empty side's scalars are noise: keep only what the rule has.
    for f in &mut out {
        f.added
            .retain(|v| !v.is_empty() && v != "-" && v != "false");
        f.removed
            .retain(|v| !v.is_empty() && v != "-" && v != "false");
    }
    out.retain(|f| !f.added.is_empty() || !f.removed.is_empty());
    out
}

/// The rules that differ from `old` to `new`, by vendor and rule.
pub fn diff(old: &[RuleView], new: &[RuleView]) -> Vec<RuleDiff> {
    let key = |r: &RuleView| (r.vendor.clone(), r.rule.clone());
    let old: BTreeMap<_, _> = old.iter().map(|r| (key(r), r)).collect();
    let new: BTreeMap<_, _> = new.iter().map(|r| (key(r), r)).collect();
    let mut keys: Vec<_> = old.keys().chain(new.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (change, fields) = match (old.get(&k), new.get(&k)) {
            (None, Some(n)) => ("added", all_fields(n, true)),
            (Some(o), None) => ("removed", all_fields(o, false)),
            (Some(o), Some(n)) => {
                let f = fields(o, n);
                if f.is_empty() {
                    continue;
                }
                ("changed", f)
            }
            (None, None) => continue,
        };
        out.push(RuleDiff {
            vendor: k.0,
            rule: k.1,
            change: change.to_string(),
            fields,
        });
    }
    out
}

/// A rule of `rules` whose dates start or end within `days` of `today`: (vendor, rule,
/// `starts`/`ends`, the day).
pub fn upcoming(
    rules: &[RuleView],
    today: Date,
    days: u32,
) -> Vec<(String, String, String, String)> {
    let until = today.plus_days(days);
    let mut out = Vec::new();
    for r in rules {
        for (what, day) in [("starts", &r.not_before), ("ends", &r.not_after)] {
            let Some(day) = day.as_deref().and_then(Date::parse) else {
                continue;
            };
            if day >= today && day <= until {
                out.push((
                    r.vendor.clone(),
                    r.rule.clone(),
                    what.to_string(),
                    day.to_string(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> PolicySet {
        PolicySet {
            vendors: vec![
                crate::policy::parse_vendor_file(std::path::Path::new("v.toml"), text).unwrap(),
            ],
        }
    }

    const BASE: &str = "[vendor]\nid = \"v\"\nname = \"V\"\n\
        [[rule]]\nid = \"web\"\nservice = \"Web\"\nprotocol = \"tcp\"\nports = [443]\n\
        remote = [\"198.51.100.0/25\", \"198.51.100.128/25\", \"meet.example.com\"]\n\
        [[rule]]\nid = \"media\"\nservice = \"Media\"\nprotocol = \"udp\"\nports = [\"10000-20000\"]\n\
        remote = \"203.0.113.0/24\"\n";

    #[test]
    fn the_same_addresses_written_otherwise_are_no_change() {
        let other = BASE.replace(
            "\"198.51.100.0/25\", \"198.51.100.128/25\"",
            "\"198.51.100.0/24\"",
        );
        assert_eq!(diff(&views(&policy(BASE)), &views(&policy(&other))), []);
        assert_eq!(views(&policy(BASE))[1].networks, ["198.51.100.0/24"]);
    }

    #[test]
    fn what_a_change_opens_and_closes_is_said_exactly() {
        let new = BASE
            .replace(
                "\"198.51.100.128/25\"",
                "\"198.51.100.128/26\", \"192.0.2.7\"",
            )
            .replace("ports = [443]", "ports = [443, 8443]")
            .replace("\"meet.example.com\"", "\"*.example.com\"")
            + "[[rule]]\nid = \"turn\"\nservice = \"TURN\"\nprotocol = \"udp\"\nports = [3478]\nremote = \"192.0.2.77\"\nnot_before = 2026-12-10\n";
        let old = views(&policy(BASE));
        let new_views = views(&policy(&new));
        let d = diff(&old, &new_views);
        assert_eq!(d.len(), 2, "{d:#?}");
        let turn = d.iter().find(|r| r.rule == "turn").unwrap();
        assert_eq!(turn.change, "added");
        assert!(
            turn.fields
                .iter()
                .any(|f| f.field == "networks" && f.added == ["192.0.2.77/32"])
        );
        let web = d.iter().find(|r| r.rule == "web").unwrap();
        assert_eq!(web.change, "changed");
        let field = |name: &str| web.fields.iter().find(|f| f.field == name).unwrap();
        assert_eq!(field("networks").added, ["192.0.2.7/32"]);
        assert_eq!(field("networks").removed, ["198.51.100.192/26"]);
        assert_eq!(field("ports").added, ["8443"]);
        assert_eq!(field("names").added, ["*.example.com"]);
        assert_eq!(field("names").removed, ["meet.example.com"]);
        // Removed the other way round.
        let back = diff(&new_views, &old);
        assert_eq!(
            back.iter().find(|r| r.rule == "turn").unwrap().change,
            "removed"
        );
        let today = Date::parse("2026-12-01").unwrap();
        assert_eq!(today.plus_days(31).to_string(), "2027-01-01");
        assert_eq!(Date::from_days_since_epoch(today.days_since_epoch()), today);
        assert_eq!(
            upcoming(&new_views, today, 30),
            [(
                "v".into(),
                "turn".into(),
                "starts".into(),
                "2026-12-10".into()
            )]
        );
        assert!(upcoming(&new_views, today, 5).is_empty());
    }

    #[test]
    fn ranges_subtract_and_print_as_cidrs_or_spans() {
        let r = |t: &str| parse_range(t).unwrap();
        assert_eq!(range_text(&r("10.0.0.0/8")), "10.0.0.0/8");
        assert_eq!(range_text(&r("10.0.0.1-10.0.0.6")), "10.0.0.1-10.0.0.6");
        assert_eq!(range_text(&r("0.0.0.0/0")), "0.0.0.0/0");
        assert_eq!(range_text(&r("::/0")), "::/0");
        assert_eq!(range_text(&r("2001:db8::/32")), "2001:db8::/32");
        let left = subtract(&[r("10.0.0.0/24")], &[r("10.0.0.64/26")]);
        assert_eq!(ranges_text(&left), ["10.0.0.0/26", "10.0.0.128/25"]);
        assert!(subtract(&[r("10.0.0.0/24")], &[r("10.0.0.0/16")]).is_empty());
        // IPv4 and IPv6 never meet.
        assert_eq!(subtract(&[r("::/96")], &[r("0.0.0.0/0")]).len(), 1);
    }
}
